"""`WorldModelConfig`: every number needed to rebuild a native neuralsim world model, plus named presets.

The config is a plain dataclass that round-trips through JSON (``to_dict`` / ``from_dict``); a
checkpoint's ``config.json`` is this dict plus the class name and the neuralsim version. Presets:

- ``"default"``: the embedded model (64×64 rgb, 4-dim camera actions, 16 tokens per latent frame);
  trains on a 2-core CPU and runs thousands of latent frames per second batched.
- ``"tiny"``: for tests; every feature on (camera branch, temporal FFN conv, prompts), builds and
  steps in milliseconds.
- ``"paper-2.6b"``: our causal architecture at SANA-WM's dimensions (depth 20, width 2240, 20 heads
  of 112, softmax blocks 3/7/11/15/19, FFN ratio 3, 128 latent channels, 32× space, 8× time, text
  width 2304). Meant to be built on the ``meta`` device to count parameters and plan memory.

``"sana-wm-2.6b"`` is reserved for the official model served through diffusers (``neuralsim.sana_wm``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from neuralsim.actions import (CAMERA_ACTION_DIM, DEFAULT_ROTATION_SPEED_DEG, DEFAULT_TRANSLATION_SPEED, DISCRETE_KEYSETS,
                               space_to_spec, spec_to_space)
#: The numbers a target tracker's ``reward_task`` needs (an env's ``task_spec``, e.g. the room's; neuralsim.reward).
REWARD_TASK_KEYS = ("progress_reward_scale", "success_bonus", "reach_radius", "contact_distance")
OFFICIAL_MODEL_NAME = "sana-wm-2.6b"  # the official SANA-WM through diffusers (neuralsim.sana_wm): a model name, not a native preset


def default_action_spec() -> dict:
    """``Box(-1, 1, (4,), float32)``: the canonical camera action ``[forward, strafe_right, yaw_right, pitch_up]``."""
    import numpy as np
    from gymnasium import spaces

    return space_to_spec(spaces.Box(-1.0, 1.0, (CAMERA_ACTION_DIM,), np.float32))


#: How a frame memory's pixels enter (``frame_memory_gate``): weighed by its learned gate, or wherever its warp sees them.
FRAME_MEMORY_GATES = ("learned", "seen")

def valid_range_calibration(knots: Any) -> bool:
    """Whether ``knots`` is a target tracker's range calibration: >= 2 ``[measured range, factor]`` pairs of positive
    finite numbers, the ranges increasing (:func:`neuralsim.reward.fit_range_calibration` writes one)."""
    return (isinstance(knots, (list, tuple)) and len(knots) >= 2
            and all(isinstance(k, (list, tuple)) and len(k) == 2 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0 for x in k)
                for k in knots)
            and all(a[0] < b[0] for a, b in zip(knots[:-1], knots[1:])))


@dataclass
class WorldModelConfig:
    """Hyperparameters of the native latent world model (autoencoder + causal dynamics + text + heads).

    Shapes: frames ``[H, W, 3]`` uint8 → latent frames ``[latent_channels, H/spatial_stride, W/spatial_stride]``,
    one token per latent pixel; the first raw frame is a latent frame alone, then ``frames_per_latent``
    raw frames per latent frame (one env step = one latent frame, the action held for all its raw frames).
    """

    # --- frames and autoencoder -------------------------------------------------------------
    image_size: tuple[int, int] = (64, 64)  # (H, W) of raw frames
    spatial_stride: int = 16  # H/h = W/w; a power of two
    frames_per_latent: int = 1  # raw frames per latent frame (after the first, which is alone)
    latent_channels: int = 32
    latent_scale: float | tuple[float, ...] = 1.0  # normalised = (raw - shift) * scale (scalar or per channel)
    latent_shift: float | tuple[float, ...] = 0.0
    ae_channels: tuple[int, ...] = (8, 16, 32, 64, 128)  # encoder width per level, full res → latent res
    ae_decoder_channels: tuple[int, ...] = (96, 48, 24, 12, 8)  # decoder width per level, latent res → full res
    ae_blocks: tuple[int, ...] = (0, 0, 0, 1, 1)  # residual blocks per encoder level
    ae_decoder_blocks: tuple[int, ...] = (1, 1, 0, 0, 0)  # residual blocks per decoder level (decode cost is per env step)
    ae_ssim_weight: float = 0.2  # weight of (1 - SSIM) in the autoencoder loss
    ae_edge_weight: float = 0.0  # extra L1/L2 weight on edge pixels (small objects are mostly boundary at 64x64)

    # --- dynamics transformer ---------------------------------------------------------------
    patch_size: int = 1  # p x p latent pixels per token (DiT's patchify): tokens per frame = (h/p)(w/p)
    prev_frame_input: bool = False  # every token also reads the previous clean latent, the relative camera rays and the action
    prediction: str = "velocity"  # "velocity" (v = eps - x0) or "x0_residual" (x0 = previous latent + output)
    prev_frame_warp: bool = False  # the previous latent is first warped by the camera's rotation since it (needs camera)
    skip_prior_var: float = 0.0  # > 0: x0's skip blends the previous latent with the noisy input (a posterior mean)
    refiner_channels: int = 0  # a conv net at full latent resolution refines x0 (sub-patch motion); 0 = off
    refiner_reads_changes: bool = False  # the refiner sees only changes and has no biases: a still frame stays still
    width: int = 128
    depth: int = 6
    num_heads: int = 4
    softmax_blocks: tuple[int, ...] = (3,)  # indices of softmax-attention blocks; the rest are gated-delta-rule blocks
    ffn_ratio: float = 2.0  # GLU conv FFN hidden width = ffn_ratio * width
    ffn_temporal_kernel: int = 0  # causal temporal conv (frames) at the FFN output; 0 = off (SANA-WM: 3)
    conv_k_size: int = 4  # causal depthwise conv over frames on GDN keys (per token position); 1 = off
    gdn_chunk_size: int = 16  # frames scanned in parallel per chunk by the parallel GDN form
    attention_sink_frames: int = 1  # softmax blocks: the first frames stay in the cache forever
    attention_window: int = 4  # softmax blocks: most recent earlier frames kept in the cache
    camera_branch: bool = False  # SANA-WM's second attention branch fed by Plücker rays (needs camera)

    # --- conditioning -----------------------------------------------------------------------
    action_spec: dict = field(default_factory=default_action_spec)  # neuralsim.actions.space_to_spec form
    camera: bool = True  # Plücker-ray conditioning from poses integrated from the (camera) actions
    camera_fovy_deg: float = 45.0  # vertical field of view used for the rays
    camera_translation_speed: float = DEFAULT_TRANSLATION_SPEED  # CameraIntegrator units per raw frame
    camera_rotation_speed_deg: float = DEFAULT_ROTATION_SPEED_DEG  # CameraIntegrator degrees per raw frame
    # The world's translation response (neuralsim.camera.TranslationResponse): the camera servoes to the commanded
    # speed and coasts after a release, and the network's action input is the motion that results. 0 = none: the
    # camera moves at the commanded speed at once (SANA-WM's DSL, the checkpoints written before it).
    camera_velocity_gain: float = 0.0  # 1/s (kv / mass)
    camera_acceleration_limit: float = 0.0  # m/s² (force limit / mass); 0 = unlimited
    camera_frame_time: float = 0.05  # s per raw frame
    camera_substeps: int = 5  # physics steps per raw frame
    text_width: int = 128  # width of prompt tokens given to the dynamics (SANA-WM: 2304, Gemma-2)
    text_max_tokens: int = 32
    text_vocab: int = 4096  # hash buckets of the built-in word tokenizer
    text_hidden: int = 128  # width inside the built-in text encoder
    text_layers: int = 1
    prompt_dropout: float = 0.1  # training: probability a prompt is replaced by the null prompt

    # --- diffusion --------------------------------------------------------------------------
    denoise_steps: int = 2  # default Euler steps per latent frame at inference
    context_noise: float = 0.05  # noise level of committed context frames (and the floor of training context noise)
    fused_commit: bool = True  # the last denoise pass (input at context_noise) doubles as the commit pass
    commit_from_denoise: bool = False  # the first denoise pass (tau = 1) writes the state: one pass per 1-step env step
    context_window: int = 0  # a rollout's recurrent context restarts from its last frame after this many frames; 0 = never
    flow_shift: float = 1.0  # timestep shift tau' = s*tau / (1 + (s-1)*tau), training and sampling
    clean_context_prob: float = 0.5  # training: fraction of sequences whose prefix sits at context-noise level

    # --- heads ------------------------------------------------------------------------------
    reward_head: bool = True
    termination_head: bool = True
    reward_loss_weight: float = 1.0
    termination_loss_weight: float = 0.1
    # A separate recurrent reward/termination model over the committed latents (neuralsim.reward), trained by
    # `neuralsim train reward`; when present it, not the heads, gives the dream's reward and termination. 0 = none.
    reward_model_channels: int = 0
    reward_model_hidden: int = 256
    # "recurrent" (neuralsim.reward.RewardModel: a GRU over the frames) or "target" (TargetTracker: for a
    # reach-the-target task stated in numbers by the env's task_spec, recorded by `collect`: the target's position
    # read off shown frames and moved by the camera). reward_task: that task_spec, plus the camera's velocity servo
    # (velocity_gain, acceleration_limit, frame_time, substeps; from the data's camera spec, when it states one).
    reward_model_kind: str = "recurrent"
    reward_task: dict | None = None
    reward_dream_trust: float = 0.0  # the tracker: weight of a dreamed frame's measurement (0: the dream only predicts)
    # The tracker's localizer range calibrated on held-out episodes (`neuralsim train reward --calibration-data`,
    # neuralsim.reward.fit_range_calibration): [[measured range m, true / measured], ...], ranges increasing; None = none.
    reward_range_calibration: list | None = None
    # A termination detector over the decoded frames (neuralsim.reward.TerminationDetector), trained by `neuralsim train
    # termination` on the model's own dreams of the data's episodes with their real endings: when present, the dream's
    # termination (and the reward model's bonus) comes from whether the frame the dream draws shows the episode's end
    # (the room's: its success), not from the reward model's own estimate. Needs a reward model (its progress term
    # stays). 0 = none.
    termination_detector_channels: int = 0
    # A generator of the first latent frame from a prompt (neuralsim.prompt_start), trained by `neuralsim train
    # prompt`; when present, a dream started from a prompt alone starts from its sample. 0 = none.
    prompt_start_channels: int = 0
    prompt_start_tokens: int = 96  # its own tokenizer's limit: a room's description is ~70 tokens
    prompt_start_steps: int = 8  # Euler steps of its sampler (paid once per reset)
    # A generator of the views around the start (neuralsim.prompt_start with a reference frame), trained by
    # `neuralsim train views`: at a reset with a prompt it draws what the start's place shows turned by each of
    # prompt_view_yaws_deg (degrees, to the right) and the frame memory holds them below the real frames. 0 = none.
    prompt_view_channels: int = 0
    prompt_view_yaws_deg: tuple[float, ...] = (90.0, 180.0, -90.0)
    # A memory of the last real context frame (neuralsim.frame_memory): a learned gate puts its pixels, warped to the
    # dream's camera, into the decoded frames where it trusts them; trained by `neuralsim train memory`. 0 = none.
    frame_memory_width: int = 0
    # > 0: the memory's warp follows the walk too, by the remembered frame's depth from a DepthNet of this width
    # (trained without depth labels: the other frames warped by it must match); 0: the rotation alone moves its pixels.
    frame_memory_depth_width: int = 0
    # > 0: the depth net ends with a full-resolution correction of this width (DepthNet's ``refine``: a small object's
    # depth, which half resolution shares with what is behind it); 0: none.
    frame_memory_depth_refine: int = 0
    # How the memory's pixels enter: "learned" (the gate's net weighs them against the dream's, pixel by pixel) or
    # "seen" (they replace the dream's wherever the warp sees them, while the camera is within the memory's range).
    frame_memory_gate: str = "learned"
    # How many of the real context frames the memory holds: the last and the others spread evenly back through the
    # context (what a turn or a walk shows again that the last frame never saw); where several see a pixel, the
    # newest frame's wins. Inference only: the gate and depth nets are the same for every frame.
    frame_memory_frames: int = 1
    # How far the camera may walk from a remembered frame before the memory's gate has closed, in full-speed steps of
    # translation (the gate fades over the last 3): 0 = the memory's default (3 rotation-only, 24 with depth).
    frame_memory_range_steps: float = 0.0
    # > 0 (with a depth net): the camera's height above a flat floor, in the translation's units (the room's: 0.6 m);
    # a remembered frame's depth is capped where each pixel's ray meets the floor, which is opaque (a small ball the
    # depth net merges with the wall behind it comes back to the floor in front of that wall). The dream's world frame
    # must be level (gravity along the start camera's +y). Inference only. 0 = no floor.
    frame_memory_floor_height: float = 0.0
    # > 0 (with a floor): a FloorNet of this width marks which pixels of a remembered frame show the floor (trained on
    # an env's segmentation: examples/finetune_floor.py); they take the floor's depth, and every other pixel stands
    # where its column next meets the floor below it (a ball's depth from where the floor ends under it, not the wall
    # the depth net merges it with). Inference only. 0 = the floor's cap alone.
    frame_memory_floor_net_width: int = 0
    # Metres (translation units): a standing pixel nearer than this keeps the depth net's depth (a thing the agent is
    # about to push moves with it, and a truer depth warps it as if it stood still).
    frame_memory_stand_min_depth: float = 1.0

    # --- bookkeeping ------------------------------------------------------------------------
    description: str = ""
    provenance: dict = field(default_factory=dict)  # training data, steps, seeds, ... (free-form JSON)

    def __post_init__(self) -> None:
        # Normalise JSON lists to tuples so configs compare equal after a round trip.
        self.image_size = tuple(int(s) for s in self.image_size)  # type: ignore[assignment]
        for name in ("ae_channels", "ae_decoder_channels", "ae_blocks", "ae_decoder_blocks", "softmax_blocks"):
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
        if isinstance(self.prompt_view_yaws_deg, (list, tuple)):
            self.prompt_view_yaws_deg = tuple(self.prompt_view_yaws_deg)
        for name in ("latent_scale", "latent_shift"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                setattr(self, name, tuple(float(v) for v in value))
            else:
                setattr(self, name, float(value))
        self.action_spec = dict(self.action_spec)
        self.provenance = dict(self.provenance)
        self.validate()

    # --- derived sizes ----------------------------------------------------------------------
    @property
    def latent_size(self) -> tuple[int, int]:
        """``(h, w)`` of a latent frame."""
        return (self.image_size[0] // self.spatial_stride, self.image_size[1] // self.spatial_stride)

    @property
    def token_grid(self) -> tuple[int, int]:
        """``(h/p, w/p)``: the grid of tokens of one latent frame (``p = patch_size``)."""
        return (self.latent_size[0] // self.patch_size, self.latent_size[1] // self.patch_size)

    @property
    def tokens_per_frame(self) -> int:
        return self.token_grid[0] * self.token_grid[1]

    @property
    def token_channels(self) -> int:
        """Numbers per token: ``latent_channels * patch_size**2``."""
        return self.latent_channels * self.patch_size**2

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    @property
    def action_dim(self) -> int:
        """Length of the conditioning vector of one action (one-hot for Discrete)."""
        from neuralsim.actions import action_dim

        return action_dim(self.action_spec)

    def num_raw_frames(self, latent_frames: int) -> int:
        """Raw frames that encode to ``latent_frames`` latent frames: ``1 + (latent_frames - 1) * frames_per_latent``."""
        return 1 + (latent_frames - 1) * self.frames_per_latent

    # --- validation -------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""

        def bad(name: str, expected: str) -> ValueError:
            return ValueError(f"WorldModelConfig.{name}={getattr(self, name)!r} is invalid: expected {expected}")

        from neuralsim.limits import MAX_TOKENS_PER_FRAME, check_config_values

        # types, NaN/inf and upper bounds (neuralsim.limits.CONFIG_LIMITS) first: nothing is sized from a bad value
        check_config_values({f.name: str(f.type) for f in dataclasses.fields(self)}, vars(self))

        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise bad("image_size", "(H, W) with positive ints")
        s = self.spatial_stride
        if s < 1 or s & (s - 1):
            raise bad("spatial_stride", "a power of two >= 1")
        if self.image_size[0] % s or self.image_size[1] % s:
            raise ValueError(
                f"WorldModelConfig.image_size={self.image_size} is not divisible by spatial_stride={s}; "
                "expected both H and W to be multiples of the stride"
            )
        p = self.patch_size
        if isinstance(p, bool) or not isinstance(p, int) or p < 1 or self.latent_size[0] % p or self.latent_size[1] % p:
            raise bad("patch_size", f"an int >= 1 dividing the latent size {self.latent_size}")
        if self.prediction not in ("velocity", "x0_residual"):
            raise bad("prediction", "'velocity' or 'x0_residual'")
        if not isinstance(self.prev_frame_input, bool):
            raise bad("prev_frame_input", "a bool")
        if not isinstance(self.commit_from_denoise, bool):
            raise bad("commit_from_denoise", "a bool")
        if self.commit_from_denoise and not (self.prev_frame_input and self.prediction == "x0_residual"):
            raise bad("commit_from_denoise", "False unless prev_frame_input=True and prediction='x0_residual' (the "
                      "new frame reaches the next step through the direct path, not through the state)")
        if not isinstance(self.prev_frame_warp, bool):
            raise bad("prev_frame_warp", "a bool")
        if self.prev_frame_warp and not (self.prev_frame_input and self.camera):
            raise bad("prev_frame_warp", "False unless prev_frame_input=True and camera=True (it warps the previous "
                      "frame by the camera motion)")
        r = self.refiner_channels
        if isinstance(r, bool) or not isinstance(r, int) or r < 0 or r % 8:
            raise bad("refiner_channels", "0 (off) or a positive multiple of 8")
        if r and self.prediction != "x0_residual":
            raise bad("refiner_channels", "0 unless prediction='x0_residual' (it refines the x0 estimate)")
        if not isinstance(self.refiner_reads_changes, bool):
            raise bad("refiner_reads_changes", "a bool")
        if self.refiner_reads_changes and not r:
            raise bad("refiner_reads_changes", "False unless refiner_channels > 0 (it is a form of the refiner)")
        m = self.frame_memory_width
        if isinstance(m, bool) or not isinstance(m, int) or m < 0:
            raise bad("frame_memory_width", "0 (no frame memory) or a positive int")
        if m and not self.camera:
            raise bad("frame_memory_width", "0 unless camera=True (the memory is warped by the camera's motion)")
        if m and self.frames_per_latent != 1:
            raise bad("frame_memory_width", "0 unless frames_per_latent=1 (one camera pose per decoded frame)")
        d = self.frame_memory_depth_width
        if isinstance(d, bool) or not isinstance(d, int) or d < 0 or (d and not m):
            raise bad("frame_memory_depth_width", "0 (the warp follows the rotation alone) or, with frame_memory_width > 0, "
                      "a positive int")
        r = self.frame_memory_depth_refine
        if isinstance(r, bool) or not isinstance(r, int) or r < 0 or (r and not d):
            raise bad("frame_memory_depth_refine", "0 or, with frame_memory_depth_width > 0, a positive int")
        if self.frame_memory_gate not in FRAME_MEMORY_GATES:
            raise bad("frame_memory_gate", '"learned" or "seen"')
        g = self.frame_memory_range_steps
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not (g == 0 or (g >= 4 and m)) or g != g:
            raise bad("frame_memory_range_steps", "0 (the memory's default) or, with frame_memory_width > 0, a number "
                      "of full-speed steps >= 4 (the gate fades over the last 3)")
        f = self.frame_memory_floor_height
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not (f == 0 or (0 < f < float("inf") and d)):
            raise bad("frame_memory_floor_height", "0 (no floor) or, with frame_memory_depth_width > 0, the camera's "
                      "height above the floor (a finite number > 0)")
        n = self.frame_memory_floor_net_width
        if isinstance(n, bool) or not isinstance(n, int) or n < 0 or (n and not f):
            raise bad("frame_memory_floor_net_width", "0 or, with frame_memory_floor_height > 0, a positive int")
        near = self.frame_memory_stand_min_depth
        if isinstance(near, bool) or not isinstance(near, (int, float)) or not (0 <= near < float("inf")):
            raise bad("frame_memory_stand_min_depth", "a finite number >= 0 (metres)")
        k = self.frame_memory_frames
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or (k > 1 and not m):
            raise bad("frame_memory_frames", "1 or, with frame_memory_width > 0, an int >= 1 (the real context "
                      "frames the memory holds)")
        for name in ("reward_model_channels", "reward_model_hidden"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v % 8 or (name == "reward_model_hidden" and not v):
                raise bad(name, "0 (no reward model) or a positive multiple of 8" if name == "reward_model_channels"
                          else "a positive multiple of 8")
        if self.reward_model_kind not in ("recurrent", "target"):
            raise bad("reward_model_kind", "'recurrent' (a GRU over the frames) or 'target' (a target tracker)")
        if self.reward_model_kind == "target" and self.reward_model_channels:
            if not (self.camera and self.action_dim == 4):
                raise bad("reward_model_kind", "'recurrent' unless camera=True with the 4-dim camera actions (the tracker "
                          "moves its estimate with the camera)")
            task = self.reward_task
            if not isinstance(task, dict) or any(isinstance(task.get(k), bool) or not isinstance(task.get(k), (int, float))
                                                 for k in REWARD_TASK_KEYS):
                raise bad("reward_task", f"an object with the numbers {', '.join(REWARD_TASK_KEYS)} (the env's task_spec)")
        elif self.reward_task is not None and not isinstance(self.reward_task, dict):
            raise bad("reward_task", "an object (the env's task_spec) or null")
        v = self.reward_dream_trust
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            raise bad("reward_dream_trust", "a number in [0, 1]")
        if self.reward_range_calibration is not None and not valid_range_calibration(self.reward_range_calibration):
            raise bad("reward_range_calibration", "null or >= 2 [measured range, factor] pairs of positive numbers, "
                      "ranges increasing (neuralsim.reward.fit_range_calibration)")
        v = self.termination_detector_channels
        if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v % 8 or (v and not self.reward_model_channels):
            raise bad("termination_detector_channels", "0 (no termination detector) or, with reward_model_channels > 0 "
                      "(whose progress term it completes), a positive multiple of 8")
        v = self.prompt_start_channels
        if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v % 32:
            raise bad("prompt_start_channels", "0 (no prompt-start generator) or a positive multiple of 32")
        for name in ("prompt_start_tokens", "prompt_start_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 512:
                raise bad(name, "an int in [1, 512]")
        v = self.prompt_view_channels
        if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v % 32 or (v and not m):
            raise bad("prompt_view_channels", "0 (no view generator) or, with frame_memory_width > 0 (whose memory "
                      "holds the views), a positive multiple of 32")
        yaws = self.prompt_view_yaws_deg
        if (not isinstance(yaws, tuple) or not 1 <= len(yaws) <= 8
                or any(isinstance(y, bool) or not isinstance(y, (int, float)) or not math.isfinite(y)
                       or not 0 < abs(y) <= 180 for y in yaws)):
            raise bad("prompt_view_yaws_deg", "1 to 8 yaw angles in degrees, each in [-180, 0) or (0, 180]")
        v = self.skip_prior_var
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise bad("skip_prior_var", "a finite float >= 0 (0: x0 = previous latent + output)")
        if v and self.prediction != "x0_residual":
            raise bad("skip_prior_var", "0 unless prediction='x0_residual' (it is the skip of the x0 estimate)")
        self.skip_prior_var = float(v)
        if self.prediction == "x0_residual" and not self.prev_frame_input:
            raise bad("prediction", "'velocity' when prev_frame_input=False (the residual is added to the previous frame)")
        levels = int(math.log2(s)) + 1
        if len(self.ae_channels) != levels or min(self.ae_channels) < 1:
            raise bad("ae_channels", f"{levels} positive widths (one per level: log2(spatial_stride) + 1)")
        if len(self.ae_decoder_channels) != levels or min(self.ae_decoder_channels) < 1:
            raise bad("ae_decoder_channels", f"{levels} positive widths (one per level: log2(spatial_stride) + 1)")
        for name in ("ae_blocks", "ae_decoder_blocks"):
            if len(getattr(self, name)) != levels or min(getattr(self, name)) < 0:
                raise bad(name, f"{levels} ints >= 0 (one per level: log2(spatial_stride) + 1)")
        for name in ("frames_per_latent", "latent_channels", "width", "depth", "num_heads",
                     "conv_k_size", "gdn_chunk_size", "text_width", "text_max_tokens", "text_hidden",
                     "denoise_steps"):
            if int(getattr(self, name)) < 1:
                raise bad(name, "an int >= 1")
        if isinstance(self.prompt_view_yaws_deg, (list, tuple)):
            self.prompt_view_yaws_deg = tuple(self.prompt_view_yaws_deg)
        for name in ("latent_scale", "latent_shift"):
            value = getattr(self, name)
            if isinstance(value, tuple) and len(value) != self.latent_channels:
                raise bad(name, f"a float or {self.latent_channels} floats (one per latent channel)")
            if not all(math.isfinite(v) for v in (value if isinstance(value, tuple) else (value,))):
                raise bad(name, "finite floats")
        for name in ("camera_velocity_gain", "camera_acceleration_limit"):
            if getattr(self, name) < 0:
                raise bad(name, "a number >= 0 (0: off)")
        if self.camera_frame_time <= 0:
            raise bad("camera_frame_time", "a number > 0 (seconds per raw frame)")
        if self.camera_substeps < 1:
            raise bad("camera_substeps", "an int >= 1")
        if self.camera_velocity_gain and not self.camera:
            raise bad("camera_velocity_gain", "0 unless camera=True (it shapes the camera's motion)")
        if self.width % self.num_heads:
            raise ValueError(
                f"WorldModelConfig.width={self.width} is not divisible by num_heads={self.num_heads}; "
                "expected width % num_heads == 0"
            )
        if self.softmax_blocks and self.head_dim % 4:
            raise bad("num_heads", f"a head dim (width/num_heads={self.head_dim}) divisible by 4 for 2-D RoPE")
        if len(set(self.softmax_blocks)) != len(self.softmax_blocks) or any(
            not 0 <= i < self.depth for i in self.softmax_blocks
        ):
            raise bad("softmax_blocks", f"distinct block indices in [0, depth={self.depth})")
        if self.ffn_ratio <= 0:
            raise bad("ffn_ratio", "a positive float")
        if self.ffn_temporal_kernel < 0:
            raise bad("ffn_temporal_kernel", "an int >= 0 (0 = off)")
        if self.attention_sink_frames < 0 or self.attention_window < 0:
            raise bad("attention_window" if self.attention_window < 0 else "attention_sink_frames", "an int >= 0")
        if self.text_vocab < 3:
            raise bad("text_vocab", "an int >= 3 (pad, start and at least one word bucket)")
        if self.text_layers < 0:
            raise bad("text_layers", "an int >= 0")
        w = self.context_window
        if isinstance(w, bool) or not isinstance(w, int) or w < 0:
            raise bad("context_window", "an int >= 0 (0: the context is never restarted)")
        if not 0.0 <= self.context_noise < 1.0:
            raise bad("context_noise", "a float in [0, 1)")
        if self.flow_shift <= 0:
            raise bad("flow_shift", "a positive float")
        for name in ("prompt_dropout", "clean_context_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise bad(name, "a probability in [0, 1]")
        for name in ("reward_loss_weight", "termination_loss_weight", "ae_ssim_weight", "ae_edge_weight"):
            if getattr(self, name) < 0:
                raise bad(name, "a float >= 0")
        try:
            spec_to_space(self.action_spec)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"WorldModelConfig.action_spec={self.action_spec!r} is invalid: {exc}") from None
        if self.camera:
            spec = self.action_spec
            box_ok = spec["type"] == "box" and [int(v) for v in spec["shape"]] == [CAMERA_ACTION_DIM]
            discrete_ok = spec["type"] == "discrete" and int(spec["n"]) == len(DISCRETE_KEYSETS)
            if not (box_ok or discrete_ok):
                raise ValueError(
                    f"WorldModelConfig.camera=True needs a camera action_spec: Box of shape ({CAMERA_ACTION_DIM},) "
                    f"or Discrete({len(DISCRETE_KEYSETS)}) (neuralsim.actions.DISCRETE_KEYSETS); got {spec!r}"
                )
            if not 0.0 < self.camera_fovy_deg < 180.0:
                raise bad("camera_fovy_deg", "a float in (0, 180)")
        if self.camera_branch and not self.camera:
            raise bad("camera_branch", "False when camera=False (the branch reads Plücker rays)")
        if not isinstance(self.description, str):
            raise bad("description", "a str")
        if self.tokens_per_frame > MAX_TOKENS_PER_FRAME:
            raise bad("image_size", f"at most MAX_TOKENS_PER_FRAME={MAX_TOKENS_PER_FRAME} tokens per latent frame "
                      f"(image_size / spatial_stride / patch_size gives {self.tokens_per_frame})")

    # --- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WorldModelConfig":
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: if ``d`` has keys that are not fields (typos must not be silently ignored), or a value
                that is NaN/inf or beyond :data:`neuralsim.limits.CONFIG_LIMITS`.
            TypeError: a value of the wrong JSON type (named with the field).
        """
        if not isinstance(d, dict):
            raise TypeError(f"config must be a dict, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown WorldModelConfig field(s) {unknown}; known fields: {sorted(known)}")
        from neuralsim.limits import check_config_values

        # JSON types before construction: a string "false" is not False, "abc" is not an image size
        check_config_values({f.name: str(f.type) for f in dataclasses.fields(cls)}, d)
        return cls(**d)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "WorldModelConfig":
        """A named preset (see :data:`PRESETS`), with fields overridden by keyword.

        Raises:
            ValueError: for an unknown name, for ``"sana-wm-2.6b"`` (the official model is not a native
                config; use ``neuralsim.sana_wm``), or for unknown override fields.
        """
        if name == OFFICIAL_MODEL_NAME:
            raise ValueError(
                f"{OFFICIAL_MODEL_NAME!r} is the official SANA-WM served through diffusers (neuralsim.sana_wm), "
                f"not a native WorldModelConfig preset; native presets: {sorted(PRESETS)} "
                "('paper-2.6b' is our causal model at SANA-WM's dimensions)"
            )
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; available: {sorted(PRESETS)}")
        d = dict(PRESETS[name])
        d.update(overrides)
        return cls.from_dict(d)

    def replace(self, **changes: Any) -> "WorldModelConfig":
        """A copy with some fields changed (validated)."""
        d = self.to_dict()
        d.update(changes)
        return WorldModelConfig.from_dict(d)


#: Preset name -> field overrides of the dataclass defaults (which are the "default" preset).
PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        # the camera of envs/room.py (NeuralSimRoom-v0): 70° vertical FOV, 0.08 m and 4° per step
        "camera_fovy_deg": 70.0,
        "camera_translation_speed": 0.08,
        "camera_rotation_speed_deg": 4.0,
        # 8x autoencoder (8x8x16 latents keep the ball, the boxes and the wall stripes), 2x2 patches: 16 tokens
        "spatial_stride": 8,
        "latent_channels": 16,
        "ae_channels": (16, 32, 64, 128),
        "ae_blocks": (0, 1, 1, 2),
        "ae_decoder_channels": (96, 48, 24, 12),
        "ae_decoder_blocks": (1, 0, 0, 0),  # the decoder runs every env step: its width stays at low resolution
        "ae_edge_weight": 1.0,
        "patch_size": 2,
        # dynamics that start from the last frame: x0 = previous latent + correction, previous latent, relative
        # camera rays and the action in every token; training weighted toward the high noise levels that decide
        # a frame in 1-2 steps
        "prev_frame_input": True,
        "prediction": "x0_residual",
        "flow_shift": 3.0,
        "description": "embedded default: 64x64 rgb, canonical 4-dim camera actions, 8x8x16 latents, 16 tokens per latent frame",
    },
    "tiny": {
        "image_size": (32, 32),
        "spatial_stride": 8,
        "latent_channels": 8,
        "ae_channels": (8, 8, 16, 16),
        "ae_decoder_channels": (16, 16, 8, 8),
        "ae_blocks": (0, 1, 1, 1),
        "ae_decoder_blocks": (1, 1, 0, 0),
        "width": 32,
        "depth": 2,
        "num_heads": 2,
        "softmax_blocks": (1,),
        "ffn_ratio": 2.0,
        "ffn_temporal_kernel": 3,
        "conv_k_size": 3,
        "gdn_chunk_size": 4,
        "attention_sink_frames": 1,
        "attention_window": 2,
        "camera_branch": True,
        "prev_frame_input": True,
        "prediction": "x0_residual",
        "text_width": 24,
        "text_max_tokens": 8,
        "text_vocab": 257,
        "text_hidden": 16,
        "text_layers": 1,
        "description": "tiny: for tests (every feature on, builds and steps in milliseconds)",
    },
    "paper-2.6b": {
        "image_size": (704, 1280),
        "spatial_stride": 32,
        "frames_per_latent": 8,
        "latent_channels": 128,
        "ae_channels": (64, 128, 256, 512, 512, 512),
        "ae_decoder_channels": (512, 512, 256, 128, 64, 64),
        "ae_blocks": (1, 2, 2, 2, 2, 2),
        "ae_decoder_blocks": (2, 2, 2, 2, 2, 1),
        "width": 2240,
        "depth": 20,
        "num_heads": 20,
        "softmax_blocks": (3, 7, 11, 15, 19),
        "ffn_ratio": 3.0,
        "ffn_temporal_kernel": 3,
        "conv_k_size": 4,
        "gdn_chunk_size": 21,
        "attention_sink_frames": 1,
        "attention_window": 8,
        "camera_branch": True,
        "text_width": 2304,
        "text_max_tokens": 300,
        "text_vocab": 32768,
        "text_hidden": 512,
        "text_layers": 2,
        "denoise_steps": 4,
        "description": "our causal hybrid GDN/softmax architecture at SANA-WM's dimensions (2.6B dynamics)",
    },
}
