"""Training: ``neuralsim train autoencoder|dynamics|all`` (single process, or DDP under torchrun).

Read top to bottom like a CleanRL script: a config dataclass, a checkpoint format, one loop used by
both stages. The model supplies the losses (``WorldModel.autoencoder_loss`` /
``WorldModel.dynamics_loss`` return ``(loss, logs)``), so this file knows nothing about the model's
insides beyond which parameters belong to which stage.

Output directory layout (``--out DIR``)::

    DIR/config.json, DIR/model.safetensors   the usable model (EMA weights): WorldModel.from_pretrained(DIR)
    DIR/start_frames.safetensors             start frames + descriptions for env resets (from the dataset)
    DIR/checkpoints/<stage>-<step>/          resumable state: model, EMA, optimizer, RNG, trainer_state.json
    DIR/checkpoints/latest.json              pointer to the newest complete checkpoint (atomic)
    DIR/logs/<stage>.csv (+ TensorBoard)     loss, lr, samples/s
    DIR/samples/<stage>-<step>.gif           real | model side by side

Resuming (``--resume``) restores weights, EMA, optimizer, the noise generator and the position in
the data stream (batch ``i`` of the dataset iterator is a pure function of ``(seed, i)``), so an
interrupted run reaches the same weights as an uninterrupted one.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from safetensors import safe_open
from torch import nn

from neuralsim.actions import released
from neuralsim.checkpoints import (WEIGHTS_NAME, atomic_save_safetensors, atomic_write, atomic_write_json,
                                   ensure_writable_dir, publish_dir, read_config, read_weights, resolve_checkpoint,
                                   write_checkpoint, write_start_frames)
from neuralsim.camera import TranslationResponse
from neuralsim.device import resolve_dtype
from neuralsim.frame_memory import photometric_depth_loss, relative_pose
from neuralsim.limits import MAX_SEED
from neuralsim.session import DreamSession

STAGES = ("autoencoder", "dynamics", "reward", "prompt", "memory", "views", "termination")
ALL_STAGES = ("autoencoder", "dynamics")  # what `train all` runs; the reward model is trained after, on its own
DEFAULT_PROMPT_START_CHANNELS = 128  # `train prompt` on a model without a prompt-start generator adds this size
DEFAULT_PROMPT_VIEW_CHANNELS = 128  # `train views` on a model without a view generator adds this size
#: `train views` pairs two frames of an episode as one place at two headings when the camera moved less than this
#: (the poses' units) and tilted less than VIEW_PAIR_MAX_TILT_DEG between them, and turned at least
#: VIEW_PAIR_MIN_YAW_DEG.
VIEW_PAIR_MAX_SHIFT = 0.05
VIEW_PAIR_MAX_TILT_DEG = 3.0
VIEW_PAIR_MIN_YAW_DEG = 20.0
DEFAULT_FRAME_MEMORY_WIDTH = 12  # `train memory` on a model without a frame memory adds this width
MEMORY_L1 = 0.02  # `train memory`: weight of the L1 term beside the squared error (the gates are pooled PSNR)
DEFAULT_TERMINATION_DETECTOR_CHANNELS = 32  # `train termination` on a model without a detector adds this width
#: `train termination` dreams its windows from this many real frames, in turn: a reset from one frame (the envs') and
#: longer contexts (the fidelity benchmark's 16)
TERMINATION_CONTEXTS = (1, 4, 16)
TERMINATION_HELD_OUT = 5  # every 5th of `train termination`'s windows is held out: the detector's threshold is fitted there
TERMINATION_SHIFTS = tuple(x / 4 for x in range(-16, 17))  # the logit shifts it chooses among
DEFAULT_REWARD_MODEL_CHANNELS = 64  # `train reward` on a model without one adds this size (--set reward_model_channels=N)
MAX_STEPS = 10_000_000


# The adversarial critic learns at this multiple of the dynamics' learning rate (two time-scale updates, one critic
# step per model step): at the same rate it had not begun to tell dreamed latents from real ones after 60 steps. At 4x
# a frame critic still stayed near chance (hinge loss 1.8-2.0) over 800 steps (docs/experiments.md, "a critic against
# the blur").
CRITIC_LR_SCALE = 4.0


class TrainingError(ValueError):
    """Bad training input detected before any work starts."""


class StopTraining(Exception):
    """Raised when ``stop_after`` ends a run early; the last checkpoint is resumable."""


@dataclass
class TrainConfig:
    """Every hyperparameter of a training run (logged in trainer_state.json)."""

    stage: str = "all"  # autoencoder | dynamics | reward | all (= autoencoder, then dynamics)
    data: str = ""
    out: str = ""
    preset: str = "default"
    init: str | None = None  # checkpoint to start from (dynamics: its trained autoencoder)
    steps: int = 2000  # optimisation steps of the stage (dynamics steps for "all")
    ae_steps: int | None = None  # autoencoder steps for "all" (default: steps // 2)
    batch_size: int = 32
    window: int = 8  # env steps per training window (latent frames = 1 + window)
    lr: float = 1e-3
    ae_lr: float | None = None  # autoencoder learning rate (default: lr)
    weight_decay: float = 0.01
    warmup: int = 100
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    dtype: str = "auto"  # auto (training_dtype: bf16 on a GPU that has it, else fp32) | float32 | bfloat16 (autocast)
    checkpoint_every: int = 200
    sample_every: int = 500
    log_every: int = 10
    keep_checkpoints: int = 2
    resume: bool = False
    progress: bool = True
    camera: bool | None = None  # camera conditioning; None = from the dataset
    start_frames: int = 32  # how many start frames to ship with the checkpoint
    stop_after: int | None = None  # end this run at the first checkpoint at or after this step (resume later)
    cache_latents: bool = True  # dynamics: encode the dataset once (frozen autoencoder) instead of every batch
    latent_cache_dir: str | None = None  # dynamics: keep the encoded dataset here for later runs (None: memory only)
    self_forcing: float = 0.0  # dynamics: fraction of batches whose history is the model's own rollout; reward: fraction
    #                           whose second half is the model's own rollout (the reward model learns the dream's frames)
    self_forcing_frames: int = 4  # the longest own rollout (latent frames) used as history
    still_windows: float = 0.0  # dynamics: fraction of windows replaced by their first frame held under the zero
    #                             action (reward 0): for camera worlds where zero means "do nothing", e.g. the room
    stop_windows: float = 0.0  # dynamics: fraction of windows that stop partway: real frames up to a random cut, then
    #                            the last of them held under the zero action (letting go of the keys while moving)
    stop_coast: float = 0.0  # dynamics, stop windows: share of a step's motion the world still shows in the first step
    #                          after the keys are let go (a body slowing down; the room's: 0.375); turns stop at once
    release_windows: float = 0.0  # dynamics: fraction of windows drawn around a real release of the keys (a zero
    #                               action after a non-zero one, after the burn-in): the world's own way of stopping,
    #                               which explored data holds too rarely to teach (the room's: 230 in 64,084 steps)
    reward_kind: str = "recurrent"  # reward: the model `train reward` adds (neuralsim.reward): recurrent (a GRU over the
    #                                 frames) or target (a target tracker, for data whose env states its task: the room)
    terminal_windows: float = 0.0  # reward: fraction of windows drawn around a step that ends an episode (a success:
    #                                rare, about 1 step in 270 of the room's task data, and what the bonus is paid on)
    calibration_data: str = ""  # reward, a target tracker: after training, fit its range calibration on this dataset
    #                             (episodes it did not train on, with target positions; e.g. `collect --policy
    #                             explore,scripted,sticky` on other seeds): the localizer reads far on views it rarely saw
    streaming: bool = False  # dynamics: train frame by frame as sampled (WorldModel.streaming_loss), not in parallel
    own_history: float = 0.0  # streaming: chance a committed frame is the model's own one-step sample (self-forcing)
    one_step_fraction: float = 0.5  # streaming: fraction of target frames at tau = 1, the level one-step sampling sees
    burn_in: int = 0  # streaming: the window's first real frames only build the state (no loss): longer contexts
    release_weight: float = 0.0  # streaming: extra loss weight of the frame right after the keys are let go (the
    #                              world's last slide, small in latent space and drowned by moving frames' errors)
    own_history_grad: bool = False  # streaming: backpropagate through the model's own committed frames (the dream
    #                                 unrolled: a frame's loss reaches the steps that drew its history), not only its state
    adversarial: float = 0.0  # streaming: weight of a critic's hinge term (neuralsim.critic; 0 = none): the x0 error
    #                           alone draws the mean frame, which blurs and feeds the blur forward
    critic_reads: str = "latents"  # adversarial: what the critic judges: latents, or frames (decoded, frozen decoder)
    memory_rollouts: int = 480  # memory: windows of the data the model dreams (--memory-context real frames, then
    #                             --window steps of the data's actions) to train the frame memory on, drawn once per run
    memory_context: int = 16  # memory: real frames before each dream (the fidelity benchmark's context)
    memory_depth_frozen: bool = False  # memory: the depth net stays as it is (e.g. examples/finetune_depth.py's,
    #                                    trained on an env's true depth): only the gate trains, on that depth
    termination_windows: int = 2048  # termination: windows of the data the model dreams (1, 4 or 16 real frames, then
    #                                  up to --window steps of the data's actions), half of them ending where an
    #                                  episode ends, to train the termination detector on, drawn once per run
    termination_reset_share: float = 0.25  # termination: the share of those windows that start as an env's reset does:
    #                                        an episode's first frame alone, then up to --termination-reset-horizon
    #                                        steps of its actions (a dream env's episode; the ending is far from there)
    termination_reset_horizon: int = 64  # termination: the longest of those dreams
    termination_real_data: str = ""  # termination: a dataset of real episodes of the same env (`neuralsim collect`,
    #                                  e.g. of more rooms and policies): a quarter of each batch is its frames, each
    #                                  labelled with whether its step ended the episode
    termination_real_pretrain_steps: int = 0  # termination: the run's first N steps train on --termination-real-data's
    #                                            frames alone, half of them mirrored (a judge of real frames first),
    #                                            then the mix above
    view_pairs: int = 6  # views: pairs of frames of one place at two headings drawn per episode (all when fewer; each
    #                      frame is encoded once, so more pairs encode more of an episode: 6 is the shipped run's)
    critic_warmup: int = 0  # adversarial: the stage's first N steps train the critic alone (the dynamics stays as it
    #                         is), so it steers the dynamics only once it can tell dreamed frames from real ones
    gradient_difference: float = 0.0  # streaming: weight of the gradient difference loss on the decoded one-step
    #                                   samples (neuralsim.critic.gradient_difference_loss; 0 = none): edges, not means
    config_overrides: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------ helpers


def is_distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


#: ``--dtype`` names training accepts (no float16: training autocasts to bf16 only).
TRAIN_DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16")


def training_dtype(name: str, device: torch.device) -> torch.dtype:
    """The autocast dtype of a training run: ``resolve_dtype``, except that ``"auto"`` trains in fp32 on a CPU even
    where bf16 is native: autocast's casts around the forward and backward of these small matmuls cost more than bf16
    saves (a streaming stage, 16 windows of 64, one thread, Xeon with AMX: 9.0 s per step in bf16, 7.3 in fp32)."""
    if name == "auto" and device.type == "cpu":
        return torch.float32
    return resolve_dtype(name, device)


def lr_at(step: int, cfg: TrainConfig, total: int, stage: str = "dynamics") -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio`` of the stage's peak learning rate."""
    peak = cfg.ae_lr if stage == "autoencoder" and cfg.ae_lr is not None else cfg.lr
    if step < cfg.warmup:
        return peak * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, total - cfg.warmup))
    return peak * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def stage_parameters(model: nn.Module, stage: str) -> dict[str, nn.Parameter]:
    """The parameters a stage trains: the autoencoder, the reward model, the prompt-start generator, the frame
    memory or the view generator alone, or everything else (the dynamics)."""
    named = dict(model.named_parameters())
    own = {"autoencoder": "autoencoder.", "reward": "reward_model.", "prompt": "prompt_start.",
           "memory": "frame_memory.", "views": "prompt_views.", "termination": "termination_detector."}
    if stage in own:
        return {k: p for k, p in named.items() if k.startswith(own[stage])}
    return {k: p for k, p in named.items() if not k.startswith(tuple(own.values()))}


class LatentCache:
    """Every episode encoded once by the frozen autoencoder, so the dynamics stage never re-encodes.

    A training window that starts at step ``s`` is ``[first frame alone, chunk s+1, ..., chunk s+T]``
    (the autoencoder encodes each latent frame independently), so we keep, per episode, the latent of
    every ``k``-frame chunk and, when ``k > 1``, of every step-boundary frame encoded alone.
    """

    def __init__(self, model: nn.Module, dataset: Any, chunk: int = 512, store: str | os.PathLike | None = None):
        """``store``: a directory where the encoded dataset is kept, named by a fingerprint of the encoder
        weights, the latent normalisation and the dataset manifest, so later dynamics runs on the same data and
        autoencoder load it instead of encoding again (minutes for a few hundred episodes)."""
        self.k = dataset.frames_per_step
        self.chunks: list[torch.Tensor] = []
        self.alone: list[torch.Tensor] = []
        file = None
        if store is not None:
            file = Path(store) / f"latents-{self.fingerprint(model, dataset)}.safetensors"
            if self._load(file, dataset.num_episodes):
                self.loaded_from: Path | None = file
                return
        self.loaded_from = None
        with torch.no_grad():
            for i in range(dataset.num_episodes):
                frames = torch.from_numpy(dataset.episode(i)["frames"])  # (1 + n*k, H, W, 3)
                if self.k == 1:  # every frame is its own latent: encode each once, alone
                    self.chunks.append(torch.cat([model.encode(frames[a : a + chunk, None])[:, 0]
                                                  for a in range(0, len(frames), chunk)]))
                    continue
                n = (len(frames) - 1) // self.k
                parts = [model.encode(frames[None, :1])[0]]
                for a in range(0, n, chunk):  # chunks a+1 .. a+m, each of k frames
                    b = min(n, a + chunk)
                    group = frames[1 + a * self.k : 1 + b * self.k].reshape(b - a, self.k, *frames.shape[1:])
                    parts.append(model.encode(torch.cat([group[:, :1], group], dim=1))[:, 1])
                self.chunks.append(torch.cat(parts))  # (1 + n, C, h, w): [frame 0 alone, chunk 1..n]
                if self.k > 1:
                    boundary = frames[:: self.k]  # frame s*k for s = 0..n
                    self.alone.append(torch.cat([model.encode(boundary[a : a + chunk, None])[:, 0]
                                                 for a in range(0, len(boundary), chunk)]))
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            tensors = {f"chunks.{i}": t for i, t in enumerate(self.chunks)}
            tensors.update({f"alone.{i}": t for i, t in enumerate(self.alone)})
            atomic_save_safetensors(file, tensors, metadata={"format": "neuralsim-latent-cache",
                                                             "episodes": str(dataset.num_episodes)})

    @staticmethod
    def fingerprint(model: nn.Module, dataset: Any) -> str:
        """sha256 (first 16 hex digits) of everything the cached latents depend on."""
        h = hashlib.sha256()
        for name, tensor in sorted(model.autoencoder.encoder.state_dict().items()):  # the decoder plays no part
            h.update(name.encode())
            h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        cfg = model.config
        h.update(json.dumps([cfg.latent_scale, cfg.latent_shift, dataset.frames_per_step], sort_keys=True).encode())
        h.update(json.dumps(dataset.manifest, sort_keys=True).encode())  # lists every shard's sha256
        return h.hexdigest()[:16]

    def _load(self, file: Path, episodes: int) -> bool:
        """Read a stored cache (safetensors: no code runs on load); False when absent or not this dataset's."""
        if not file.is_file():
            return False
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != "neuralsim-latent-cache" or meta.get("episodes") != str(episodes):
                return False
            keys = set(f.keys())
            self.chunks = [f.get_tensor(f"chunks.{i}") for i in range(episodes)]
            if self.k > 1:
                self.alone = [f.get_tensor(f"alone.{i}") for i in range(episodes)]
        return len(keys) == len(self.chunks) + len(self.alone)

    def windows(self, episodes: np.ndarray, starts: np.ndarray, steps: int) -> torch.Tensor:
        """Latents ``[B, 1 + steps, C, h, w]`` of the windows a data batch describes."""
        out = []
        for e, s in zip(episodes.tolist(), starts.tolist()):
            first = self.alone[e][s] if self.k > 1 else self.chunks[e][s]
            out.append(torch.cat([first[None], self.chunks[e][s + 1 : s + 1 + steps]]))
        return torch.stack(out)


def hold_from(latents: torch.Tensor, batch: dict, cut: torch.Tensor,
              coast: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Windows held still from frame ``cut[i]`` on (``0``: the window as it is): frame ``cut - 1`` repeated, and the
    steps into the held frames (from step ``cut - 1``) with the zero action, reward 0, not terminated. With ``coast``
    (``[B]`` in [0, 1)) the held frame is ``coast`` of the way from frame ``cut - 1`` to the real frame ``cut`` (latents
    blended: a body still sliding a little after the keys are let go; sub-pixel motions blend like shifts). Returns
    new tensors; ``latents [B, T, ...]`` and ``batch`` (per-step arrays ``[B, T-1, ...]``) are left untouched."""
    T = latents.shape[1]
    t = torch.arange(T)
    held = (cut[:, None] > 0) & (t[None] >= cut[:, None])  # (B, T) frames replaced
    source = torch.where(held, cut[:, None] - 1, t[None]).to(latents.device)  # (B, T) which frame each one shows
    shape = (*source.shape, *[1] * (latents.ndim - 2))
    out = torch.take_along_dim(latents, source.view(shape), dim=1)
    if coast is not None:
        reached = torch.take_along_dim(latents, torch.where(held, cut[:, None], t[None]).to(latents.device).view(shape), dim=1)
        w = (coast.to(latents.device, latents.dtype)[:, None] * held.to(latents.device)).view(shape)
        out = out + w * (reached - out)
    latents = out
    steps = held[:, 1:]  # step s leads from frame s to frame s + 1
    batch = dict(batch)
    for key, value in (("actions", 0), ("rewards", 0.0), ("terminated", False)):
        if batch.get(key) is None:
            continue
        if isinstance(batch[key], torch.Tensor):
            arr = batch[key].clone()
            arr[steps.to(arr.device)] = value
        else:
            arr = np.array(batch[key], copy=True)
            arr[steps.numpy()] = value
        batch[key] = arr
    return latents, batch


def view_pairs(poses: np.ndarray, max_pairs: int, rng: np.random.Generator) -> list[tuple[int, int, float]]:
    """Pairs of frames of one episode that show one place at two headings: ``(i, j, yaw)``, frame ``j``'s camera
    turned ``yaw`` radians to the right of frame ``i``'s (``poses [T, 4, 4]`` camera-to-world, OpenCV axes: +Y down;
    within VIEW_PAIR_MAX_SHIFT and VIEW_PAIR_MAX_TILT_DEG, at least VIEW_PAIR_MIN_YAW_DEG apart); at most
    ``max_pairs``, drawn evenly over the turn (10-degree bins of ``|yaw|`` first, then a pair in the bin: a turn on
    the spot has far more pairs a little apart than half a turn apart)."""
    P = np.asarray(poses, dtype=np.float64)
    forward = P[:, :3, 2]  # the camera's forward axis in the world
    heading = np.arctan2(forward[:, 0], forward[:, 2])  # yaw to the right about +Y (down)
    tilt = np.degrees(np.arcsin(np.clip(-forward[:, 1], -1, 1)))
    i, j = np.nonzero(np.ones((len(P), len(P)), dtype=bool))
    yaw = np.remainder(heading[j] - heading[i] + np.pi, 2 * np.pi) - np.pi
    ok = ((np.linalg.norm(P[j, :3, 3] - P[i, :3, 3], axis=1) < VIEW_PAIR_MAX_SHIFT)
          & (np.abs(tilt[j] - tilt[i]) < VIEW_PAIR_MAX_TILT_DEG) & (np.abs(yaw) >= math.radians(VIEW_PAIR_MIN_YAW_DEG)))
    valid = np.flatnonzero(ok)
    if len(valid) > max_pairs:
        bins = (np.degrees(np.abs(yaw[valid])) // 10).astype(int)
        groups = [rng.permutation(valid[bins == b]).tolist() for b in np.unique(bins)]
        picked = []
        while len(picked) < max_pairs:  # round-robin over the bins in random order, each bin's pairs shuffled
            for g in rng.permutation(len(groups)):
                if groups[g] and len(picked) < max_pairs:
                    picked.append(groups[g].pop())
        valid = np.array(picked)
    return [(int(i[k]), int(j[k]), float(yaw[k])) for k in valid]


class ViewPool:
    """``train views``' data: pairs of frames of one place at two headings (:func:`view_pairs`, from the data's
    camera poses), encoded once by the frozen autoencoder, with the yaw between them and the episode's description.
    Drawn once per run from ``seed`` (a resumed run draws the same pairs)."""

    def __init__(self, model: nn.Module, dataset: Any, pairs_per_episode: int, seed: int, batch_size: int = 256):
        rng = np.random.default_rng([seed, 8])
        frames, ref_index, view_index, yaws, prompts = [], [], [], [], []
        for e in range(dataset.num_episodes):
            ep = dataset.episode(e)
            pairs = view_pairs(ep["poses"], pairs_per_episode, rng)
            if not pairs:
                continue
            used = sorted({k for i, j, _ in pairs for k in (i, j)})
            where = {k: len(frames) + n for n, k in enumerate(used)}
            frames.extend(ep["frames"][used])  # a copy of the used frames: the episode's array is let go
            for i, j, yaw in pairs:
                ref_index.append(where[i]), view_index.append(where[j]), yaws.append(yaw)
                prompts.append(ep["description"] or None)
        if not yaws:
            raise TrainingError("train views found no two frames of one place at two headings in --data (camera "
                                f"within {VIEW_PAIR_MAX_SHIFT} and turned >= {VIEW_PAIR_MIN_YAW_DEG} degrees): collect "
                                "episodes that turn on the spot, e.g. `neuralsim collect --policy turn` on NeuralSimRoom-v0")
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                latents = [model.encode(torch.from_numpy(np.stack(frames[k : k + batch_size]))[:, None]).float()[:, 0].cpu()
                           for k in range(0, len(frames), batch_size)]
        finally:
            model.train(was_training)
        self.latents = torch.cat(latents)  # [N_frames, C, h, w]: each frame once, as a lone first frame
        self.reference, self.view = torch.tensor(ref_index), torch.tensor(view_index)
        self.yaw = torch.tensor(yaws, dtype=torch.float32)
        self.prompts = prompts

    def __len__(self) -> int:
        return len(self.yaw)

    def loss(self, views: nn.Module, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        pick = torch.randint(0, len(self), (batch_size,), generator=generator)
        device = views.device
        return views.loss(self.latents[self.view[pick]].to(device), [self.prompts[k] for k in pick.tolist()], generator,
                          reference=self.latents[self.reference[pick]].to(device), yaw=self.yaw[pick].to(device))


class TerminationPool:
    """``train termination``'s data: the model's own dreams of windows of the data's episodes, decoded as the envs show
    them (the frame memory and, with a prompt, the views around the start), each dreamed frame labelled with whether
    the real episode ended on that step; beside each the real frame, labelled alike. A window starts from 1, 4 or 16
    real frames (:data:`TERMINATION_CONTEXTS`, in turn), then dreams up to ``horizon`` steps of the data's actions;
    half the windows are placed so that their episode's last step falls on a uniformly drawn dreamed step (an
    episode's end is one step in a few hundred). A ``reset_share`` of them instead start where a dream env's episode
    starts, from an episode's first frame alone, and dream up to ``reset_horizon`` steps: the frames an agent in the
    dream sees, long after the one real frame (the benchmarks' windows alone left the detector firing on them where
    the room's episode went on). Drawn once per run from ``seed`` (a resumed run draws the same).

    ``real_data``: a dataset of real episodes of the same env (``--termination-real-data``), every frame of it labelled
    with whether its step ended the episode; a quarter of each batch is drawn from it (the dataset's own windows' real
    frames are another quarter). Many more rooms and views than the dreamed windows hold: the detector judges the real
    frames better, and a dream's judge is no better than that (the detector on real frames is the dream's ceiling)."""

    def __init__(self, model: nn.Module, dataset: Any, windows: int, horizon: int, seed: int, batch_size: int = 32,
                 reset_share: float = 0.0, reset_horizon: int = 64, real_data: Any = None):
        rng = np.random.default_rng([seed, 9])
        generator = torch.Generator().manual_seed(seed * 7919 + 9)
        steps = np.asarray(dataset.episode_steps)
        ended = np.flatnonzero([bool(t[-1]) if len(t) else False for t in np.split(
            dataset.step_column("terminated"), np.cumsum(steps)[:-1])])
        # (episode, start, steps, held out): every TERMINATION_HELD_OUT-th window is where the threshold is fitted
        # keyed by (real frames, starts at a reset): a batch dreams as long as its longest window, so the long reset
        # windows are batched apart
        plans: dict[tuple[int, bool], list[tuple[int, int, int, bool]]] = {(c, False): [] for c in TERMINATION_CONTEXTS}
        resets = round(reset_share * windows)
        plans[(1, True)] = []
        for w in range(resets):  # an episode's first frame, then its actions until it ends or the horizon
            e = int(rng.integers(0, len(steps)))
            held = w % TERMINATION_HELD_OUT == TERMINATION_HELD_OUT - 1
            plans[(1, True)].append((e, 0, min(reset_horizon, int(steps[e])), held))
        for w in range(windows - resets):
            c = TERMINATION_CONTEXTS[w % len(TERMINATION_CONTEXTS)]
            held = w // len(TERMINATION_CONTEXTS) % TERMINATION_HELD_OUT == TERMINATION_HELD_OUT - 1
            if w % 2 == 0 and len(ended):  # the episode's end on dreamed step j
                e = int(rng.choice(ended))
                j = int(rng.integers(0, horizon))
                start = int(steps[e]) - c - j
                if start < 0:
                    j, start = int(steps[e]) - c, 0
                if j < 0:
                    continue
                plans[(c, False)].append((e, start, j + 1, held))
            else:
                e = int(rng.integers(0, len(steps)))
                if steps[e] < c:
                    continue
                start = int(rng.integers(0, steps[e] - c + 1))
                plans[(c, False)].append((e, start, min(horizon, int(steps[e]) - start - c + 1), held))
        # every frame written into one preallocated array: a list of a hundred thousand small frames (and the batch
        # tensors they viewed) held the process at 10x the frames' own size, enough to run a 24 GB machine out of memory
        total = sum(m for plan in plans.values() for _, _, m, _ in plan)
        shape = tuple(dataset.episode(0)["frames"].shape[1:])
        dream, real = torch.empty((total, *shape), dtype=torch.uint8), torch.empty((total, *shape), dtype=torch.uint8)
        every, held = torch.zeros(total, dtype=torch.bool), torch.zeros(total, dtype=torch.bool)
        k = 0
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for (c, _), plan in plans.items():
                    for b0 in range(0, len(plan), batch_size):
                        part = plan[b0 : b0 + batch_size]
                        eps = [dataset.episode(e) for e, *_ in part]
                        n = max(m for _, _, m, _ in part)
                        context = np.stack([ep["frames"][s : s + c] for ep, (_, s, *_) in zip(eps, part)])
                        ctx_actions = (np.stack([ep["actions"][s : s + c - 1] for ep, (_, s, *_) in zip(eps, part)])
                                       if c > 1 else None)
                        prompts = [ep["description"] or None for ep in eps]
                        state = model.init_state(len(part), frames=context, actions=ctx_actions, prompt=prompts,
                                                 generator=generator)
                        for t in range(n):
                            acts = np.zeros((len(part), *eps[0]["actions"].shape[1:]), eps[0]["actions"].dtype)
                            live = [i for i, (_, _, m, _) in enumerate(part) if t < m]  # past a window's end: padding
                            for i in live:
                                acts[i] = eps[i]["actions"][part[i][1] + c - 1 + t]
                            latent, state = model.step(state, acts, generator=generator)
                            frames = model.decode(latent[:, None], first_frame=False, context=state)[:, -1].cpu()
                            for i in live:
                                ep, s = eps[i], part[i][1]
                                dream[k] = frames[i]
                                real[k] = torch.from_numpy(ep["frames"][s + c + t])
                                every[k], held[k] = bool(ep["terminated"][s + c - 1 + t]), part[i][3]
                                k += 1
        finally:
            model.train(was_training)
        if not bool(every.any()):
            raise TrainingError("train termination found no episode end among the dreamed windows: --data needs "
                                "episodes that terminate (terminated=True on their last step)")
        self.dream, self.real, self.labels = dream[~held], real[~held], every[~held]
        self.held_dream, self.held_labels = dream[held], every[held]
        if not bool(self.labels.any()):
            raise TrainingError("train termination found no episode end among the windows it trains on: draw more "
                                "(--termination-windows)")
        positives = float(self.labels.float().mean())
        # positives weigh sqrt(negatives / positives): the loss neither ignores the rare endings nor fires everywhere
        self.pos_weight = math.sqrt((1.0 - positives) / positives)
        self.extra, self.extra_labels = (None, None) if real_data is None else self.real_frames(real_data)

    @staticmethod
    def real_frames(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Every frame after a step of ``dataset`` ``[N, H, W, 3]`` uint8, and whether that step ended its episode ``[N]``."""
        steps = np.asarray(dataset.episode_steps)
        shape = tuple(dataset.episode(0)["frames"].shape[1:])
        frames = torch.empty((int(steps.sum()), *shape), dtype=torch.uint8)  # one array: see the dreams' above
        labels = torch.zeros(int(steps.sum()), dtype=torch.bool)
        k = 0
        for e, n in enumerate(steps):
            if n:
                ep = dataset.episode(e)
                frames[k : k + n] = torch.from_numpy(np.ascontiguousarray(ep["frames"][1 : 1 + n]))
                labels[k : k + n] = torch.from_numpy(np.asarray(ep["terminated"][:n], bool))
                k += int(n)
        return frames, labels

    def __len__(self) -> int:
        return len(self.labels)

    @torch.no_grad()
    def fit_threshold(self, detector: nn.Module, batch_size: int = 512) -> tuple[float, float, float]:
        """The shift of the detector's logit (a step of :data:`TERMINATION_SHIFTS`) that makes its endings on the
        held-out dreamed frames best (F1; the smallest shift among equals): trained with the positives weighted up, it
        fires a step early now and then, which a dream pays as a success. Returns ``(shift, F1 before, F1 after)``."""
        if not len(self.held_labels) or not bool(self.held_labels.any()):
            return 0.0, float("nan"), float("nan")
        logits = torch.cat([detector(self.held_dream[k : k + batch_size]).float().cpu()
                            for k in range(0, len(self.held_dream), batch_size)])

        def f1(shift: float) -> float:
            fired = logits + shift > 0
            hits = int((fired & self.held_labels).sum())
            return 2 * hits / max(int(fired.sum()) + int(self.held_labels.sum()), 1)

        best = max(TERMINATION_SHIFTS, key=lambda shift: (f1(shift), -abs(shift)))
        return float(best), f1(0.0), f1(best)

    def loss(self, detector: nn.Module, batch_size: int, generator: torch.Generator,
             real_only: bool = False) -> tuple[torch.Tensor, dict]:
        """The detector's loss on ``batch_size`` frames drawn uniformly, half dreamed and half real (with ``real_data``,
        half of those real frames from it). ``real_only`` (``--termination-real-pretrain-steps``): every frame from
        ``real_data``, half of them mirrored left to right (a success does not depend on the side the target is on)."""
        if real_only:
            j = torch.randint(0, len(self.extra_labels), (batch_size,), generator=generator)
            frames = self.extra[j]
            mirrored = torch.rand((batch_size,), generator=generator) < 0.5
            frames = torch.where(mirrored[:, None, None, None], frames.flip(2), frames)
            return detector.loss(frames, self.extra_labels[j], self.pos_weight)
        i = torch.randint(0, len(self), (batch_size,), generator=generator)
        dreamed = torch.rand((batch_size,), generator=generator) < 0.5
        frames = torch.where(dreamed[:, None, None, None], self.dream[i], self.real[i])
        labels = self.labels[i]
        if self.extra is not None:
            extra = ~dreamed & (torch.rand((batch_size,), generator=generator) < 0.5)
            j = torch.randint(0, len(self.extra_labels), (batch_size,), generator=generator)
            frames = torch.where(extra[:, None, None, None], self.extra[j], frames)
            labels = torch.where(extra, self.extra_labels[j], labels)
        loss, logs = detector.loss(frames, labels, self.pos_weight)
        return loss, logs


class DreamPool:
    """The model's own dreams of data windows, for ``train memory``: ``context`` real frames, then ``horizon``
    steps of the data's actions, decoded as the dream shows them without a memory; beside each dreamed frame the real
    one, and per window the last real context frame (what the memory holds) with each dreamed frame's camera in its
    camera's frame. Drawn once per run from ``seed`` (a resumed run draws the same dreams)."""

    def __init__(self, model: nn.Module, dataset: Any, windows: int, context: int, horizon: int, seed: int,
                 batch_size: int = 32):

        generator = torch.Generator().manual_seed(seed * 7919 + 4)
        stream = dataset.iter_windows(steps=context - 1 + horizon, batch_size=batch_size, seed=seed * 1_000 + 4)
        dreams, reals, memories, rels = [], [], [], []
        drawn, was_training = 0, model.training
        model.eval()
        try:
            with torch.no_grad():
                while drawn < windows:
                    w = next(stream)
                    b = min(batch_size, windows - drawn)
                    drawn += b
                    frames, actions = w["frames"][:b], w["actions"][:b]
                    prompts = [d or None for d in w["descriptions"][:b]]
                    state = model.init_state(b, frames=frames[:, :context], actions=actions[:, :context - 1],
                                             prompt=prompts, generator=generator)
                    memory_c2w, dream, rel = state.c2w, [], []
                    for t in range(horizon):
                        latent, state = model.step(state, actions[:, context - 1 + t], generator=generator)
                        dream.append(model.decode(latent[:, None], first_frame=False)[:, 0].cpu())  # no memory here
                        rel.append(relative_pose(memory_c2w, state.c2w).cpu())
                    dreams.append(torch.stack(dream, 1))
                    reals.append(torch.as_tensor(np.asarray(frames[:, context:])))
                    memories.append(torch.as_tensor(np.asarray(frames[:, context - 1])))
                    rels.append(torch.stack(rel, 1))
        finally:
            model.train(was_training)
        self.dream, self.real = torch.cat(dreams), torch.cat(reals)  # uint8 [N, horizon, H, W, 3]
        self.memory, self.rel = torch.cat(memories), torch.cat(rels)  # uint8 [N, H, W, 3]; float64 [N, horizon, 4, 4]

    @staticmethod
    def _pixels(frames: torch.Tensor, device: torch.device) -> torch.Tensor:
        return frames.to(device).float().div(127.5).sub(1).permute(0, 3, 1, 2)

    def loss(self, memory: nn.Module, batch_size: int, generator: torch.Generator,
             train_depth: bool = True) -> tuple[torch.Tensor, dict]:
        """The squared error (plus a little L1: ``MEMORY_L1``) of ``batch_size`` dreamed frames after ``memory``'s gate,
        against the real frames; drawn uniformly over windows and steps. A memory with a depth net adds its
        self-supervised loss on the same draws (the remembered frame and the real one, the camera's motion between:
        :func:`neuralsim.frame_memory.photometric_depth_loss`) unless ``train_depth`` is False."""
        N, H = self.dream.shape[:2]
        i = torch.randint(0, N, (batch_size,), generator=generator)
        h = torch.randint(0, H, (batch_size,), generator=generator)
        device = next(memory.parameters()).device
        frame, real = self._pixels(self.dream[i, h], device), self._pixels(self.real[i, h], device)
        remembered, rel = self._pixels(self.memory[i], device), self.rel[i, h].to(device)
        logs = {}
        depth = None
        depth_loss = 0
        if memory.depth is not None:  # the depth net learns from the real frames alone; the gate reads it as it is
            if train_depth:
                depth_loss, logs = photometric_depth_loss(memory.depth, remembered, real, rel, memory.fovy_deg)
            with torch.no_grad():
                depth = memory.memory_depth(remembered)
        out, gate = memory(frame, remembered, rel, depth, gate="learned")  # the net this stage trains, whatever the
        mse, l1 = (out - real).pow(2).mean(), (out - real).abs().mean()  # config shows at inference
        loss = mse + MEMORY_L1 * l1 + depth_loss
        return loss, {"mse": mse.item(), "l1": l1.item(), "gate": gate.mean().item(),
                      "dream_mse": (frame - real).pow(2).mean().item(), **logs}


class StageLoss(nn.Module):
    """Wraps a model's stage loss in ``forward`` so DDP can synchronise its gradients.

    Self-forcing (dynamics, ``self_forcing > 0``): for that fraction of batches the model first rolls
    out ``K`` frames itself (no gradient, ``denoise_steps`` as at inference) from the window's first
    frame and real actions; the loss then treats that rollout as the history of the real frames after
    it (:meth:`WorldModel.dynamics_loss` ``own_frames``), as SANA-WM's self-forcing stage trains on
    the model's own rollouts to stop drift from compounding.
    """

    def __init__(self, model: nn.Module, stage: str, cache: LatentCache | None = None, self_forcing: float = 0.0,
                 self_forcing_frames: int = 4, still_windows: float = 0.0, streaming: bool = False,
                 own_history: float = 0.0, one_step_fraction: float = 0.5, burn_in: int = 0,
                 stop_windows: float = 0.0, stop_coast: float = 0.0, own_history_grad: bool = False,
                 release_weight: float = 0.0, critic: nn.Module | None = None, adversarial: float = 0.0,
                 gradient_difference: float = 0.0):
        super().__init__()
        self.critic, self.adversarial = critic, adversarial  # a registered submodule: DDP syncs its gradients too
        self.critic_only = False  # set by the training loop while the critic warms up
        self.real_only = False  # set by the training loop while the termination detector pre-trains on real frames
        self.gradient_difference = gradient_difference
        self.own_history_grad, self.release_weight = own_history_grad, release_weight
        self.stop_windows, self.stop_coast = stop_windows, stop_coast
        self.streaming, self.own_history, self.one_step_fraction = streaming, own_history, one_step_fraction
        self.burn_in = burn_in
        self.model = model
        self.stage = stage
        self.cache = cache
        self.pool: DreamPool | None = None  # the memory stage's dreams (set by train_stage)
        self.memory_depth_frozen = False  # the memory stage: its depth net stays as it is (set by train_stage)
        self.self_forcing = self_forcing
        self.self_forcing_frames = self_forcing_frames
        self.still_windows = still_windows

    def hold_still(self, latents: torch.Tensor, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """Replace a ``still_windows`` fraction of the windows by their first frame repeated, under the zero action with
        reward 0: a person at the keys idles for many steps, which explored data holds too rarely to teach."""
        rows = torch.rand((latents.shape[0],), generator=generator) < self.still_windows
        if not bool(rows.any()):
            return latents, batch
        return hold_from(latents, batch, rows.long())  # held from frame 1: frame 0 repeated

    def stop_partway(self, latents: torch.Tensor, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """Make a ``stop_windows`` fraction of the windows (not already held still) stop partway: real frames up to a cut
        ``c`` drawn after the burn-in, then frame ``c - 1`` held under the zero action with reward 0. Still windows
        teach stillness from a standing start; a player lets go of the keys while moving, which this teaches."""
        B, T = latents.shape[:2]
        first = max(1, min(self.burn_in, T - 1))  # the stop falls where the loss sees it
        rows = torch.rand((B,), generator=generator) < self.stop_windows
        cuts = torch.randint(first, T, (B,), generator=generator)
        coast = None
        if "actions" in batch and batch["actions"] is not None:
            actions = torch.as_tensor(np.asarray(batch["actions"]))  # (B, T-1, A)
            moving = ~(actions == 0).flatten(1).all(dim=1)
            rows &= moving  # a window held still already (hold_still) stays as it is
            if self.stop_coast > 0:  # coasting: the last two steps translated and did not turn (turns stop at once)
                last = torch.stack([actions[torch.arange(B), (cuts - k).clamp(min=0)] for k in (1, 2)], 1)  # (B, 2, A)
                slides = (last[..., :2] != 0).any(-1).all(-1) & (last[..., 2:] == 0).all(-1).all(-1)
                coast = self.stop_coast * slides.float()
        if not bool(rows.any()):
            return latents, batch
        return hold_from(latents, batch, torch.where(rows, cuts, 0), coast)

    @torch.no_grad()
    def own_rollout(self, latents: torch.Tensor, batch: dict, frames: int, generator: torch.Generator) -> torch.Tensor:
        """The model's own latent frames ``1..frames`` from real frame 0 and the batch's actions."""
        was_training = self.model.training
        try:
            session = DreamSession(self.model, dtype="float32")  # eval mode; precision: the trainer's autocast
            state, _, _ = session.start(latents.shape[0], generator, latents=latents[:, :1],
                                        prompt=batch.get("descriptions"))
            own = []
            for t in range(frames):
                out = session.step(state, batch["actions"][:, t], generator, decode=False)
                state = out.state
                own.append(out.latent)
        finally:
            self.model.train(was_training)
        return torch.stack(own, dim=1)

    @torch.no_grad()
    def target_labels(self, batch: dict, frames: int) -> dict[str, torch.Tensor]:
        """A target tracker's labels from the window's recorded camera poses and target positions (one per latent
        frame: every ``frames_per_latent``-th raw frame): ``offsets [B, frames, 2]`` (its localizer's) and, for a
        tracker with walls, ``places [B, frames, 4]`` (its room head's); empty for another reward model or data
        without them."""
        from neuralsim.reward import TargetTracker, room_places, target_offsets

        tracker = self.model.reward_model
        if not isinstance(tracker, TargetTracker) or "poses" not in batch:
            return {}
        k = self.model.config.frames_per_latent
        poses = torch.as_tensor(batch["poses"])[:, ::k][:, :frames]
        labels = {"places": room_places(poses)} if tracker.walls else {}
        if "target_positions" in batch:
            labels["offsets"] = target_offsets(poses, torch.as_tensor(batch["target_positions"])[:, ::k][:, :frames])
        return labels

    def own_continuation(self, latents: torch.Tensor, batch: dict, generator: torch.Generator) -> torch.Tensor:
        """The windows with their second half replaced by the model's own rollout: real frames ``0..c-1`` (with their
        actions) are the context, then the model dreams frames ``c..T-1`` under the batch's actions, ``c = T // 2``."""
        model, T = self.model, latents.shape[1]
        c = max(1, T // 2)
        was_training = model.training
        model.eval()
        try:
            prompts = batch.get("descriptions") if model.config.text_width else None
            state = model.init_state(latents.shape[0], latents=latents[:, :c], actions=batch["actions"][:, : c - 1],
                                     prompt=prompts, generator=generator)
            own = []
            for t in range(c - 1, T - 1):
                latent, state = model.step(state, batch["actions"][:, t], generator)
                own.append(latent)
        finally:
            model.train(was_training)
        return torch.cat([latents[:, :c], torch.stack(own, dim=1).to(latents.dtype)], dim=1)

    def forward(self, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        if self.stage == "autoencoder":
            return self.model.autoencoder_loss(batch["frames"], generator=generator)
        if self.stage == "termination":  # frames of the dreams drawn before the stage (the data batch is not used)
            return self.pool.loss(self.model.termination_detector, len(batch["episode"]), generator,
                                  real_only=self.real_only)
        if self.stage == "views":  # pairs of frames drawn before the stage (the data batch is not used)
            return self.pool.loss(self.model.prompt_views, len(batch["episode"]), generator)
        if self.stage == "memory":  # frames of the dreams drawn before the stage (the data batch is not used)
            return self.pool.loss(self.model.frame_memory, len(batch["episode"]), generator,
                                  train_depth=not self.memory_depth_frozen)
        if self.cache is not None:
            latents = self.cache.windows(batch["episode"], batch["start"], batch["actions"].shape[1]).to(self.model.device)
        else:
            with torch.no_grad():
                latents = self.model.encode(batch["frames"])
        if self.stage == "prompt":  # the window's first frame and its episode's description
            return self.model.prompt_start.loss(latents[:, 0].float(), list(batch["descriptions"]), generator)
        if self.stage == "reward":  # real rewards; the frames real, or for a self_forcing share the model's own after T/2
            own = self.self_forcing > 0 and float(torch.rand((1,), generator=generator)) < self.self_forcing
            if own:
                latents = self.own_continuation(latents, batch, generator)
            # each row's memory opens at a random frame: a success (an episode's last step, so a window's) is then
            # met at every memory age, not always at the window's length (RewardModel.loss)
            T = latents.shape[1]
            opens = torch.randint(0, T - 1, (latents.shape[0],), generator=generator)
            loss, logs = self.model.reward_loss(latents, batch["actions"], batch["rewards"], batch["terminated"], opens,
                                                **self.target_labels(batch, T))
            return loss, {**logs, "own_frames": float(own)}
        if self.still_windows > 0:
            latents, batch = self.hold_still(latents, batch, generator)
        if self.stop_windows > 0:
            latents, batch = self.stop_partway(latents, batch, generator)
        if self.streaming:
            return self.model.streaming_loss(
                latents, batch["actions"], batch["rewards"], batch["terminated"], batch.get("descriptions"),
                generator=generator, own_history=self.own_history, one_step_fraction=self.one_step_fraction,
                burn_in=self.burn_in, own_history_grad=self.own_history_grad, release_weight=self.release_weight,
                critic=self.critic, adversarial_weight=self.adversarial, critic_only=self.critic_only,
                gradient_difference_weight=self.gradient_difference)
        own = None
        T = latents.shape[1]
        if self.self_forcing > 0 and T >= 3:
            draw = torch.rand((2,), generator=generator)
            if float(draw[0]) < self.self_forcing:
                frames = 1 + int(float(draw[1]) * min(self.self_forcing_frames, T - 2))
                own = self.own_rollout(latents, batch, frames, generator)
        return self.model.dynamics_loss(
            latents, batch["actions"], batch["rewards"], batch["terminated"], batch.get("descriptions"), generator=generator,
            own_frames=own,
        )


class EMA:
    """Exponential moving average of parameters, with the usual warmup ``min(decay, (1+n)/(10+n))``."""

    def __init__(self, params: dict[str, nn.Parameter], decay: float):
        self.decay = decay
        self.shadow = {k: p.detach().clone().float() for k, p in params.items()}

    @torch.no_grad()
    def update(self, params: dict[str, nn.Parameter], step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for k, p in params.items():
            self.shadow[k].mul_(d).add_(p.detach().float(), alpha=1 - d)


# ------------------------------------------------------------------------- checkpoint format


def _optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"state.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(out: Path, stage: str, step: int, model: nn.Module, ema: EMA, opt: torch.optim.Optimizer,
                    generator: torch.Generator, cfg: TrainConfig, extra: dict,
                    critic: tuple[nn.Module, torch.optim.Optimizer] | None = None) -> Path:
    """Write a complete resumable checkpoint into a temp dir, rename it into place, then move the pointer."""
    root = out / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{stage}-{step:07d}"
    tmp = root / f".tmp-{stage}-{step:07d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model.save_pretrained(tmp / "model")
    atomic_save_safetensors(tmp / "ema.safetensors", ema.shadow)
    opt_tensors, opt_meta = _optimizer_to_tensors(opt)
    opt_tensors["rng.noise"] = generator.get_state()
    atomic_save_safetensors(tmp / "optimizer.safetensors", opt_tensors)
    if critic is not None:  # the adversarial term's critic and its optimizer (training only: never exported)
        critic_module, critic_opt = critic
        tensors, meta = _optimizer_to_tensors(critic_opt)
        tensors = {f"optimizer.{k}": v for k, v in tensors.items()}
        tensors.update({f"weights.{k}": v.contiguous() for k, v in critic_module.state_dict().items()})
        atomic_save_safetensors(tmp / "critic.safetensors", tensors)
        extra = {**extra, "critic_optimizer": meta}
    atomic_write_json(tmp / "trainer_state.json", {
        "stage": stage, "step": step, "optimizer": opt_meta, "train_config": asdict(cfg), **extra,
    })
    publish_dir(tmp, final)
    atomic_write_json(root / "latest.json", {"stage": stage, "step": step, "path": final.name})
    # Keep the newest few of this stage.
    mine = sorted(p for p in root.glob(f"{stage}-*") if p.is_dir())
    for old in mine[: -cfg.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    return final


# The exact names of the temporaries a training run makes (nothing else is ever deleted on --resume): the export
# and checkpoint staging directories, and checkpoints.atomic_write's ``.<file>.<8 random chars>.tmp`` of the files
# train writes there. A user's own ``.tmp/`` or ``notes.tmp.txt`` in --out matches none of them.
_OWN_TEMP_NAMES = {
    "": re.compile(r"\.tmp-export-\d+|\.(config\.json|model\.safetensors|start_frames\.safetensors)\.[a-z0-9_]{8}\.tmp"),
    "checkpoints": re.compile(r"\.tmp-(autoencoder|dynamics)-\d{7}-\d+|\.latest\.json\.[a-z0-9_]{8}\.tmp"),
    "samples": re.compile(r"\.(autoencoder|dynamics)-\d{7}\.gif\.[a-z0-9_]{8}\.tmp"),
}


def remove_stale_temp_files(out: Path) -> list[str]:
    """Delete the temp files/dirs a killed run left in ``out`` and ``out/checkpoints``: only names matching the
    exact patterns train itself creates (never pointed to by ``latest.json``). Called on ``--resume``; returns
    what was removed."""
    removed = []
    for sub, pattern in _OWN_TEMP_NAMES.items():
        directory = out / sub if sub else out
        if not directory.is_dir():
            continue
        for path in sorted(directory.iterdir()):
            if pattern.fullmatch(path.name) and not path.is_symlink():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
                removed.append(str(path))
    return removed


# TrainConfig fields a --resume must agree on with the run it continues (flag names for messages). The others
# (--out, --resume, --stop-after, --checkpoint-every, --sample-every, logging, progress, start frames) change no
# weight and are applied as given.
_RESUME_MUST_MATCH = {
    "stage": "stage", "preset": "--preset", "init": "--init", "steps": "--steps", "ae_steps": "--ae-steps",
    "batch_size": "--batch-size", "window": "--window", "lr": "--lr", "ae_lr": "--ae-lr", "seed": "--seed",
    "dtype": "--dtype", "self_forcing": "--self-forcing", "self_forcing_frames": "--self-forcing-frames",
    "still_windows": "--still-windows", "streaming": "--streaming", "own_history": "--own-history",
    "one_step_fraction": "--one-step-fraction", "burn_in": "--burn-in", "own_history_grad": "--own-history-grad",
    "release_weight": "--release-weight", "stop_windows": "--stop-windows", "adversarial": "--adversarial",
    "critic_reads": "--critic-reads", "critic_warmup": "--critic-warmup", "gradient_difference": "--gradient-difference",
    "memory_rollouts": "--memory-rollouts", "memory_context": "--memory-context",
    "memory_depth_frozen": "--memory-depth-frozen", "view_pairs": "--view-pairs",
    "termination_windows": "--termination-windows", "termination_reset_share": "--termination-reset-share",
    "termination_reset_horizon": "--termination-reset-horizon", "termination_real_data": "--termination-real-data",
    "termination_real_pretrain_steps": "--termination-real-pretrain-steps",
    "stop_coast": "--stop-coast", "release_windows": "--release-windows", "terminal_windows": "--terminal-windows",
    "reward_kind": "--reward-kind",
    "config_overrides": "--set", "weight_decay": "--weight-decay", "warmup": "--warmup",
    "min_lr_ratio": "--min-lr-ratio", "grad_clip": "--grad-clip", "ema_decay": "--ema-decay", "camera": "--camera",
    "cache_latents": "--cache-latents",
}


def check_resume_matches(cfg: TrainConfig, resume_from: dict) -> None:
    """Refuse a ``--resume`` whose options differ from those of the run it continues, naming each one."""
    saved = resume_from["state"].get("train_config") or {}

    def norm(value: Any) -> Any:
        return json.loads(json.dumps(value))  # tuples and lists compare equal, as after the JSON round trip

    differ = [f"{flag} {norm(getattr(cfg, name))!r} (the run has {norm(saved[name])!r})"
              for name, flag in _RESUME_MUST_MATCH.items()
              if name in saved and norm(getattr(cfg, name)) != norm(saved[name])]
    data_path = resume_from["state"].get("data_path")
    here = str(Path(cfg.data).resolve())
    if data_path is not None and data_path != here:
        differ.insert(0, f"--data {cfg.data!r} (the run trains on {data_path!r})")
    elif data_path is None and "data" in saved and str(Path(saved["data"]).resolve()) != here:
        differ.insert(0, f"--data {cfg.data!r} (the run has {saved['data']!r})")
    if differ:
        raise TrainingError(f"--resume: {'; '.join(differ)}: a resumed run continues with the options it was started "
                            f"with; give the same ones, or train into a new --out")


def latest_checkpoint(out: Path) -> dict | None:
    pointer = out / "checkpoints" / "latest.json"
    if not pointer.is_file():
        return None
    info = json.loads(pointer.read_text())
    path = out / "checkpoints" / info["path"]
    if not (path / "trainer_state.json").is_file():
        raise TrainingError(f"--resume: {pointer} points at {path}, which is incomplete; delete it to start over")
    info["dir"] = path
    info["state"] = json.loads((path / "trainer_state.json").read_text())
    return info


def export_model(model: nn.Module, ema: EMA | None, out: Path) -> None:
    """Write the usable model (EMA weights) to ``out/config.json`` + ``out/model.safetensors``, file by file atomically
    (weights first): the files ``model.save_pretrained(out)`` writes, with the EMA weights in place of the model's."""
    tensors = dict(model.state_dict())
    if ema is not None:
        for name, value in ema.shadow.items():
            tensors[name] = value.to(tensors[name].dtype)
    write_checkpoint(out, type(model).__name__, model.config, tensors)


# ------------------------------------------------------------------------------------ data


def batch_to_torch(batch: dict, device: torch.device) -> dict:
    out = {}
    for k, v in batch.items():
        keep_numpy = k in ("episode", "start")  # indices for the latent cache
        out[k] = torch.from_numpy(np.ascontiguousarray(v)).to(device) if isinstance(v, np.ndarray) and not keep_numpy else v
    return out


def key_releases(dataset: Any) -> np.ndarray:
    """Step indices (in ``dataset.step_column`` order) where the keys are let go: a zero action right after a non-zero
    one of the same episode (Box actions)."""
    actions = dataset.step_column("actions")
    release = released(actions.reshape(len(actions), -1))
    release[np.concatenate([[0], np.cumsum(dataset.episode_steps)[:-1]])] = False  # across an episode boundary
    return np.flatnonzero(release)


def data_stream(dataset: Any, cfg: TrainConfig, stage: str, start: int) -> Iterator[dict]:
    # Each rank reads its own deterministic stream; batch i of rank r is a pure function of (seed, stage, r, i).
    seed = cfg.seed * 1_000 + STAGES.index(stage) * 100 + rank()
    window = 1 if stage == "autoencoder" and dataset.frames_per_step == 1 else cfg.window
    if stage in ("memory", "views", "termination"):  # its frames come from the pool drawn before the stage: a batch
        # sets its size
        window = 1
    focus: dict[str, Any] = {}
    if stage == "dynamics" and cfg.release_windows > 0:  # the release where the loss sees it: after the burn-in
        focus = dict(focus=key_releases(dataset), focus_fraction=cfg.release_windows,
                     focus_at=(min(cfg.burn_in, window - 1) if cfg.streaming else 0, window))
    if stage == "reward" and cfg.terminal_windows > 0:  # the ending anywhere in the window
        focus = dict(focus=np.flatnonzero(dataset.step_column("terminated")), focus_fraction=cfg.terminal_windows)
    return dataset.iter_windows(steps=window, batch_size=cfg.batch_size, seed=seed, start_index=start, **focus)


# ------------------------------------------------------------------------------------ samples


@torch.no_grad()
def write_sample(model: nn.Module, batch: dict, stage: str, path: Path) -> None:
    """A GIF of real | model side by side: reconstructions (autoencoder) or a dream rollout (dynamics)."""
    import imageio.v3 as iio

    was_training = model.training
    model.eval()
    frames = batch["frames"][:1]  # [1, T, H, W, 3]
    if stage == "autoencoder":
        fake = model.decode(model.encode(frames))
    else:
        session = DreamSession(model, dtype="float32")
        generator = session.generator(0)
        prompt = batch.get("descriptions", [None])[0] if model.config.text_width else None
        state, _, _ = session.start(1, generator, latents=model.encode(frames[:, :1]),
                                    prompt=None if prompt is None else [prompt])
        latents = [state.latent]
        for t in range(batch["actions"].shape[1]):
            out = session.step(state, batch["actions"][:, t], generator, decode=False)
            state = out.state
            latents.append(out.latent)
        fake = model.decode(torch.stack(latents, dim=1))[:, : frames.shape[1]]
    real = frames[0].cpu().numpy()
    fake = fake[0].cpu().numpy()[: len(real)]
    video = np.concatenate([real[: len(fake)], fake], axis=2)
    video = np.repeat(np.repeat(video, 2, axis=1), 2, axis=2)  # 2x for visibility
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: iio.imwrite(tmp, video, extension=".gif", duration=100, loop=0))
    model.train(was_training)


# ------------------------------------------------------------------------------------ one stage


def train_stage(model: nn.Module, dataset: Any, cfg: TrainConfig, stage: str, total_steps: int,
                device: torch.device, resume_from: dict | None) -> None:
    from tqdm import tqdm

    out = Path(cfg.out)
    params = stage_parameters(model, stage)
    if stage == "memory" and cfg.memory_depth_frozen:  # the gate alone
        params = {k: p for k, p in params.items() if not k.startswith("frame_memory.depth.")}
    for name, p in model.named_parameters():
        p.requires_grad_(name in params)
    decay = [p for k, p in params.items() if p.ndim >= 2]
    no_decay = [p for k, p in params.items() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.99),
    )
    ema = EMA(params, cfg.ema_decay)
    generator = torch.Generator().manual_seed(cfg.seed * 7919 + STAGES.index(stage) * 31 + rank())
    critic = critic_opt = None
    if stage == "dynamics" and cfg.adversarial > 0:
        from neuralsim.critic import FrameCritic, LatentCritic

        with torch.random.fork_rng():  # its initial weights from the seed, not from the model's draws
            torch.manual_seed(cfg.seed * 7919 + 17)
            critic = (LatentCritic(model.config.latent_channels) if cfg.critic_reads == "latents"
                      else FrameCritic(3 * model.config.frames_per_latent)).to(device)
        critic_opt = torch.optim.AdamW(critic.parameters(), lr=cfg.lr, betas=(0.5, 0.9), weight_decay=0.0)
    start = 0
    if resume_from is not None and resume_from["stage"] == stage:
        from safetensors.torch import load_file

        ckpt = resume_from["dir"]
        model.load_state_dict(read_weights(ckpt / "model"), strict=True)
        ema.shadow = {k: v.float() for k, v in load_file(ckpt / "ema.safetensors").items()}
        opt_tensors = load_file(ckpt / "optimizer.safetensors")
        generator.set_state(opt_tensors.pop("rng.noise"))
        _optimizer_from_tensors(opt, opt_tensors, resume_from["state"]["optimizer"])
        if critic is not None:
            if not (ckpt / "critic.safetensors").is_file():
                raise TrainingError(f"--resume --adversarial: {ckpt} holds no critic.safetensors (the run was started "
                                    "without --adversarial); give the options it was started with, or train into a new --out")
            saved = load_file(ckpt / "critic.safetensors")
            critic.load_state_dict({k[len("weights."):]: v for k, v in saved.items() if k.startswith("weights.")})
            _optimizer_from_tensors(critic_opt, {k[len("optimizer."):]: v for k, v in saved.items()
                                                 if k.startswith("optimizer.")}, resume_from["state"]["critic_optimizer"])
        start = int(resume_from["state"]["step"])
        if rank() == 0:
            print(f"resuming {stage} from step {start} ({ckpt})", flush=True)
    if start >= total_steps:  # finished before the interruption: continue, as an uninterrupted run does, from its EMA
        _load_ema(model, ema)
        return

    cache = None
    pool = None
    if stage == "views":
        t0 = time.perf_counter()
        pool = ViewPool(model, dataset, cfg.view_pairs, seed=cfg.seed)
        if rank() == 0:
            print(f"{len(pool)} pairs of views of one place encoded in {time.perf_counter() - t0:.0f} s", flush=True)
    if stage == "termination":
        from neuralsim.data import Dataset

        t0 = time.perf_counter()
        pool = TerminationPool(model, dataset, cfg.termination_windows, cfg.window, seed=cfg.seed,
                               reset_share=cfg.termination_reset_share, reset_horizon=cfg.termination_reset_horizon,
                               real_data=Dataset(cfg.termination_real_data) if cfg.termination_real_data else None)
        if rank() == 0:
            print(f"{cfg.termination_windows} windows dreamed in {time.perf_counter() - t0:.0f} s: {len(pool)} frames to "
                  f"train on ({int(pool.labels.sum())} of them episode ends), {len(pool.held_labels)} held out "
                  f"({int(pool.held_labels.sum())})", flush=True)
            if pool.extra is not None:
                print(f"--termination-real-data: {len(pool.extra_labels)} real frames ({int(pool.extra_labels.sum())} "
                      "episode ends)", flush=True)
    if stage == "memory":
        t0 = time.perf_counter()
        pool = DreamPool(model, dataset, cfg.memory_rollouts, cfg.memory_context, cfg.window, seed=cfg.seed)
        if rank() == 0:
            print(f"{cfg.memory_rollouts} windows dreamed ({cfg.window} steps each after {cfg.memory_context} real frames) "
                  f"in {time.perf_counter() - t0:.0f} s", flush=True)
    if stage in ("dynamics", "reward", "prompt") and cfg.cache_latents:
        t0 = time.perf_counter()
        model.eval()
        cache = LatentCache(model, dataset, store=cfg.latent_cache_dir if rank() == 0 else None)
        if rank() == 0:
            how = f"loaded from {cache.loaded_from}" if cache.loaded_from else "encoded into the latent cache"
            print(f"{dataset.num_episodes} episodes {how} in {time.perf_counter() - t0:.0f} s", flush=True)
    loss_module: nn.Module = StageLoss(model, stage, cache, cfg.self_forcing, cfg.self_forcing_frames, cfg.still_windows,
                                            cfg.streaming, cfg.own_history, cfg.one_step_fraction, cfg.burn_in,
                                            cfg.stop_windows, cfg.stop_coast, cfg.own_history_grad, cfg.release_weight,
                                            critic, cfg.adversarial, cfg.gradient_difference)
    loss_module.pool, loss_module.memory_depth_frozen = pool, cfg.memory_depth_frozen
    if world_size() > 1:
        loss_module = nn.parallel.DistributedDataParallel(loss_module, find_unused_parameters=True)
    dtype = training_dtype(cfg.dtype, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)

    log_path = out / "logs" / f"{stage}.csv"
    writer = None
    if rank() == 0:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "logs" / "tensorboard"))
        except ImportError:  # TensorBoard is optional ([tensorboard] extra); the CSV log always exists
            writer = None
    stream = data_stream(dataset, cfg, stage, start)
    sample_batch = batch_to_torch(next(dataset.iter_windows(steps=cfg.window, batch_size=1, seed=cfg.seed + 999)), device)
    model.train()
    bar = tqdm(range(start, total_steps), initial=start, total=total_steps, desc=stage,
               disable=not cfg.progress or rank() != 0, dynamic_ncols=True)
    t_last, n_last = time.perf_counter(), 0
    for step in bar:
        batch = batch_to_torch(next(stream), device)
        lr = lr_at(step, cfg, total_steps, stage)
        for group in opt.param_groups:
            group["lr"] = lr
        for group in critic_opt.param_groups if critic_opt is not None else []:
            group["lr"] = lr * CRITIC_LR_SCALE
        warming = critic is not None and step < cfg.critic_warmup  # the critic alone; the dynamics waits
        getattr(loss_module, "module", loss_module).critic_only = warming
        getattr(loss_module, "module", loss_module).real_only = step < cfg.termination_real_pretrain_steps
        with autocast:
            loss, logs = loss_module(batch, generator)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{stage} loss is {loss.item()} at step {step}; lower --lr or check the data")
        opt.zero_grad(set_to_none=True)
        if critic_opt is not None:
            critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.grad_clip)
        if not warming:
            opt.step()
            ema.update(params, step)
        if critic_opt is not None:
            critic_opt.step()
        n_last += cfg.batch_size * world_size()
        done = step + 1
        if rank() == 0 and (done % cfg.log_every == 0 or done == total_steps):
            now = time.perf_counter()
            rate = n_last / max(now - t_last, 1e-9)
            t_last, n_last = now, 0
            row = {"step": done, "loss": float(loss.detach()), "lr": lr, "grad_norm": float(grad_norm),
                   "samples_per_s": rate, **{k: float(v) for k, v in logs.items()}}
            new_file = not log_path.exists()
            with open(log_path, "a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(row))
                if new_file:
                    w.writeheader()
                w.writerow(row)
            if writer is not None:
                for k, v in row.items():
                    if k != "step":
                        writer.add_scalar(f"{stage}/{k}", v, done)
            bar.set_postfix(loss=f"{row['loss']:.4f}", sps=f"{rate:.0f}")
        if rank() == 0 and cfg.sample_every and stage not in ("reward", "prompt", "memory", "views", "termination") and (done % cfg.sample_every == 0 or done == total_steps):
            write_sample(model, sample_batch, stage, out / "samples" / f"{stage}-{done:07d}.gif")
        if stage == "termination" and done == total_steps:  # the threshold fitted on held-out dreams, then exported
            shift, before, after = pool.fit_threshold(_with_ema(model, ema).termination_detector)
            name = model.termination_detector.OUTPUT_BIAS
            ema.shadow[f"termination_detector.{name}"] += shift
            if rank() == 0:
                print(f"the detector's threshold fitted on {len(pool.held_labels)} held-out dreamed frames: logit "
                      f"shift {shift:+.2f}, F1 {before:.3f} -> {after:.3f}", flush=True)
        if done % cfg.checkpoint_every == 0 or done == total_steps:
            if rank() == 0:
                save_checkpoint(out, stage, done, model, ema, opt, generator, cfg, {
                    "completed": done == total_steps, "data_path": str(Path(cfg.data).resolve())},
                    critic=None if critic is None else (critic, critic_opt))
                export_model(_with_ema(model, ema), None, out)
            if world_size() > 1:
                dist.barrier()
        if cfg.stop_after is not None and cfg.stop_after <= done < total_steps and done % cfg.checkpoint_every == 0:
            bar.close()
            raise StopTraining(done)
    bar.close()
    if writer is not None:
        writer.close()
    _load_ema(model, ema)  # continue with the EMA weights of this stage (what was exported)


def _load_ema(model: nn.Module, ema: EMA) -> None:
    """Copy the EMA weights into ``model`` (the live model continues from them after a stage)."""
    with torch.no_grad():
        named = dict(model.named_parameters())
        for k, v in ema.shadow.items():
            named[k].copy_(v.to(named[k].dtype))


def _with_ema(model: nn.Module, ema: EMA) -> nn.Module:
    """A copy of ``model`` carrying the EMA weights (for export; the live model keeps training)."""
    import copy

    clone = copy.deepcopy(model)
    with torch.no_grad():
        named = dict(clone.named_parameters())
        for k, v in ema.shadow.items():
            named[k].copy_(v.to(named[k].dtype))
    return clone


# ------------------------------------------------------------------------------------ the run


@torch.no_grad()
def latent_statistics(model: nn.Module, dataset: Any, cfg: TrainConfig, batches: int = 8) -> tuple[float, float]:
    """``(scale, shift) = (1 / std, mean)`` of raw latents over a sample of the dataset: the model stores
    ``normalised = (raw - shift) * scale`` so the dynamics sees unit-variance latents."""
    model.set_latent_normalization(scale=1.0, shift=0.0)
    stream = dataset.iter_windows(steps=cfg.window, batch_size=cfg.batch_size, seed=cfg.seed + 12345)
    values = [model.encode(torch.from_numpy(next(stream)["frames"])).float().flatten() for _ in range(batches)]
    flat = torch.cat(values)
    return 1.0 / float(flat.std().clamp_min(1e-4)), float(flat.mean())


def save_start_frames(dataset: Any, out: Path, count: int) -> None:
    """Ship the first frames of ``count`` episodes (and their descriptions) as the env's default start set."""
    n = min(count, dataset.num_episodes)
    frames, descriptions = [], []
    for i in range(n):
        episode = dataset.episode(i)
        frames.append(episode["frames"][0])
        descriptions.append(episode.get("description", ""))
    write_start_frames(out, np.stack(frames), descriptions)


def model_config(cfg: TrainConfig, dataset: Any) -> Any:
    """The ``WorldModelConfig`` a fresh run builds: the preset, the dataset's world, then ``--set`` overrides."""
    from neuralsim.config import WorldModelConfig

    manifest = dataset.manifest
    camera_spec = manifest.get("camera")  # recorded by `collect` for camera worlds (e.g. the room)
    camera = cfg.camera if cfg.camera is not None else camera_spec is not None
    overrides: dict[str, Any] = dict(
        image_size=tuple(dataset.image_size),
        action_spec=dataset.action_spec,
        frames_per_latent=dataset.frames_per_step,
        camera=camera,
    )
    if not camera:
        overrides["camera_branch"] = False  # the camera branch reads Plücker rays, which need camera actions
        overrides["prev_frame_warp"] = False  # and the warp turns the previous frame with the camera
    if camera and camera_spec:
        # collect steps the env once per recorded frame, so the env's per-step motion is the per-frame motion.
        overrides.update(camera_translation_speed=camera_spec["translation_speed"],
                         camera_rotation_speed_deg=camera_spec["rotation_speed_deg"],
                         camera_fovy_deg=camera_spec["fovy_deg"])
    overrides.update(cfg.config_overrides)
    config = WorldModelConfig.from_preset(cfg.preset, **overrides)
    config.provenance = {**getattr(config, "provenance", {}), "dataset": str(Path(cfg.data).resolve()),
                         "env_id": manifest.get("env_id"), "env_kwargs": manifest.get("env_kwargs", {}),
                         "resize": getattr(dataset, "resize", "squash"),  # how real frames become image_size
                         "preset": cfg.preset}
    return config


def build_model(cfg: TrainConfig, dataset: Any) -> nn.Module:
    from neuralsim.model import WorldModel

    config = model_config(cfg, dataset)
    # Seeded initialisation without touching the caller's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return WorldModel(config)


def check_frame_size(dataset: Any, cfg: TrainConfig) -> None:
    """Refuse, naming the flag that fixes it, a dataset whose frame size the preset cannot build a model for."""
    from neuralsim.config import WorldModelConfig

    size = tuple(dataset.image_size)
    overrides = {k: v for k, v in cfg.config_overrides.items() if k != "image_size"}
    try:
        preset = WorldModelConfig.from_preset(cfg.preset, **overrides)
    except (ValueError, TypeError, KeyError):
        return  # a bad --preset or --set: build_model reports it
    try:
        WorldModelConfig.from_preset(cfg.preset, **{**overrides, "image_size": size})
    except (ValueError, TypeError) as exc:
        if "image_size" not in str(exc):
            return  # not about the frame size: build_model reports it
        stride = int(preset.spatial_stride)
        native = dataset.manifest.get("native_image_size")
        raise TrainingError(
            f"--data {cfg.data!r} holds {size[0]}x{size[1]} frames"
            + (f" (the env renders {native[0]}x{native[1]})" if native and list(native) != list(size) else "")
            + f", which the {cfg.preset!r} preset cannot use: height and width must be multiples of {stride}. "
            f"Collect the dataset again with `neuralsim collect --image-size 64` (the default; or HxW, multiples of "
            f"{stride}) and `--resize pad|crop|squash` for the aspect ratio") from None


def validate(cfg: TrainConfig) -> Any:
    """Every check that can fail, before any work starts. Returns the opened dataset."""
    from neuralsim.data import Dataset, DatasetError

    if cfg.stage not in STAGES + ("all",):
        raise TrainingError(f"stage must be one of {', '.join(STAGES)}, all; got {cfg.stage!r}")
    if cfg.dtype not in TRAIN_DTYPES:  # resolved by neuralsim.device.resolve_dtype once the device is known
        raise TrainingError(f"--dtype must be auto, float32 or bfloat16, got {cfg.dtype!r}")
    for name in ("steps", "batch_size", "window", "checkpoint_every", "log_every"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or value <= 0 or value > MAX_STEPS:
            raise TrainingError(f"--{name.replace('_', '-')} must be an integer in [1, {MAX_STEPS}], got {value!r}")
    if cfg.ae_steps is not None and not (0 < cfg.ae_steps <= MAX_STEPS):
        raise TrainingError(f"--ae-steps must be an integer in [1, {MAX_STEPS}], got {cfg.ae_steps!r}")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or not 0 <= cfg.seed <= MAX_SEED:
        raise TrainingError(f"--seed must be an integer in [0, {MAX_SEED}], got {cfg.seed!r}")
    if not (0 < cfg.lr < 1):
        raise TrainingError(f"--lr must be in (0, 1), got {cfg.lr}")
    if isinstance(cfg.still_windows, bool) or not (isinstance(cfg.still_windows, (int, float)) and 0.0 <= cfg.still_windows < 1.0):
        raise TrainingError(f"--still-windows must be a fraction in [0, 1), got {cfg.still_windows!r}")
    if isinstance(cfg.stop_windows, bool) or not (isinstance(cfg.stop_windows, (int, float)) and 0.0 <= cfg.stop_windows < 1.0):
        raise TrainingError(f"--stop-windows must be a fraction in [0, 1), got {cfg.stop_windows!r}")
    if isinstance(cfg.stop_coast, bool) or not (isinstance(cfg.stop_coast, (int, float)) and 0.0 <= cfg.stop_coast < 1.0):
        raise TrainingError(f"--stop-coast must be a fraction in [0, 1), got {cfg.stop_coast!r}")
    if isinstance(cfg.release_windows, bool) or not (isinstance(cfg.release_windows, (int, float))
                                                     and 0.0 <= cfg.release_windows <= 1.0):
        raise TrainingError(f"--release-windows must be a fraction in [0, 1], got {cfg.release_windows!r}")
    if cfg.reward_kind not in ("recurrent", "target"):
        raise TrainingError(f"--reward-kind must be recurrent or target, got {cfg.reward_kind!r}")
    if isinstance(cfg.terminal_windows, bool) or not (isinstance(cfg.terminal_windows, (int, float))
                                                      and 0.0 <= cfg.terminal_windows <= 1.0):
        raise TrainingError(f"--terminal-windows must be a fraction in [0, 1], got {cfg.terminal_windows!r}")
    if cfg.stop_coast > 0 and cfg.stop_windows == 0:
        raise TrainingError("--stop-coast shapes the stop windows: it needs --stop-windows > 0")
    if cfg.stop_windows > 0 and not cfg.cache_latents:
        raise TrainingError("--stop-windows needs the latent cache (cache_latents=True)")
    if cfg.still_windows > 0 and not cfg.cache_latents:
        raise TrainingError("--still-windows needs the latent cache (cache_latents=True)")
    if not (isinstance(cfg.self_forcing, (int, float)) and 0.0 <= cfg.self_forcing <= 1.0):
        raise TrainingError(f"--self-forcing must be a fraction in [0, 1], got {cfg.self_forcing!r}")
    if cfg.self_forcing > 0 and cfg.stage != "reward" and not (isinstance(cfg.self_forcing_frames, int) and 1 <= cfg.self_forcing_frames <= cfg.window - 1):
        raise TrainingError(f"--self-forcing-frames must be an integer in [1, --window - 1 = {cfg.window - 1}], "
                            f"got {cfg.self_forcing_frames!r}")
    for name in ("own_history", "one_step_fraction"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
            raise TrainingError(f"--{name.replace('_', '-')} must be a fraction in [0, 1], got {value!r}")
    if isinstance(cfg.burn_in, bool) or not isinstance(cfg.burn_in, int) or cfg.burn_in < 0:
        raise TrainingError(f"--burn-in must be an int >= 0 (frames that only build the state), got {cfg.burn_in!r}")
    if isinstance(cfg.release_weight, bool) or not (isinstance(cfg.release_weight, (int, float)) and cfg.release_weight >= 0):
        raise TrainingError(f"--release-weight must be a number >= 0, got {cfg.release_weight!r}")
    if isinstance(cfg.adversarial, bool) or not (isinstance(cfg.adversarial, (int, float)) and cfg.adversarial >= 0):
        raise TrainingError(f"--adversarial must be a number >= 0 (the critic term's weight), got {cfg.adversarial!r}")
    if cfg.critic_reads not in ("latents", "frames"):
        raise TrainingError(f"--critic-reads must be latents or frames, got {cfg.critic_reads!r}")
    if isinstance(cfg.critic_warmup, bool) or not isinstance(cfg.critic_warmup, int) or cfg.critic_warmup < 0:
        raise TrainingError(f"--critic-warmup must be an int >= 0 (steps that train the critic alone), got {cfg.critic_warmup!r}")
    if cfg.critic_warmup and not cfg.adversarial:
        raise TrainingError("--critic-warmup warms up the critic of --adversarial: it needs --adversarial W > 0")
    if isinstance(cfg.gradient_difference, bool) or not (isinstance(cfg.gradient_difference, (int, float))
                                                         and cfg.gradient_difference >= 0):
        raise TrainingError(f"--gradient-difference must be a number >= 0 (the edge term's weight), got "
                            f"{cfg.gradient_difference!r}")
    if cfg.gradient_difference and not (cfg.streaming and cfg.stage in ("dynamics", "all")):
        raise TrainingError("--gradient-difference compares the streaming loss's one-step samples with the real frames: "
                            f"it needs `train dynamics --streaming`, got stage={cfg.stage!r}, streaming={cfg.streaming!r}")
    if cfg.adversarial and not (cfg.streaming and cfg.stage in ("dynamics", "all")):
        raise TrainingError("--adversarial scores the streaming loss's one-step samples: it needs `train dynamics "
                            f"--streaming`, got stage={cfg.stage!r}, streaming={cfg.streaming!r}")
    if cfg.release_weight and not cfg.streaming:
        raise TrainingError("--release-weight weighs the streaming loss's frame after a release: it needs --streaming")
    if cfg.own_history_grad and not (cfg.streaming and cfg.own_history > 0):
        raise TrainingError("--own-history-grad backpropagates through the model's own history: it needs --streaming and "
                            f"--own-history > 0, got streaming={cfg.streaming!r}, own_history={cfg.own_history!r}")
    if cfg.burn_in and not cfg.streaming:
        raise TrainingError("--burn-in needs --streaming (the frame-by-frame loss that holds a state)")
    if cfg.burn_in and cfg.burn_in > cfg.window - 2:
        raise TrainingError(f"--burn-in must leave at least 2 trained frames of the window: at most --window - 2 = "
                            f"{cfg.window - 2}, got {cfg.burn_in}")
    if cfg.streaming and cfg.self_forcing > 0:
        raise TrainingError("--streaming and --self-forcing are two ways of training on own rollouts: use "
                            "--own-history with --streaming")
    if cfg.ae_lr is not None and not (0 < cfg.ae_lr < 1):
        raise TrainingError(f"--ae-lr must be in (0, 1), got {cfg.ae_lr}")
    if not cfg.data:
        raise TrainingError("--data is required: a dataset directory made by `neuralsim collect`")
    data_path = Path(cfg.data)
    if not (data_path / "manifest.json").is_file():
        raise TrainingError(f"--data {cfg.data!r} is not a dataset: no manifest.json (make one with `neuralsim collect`)")
    try:
        dataset = Dataset(data_path)
    except DatasetError as exc:  # torn/missing shard, shards that disagree with the manifest
        raise TrainingError(f"--data {cfg.data!r}: {exc}") from None
    if dataset.num_episodes == 0 or dataset.num_steps == 0:
        raise TrainingError(f"--data {cfg.data!r} is empty: 0 episodes")
    if not cfg.init:
        check_frame_size(dataset, cfg)
        try:  # a bad --preset or --set is refused here, before --out exists
            model_config(cfg, dataset)
        except (ValueError, TypeError, KeyError) as exc:
            from neuralsim.config import PRESETS

            option = f"--preset {cfg.preset!r}" if cfg.preset not in PRESETS else "--set " + " ".join(
                f"{k}={json.dumps(v)}" for k, v in cfg.config_overrides.items())
            raise TrainingError(f"{option}: {exc}") from None
    check_batch_memory(dataset, cfg)
    for name in ("memory_rollouts", "memory_context"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TrainingError(f"--{name.replace('_', '-')} must be an int >= 1, got {value!r}")
    if cfg.stage == "memory" and int(dataset.episode_steps.max(initial=0)) < cfg.memory_context - 1 + cfg.window:
        raise TrainingError(f"train memory dreams windows of --memory-context {cfg.memory_context} real frames and "
                            f"--window {cfg.window} steps, {cfg.memory_context - 1 + cfg.window} steps in all; the "
                            f"longest episode of --data {cfg.data!r} has {int(dataset.episode_steps.max(initial=0))}")
    if cfg.stage == "views" and not (dataset.has_poses and any(dataset.descriptions)):
        raise TrainingError(f"--data {cfg.data!r} has no camera poses or no descriptions: `train views` pairs frames of "
                            "one place at two headings by their poses and learns them from the env's "
                            "info['description'] (collect an env that writes both, e.g. NeuralSimRoom-v0 with --policy turn)")
    if (isinstance(cfg.termination_windows, bool) or not isinstance(cfg.termination_windows, int)
            or cfg.termination_windows < 1):
        raise TrainingError(f"--termination-windows must be an int >= 1, got {cfg.termination_windows!r}")
    if (isinstance(cfg.termination_reset_share, bool) or not isinstance(cfg.termination_reset_share, (int, float))
            or not 0.0 <= cfg.termination_reset_share <= 1.0):
        raise TrainingError(f"--termination-reset-share must be a number in [0, 1], got {cfg.termination_reset_share!r}")
    if (isinstance(cfg.termination_reset_horizon, bool) or not isinstance(cfg.termination_reset_horizon, int)
            or cfg.termination_reset_horizon < 1):
        raise TrainingError(f"--termination-reset-horizon must be an int >= 1, got {cfg.termination_reset_horizon!r}")
    if cfg.stage == "termination" and not dataset.step_column("terminated").any():
        raise TrainingError(f"--data {cfg.data!r} has no episode that terminates: `train termination` learns what the "
                            "frame that ends an episode looks like (collect episodes that reach the env's end, e.g. "
                            "NeuralSimRoom-v0 with --policy scripted)")
    if isinstance(cfg.view_pairs, bool) or not isinstance(cfg.view_pairs, int) or cfg.view_pairs < 1:
        raise TrainingError(f"--view-pairs must be an int >= 1, got {cfg.view_pairs!r}")
    if cfg.stage == "prompt" and not any(dataset.descriptions):
        raise TrainingError(f"--data {cfg.data!r} has no descriptions: `train prompt` learns first frames from the "
                            "env's info['description'] (collect an env that writes one, e.g. NeuralSimRoom-v0)")
    if cfg.still_windows > 0 and dataset.action_spec.get("type") != "box":
        raise TrainingError(f"--still-windows holds a frame under the zero action, which needs Box actions; --data "
                            f"{cfg.data!r} has {dataset.action_spec.get('type')!r} actions")
    if cfg.release_weight > 0 and dataset.action_spec.get("type") != "box":
        raise TrainingError(f"--release-weight finds where the keys are let go (a zero action), which needs Box "
                            f"actions; --data {cfg.data!r} has {dataset.action_spec.get('type')!r} actions")
    if cfg.stop_windows > 0 and dataset.action_spec.get("type") != "box":
        raise TrainingError(f"--stop-windows holds a frame under the zero action, which needs Box actions; --data "
                            f"{cfg.data!r} has {dataset.action_spec.get('type')!r} actions")
    if cfg.release_windows > 0 and cfg.stage in ("dynamics", "all"):
        if dataset.action_spec.get("type") != "box":
            raise TrainingError(f"--release-windows finds where the keys are let go (a zero action), which needs Box "
                                f"actions; --data {cfg.data!r} has {dataset.action_spec.get('type')!r} actions")
        if not len(key_releases(dataset)):
            raise TrainingError(f"--release-windows: --data {cfg.data!r} never lets go of the keys (no zero action "
                                "after a non-zero one); collect with a policy that idles, e.g. --policy explore")
    if cfg.terminal_windows > 0 and cfg.stage == "reward" and not dataset.step_column("terminated").any():
        raise TrainingError(f"--terminal-windows: --data {cfg.data!r} has no step that ends an episode (terminated); "
                            "collect episodes that reach the task's end")
    if (isinstance(cfg.termination_real_pretrain_steps, bool) or not isinstance(cfg.termination_real_pretrain_steps, int)
            or not 0 <= cfg.termination_real_pretrain_steps <= cfg.steps):
        raise TrainingError(f"--termination-real-pretrain-steps must be an int in [0, --steps {cfg.steps}], got "
                            f"{cfg.termination_real_pretrain_steps!r}")
    if cfg.termination_real_pretrain_steps and not cfg.termination_real_data:
        raise TrainingError("--termination-real-pretrain-steps trains on the real frames of --termination-real-data: "
                            "give it a dataset of real episodes of the env")
    if cfg.termination_real_data:
        if cfg.stage != "termination":
            raise TrainingError(f"--termination-real-data trains the termination detector: it needs `train termination`, "
                                f"got stage {cfg.stage!r}")
        try:
            real_data = Dataset(cfg.termination_real_data)
        except (DatasetError, FileNotFoundError, ValueError) as exc:
            raise TrainingError(f"--termination-real-data {cfg.termination_real_data!r}: {exc}") from None
        try:
            real_data.validate_for(tuple(dataset.manifest["image_size"]), dataset.action_spec)
        except DatasetError as exc:
            raise TrainingError(f"--termination-real-data {cfg.termination_real_data!r} does not fit --data "
                                f"{cfg.data!r}: {exc}") from None
        if real_data.manifest.get("frames_per_step", 1) != dataset.manifest.get("frames_per_step", 1):
            raise TrainingError(f"--termination-real-data {cfg.termination_real_data!r} records "
                                f"{real_data.manifest.get('frames_per_step', 1)} frames per step, --data {cfg.data!r} "
                                f"{dataset.manifest.get('frames_per_step', 1)}: collect it with the same --frames-per-step")
        if real_data.manifest.get("env_id") != dataset.manifest.get("env_id"):
            raise TrainingError(f"--termination-real-data {cfg.termination_real_data!r} was collected in "
                                f"{real_data.manifest.get('env_id')!r}, --data {cfg.data!r} in "
                                f"{dataset.manifest.get('env_id')!r}: the detector learns one env's endings")
        if not real_data.step_column("terminated").any():
            raise TrainingError(f"--termination-real-data {cfg.termination_real_data!r} has no episode that "
                                "terminates: collect episodes that reach the env's end (e.g. --policy seek,sticky)")
    if cfg.calibration_data:
        if cfg.stage != "reward" or cfg.reward_kind != "target":
            raise TrainingError("--calibration-data fits a target tracker's range calibration: it needs `train reward "
                                f"--reward-kind target`, got stage {cfg.stage!r} with --reward-kind {cfg.reward_kind!r}")
        try:
            held_out = Dataset(cfg.calibration_data)
        except (DatasetError, FileNotFoundError, ValueError) as exc:
            raise TrainingError(f"--calibration-data {cfg.calibration_data!r}: {exc}") from None
        if not (held_out.has_poses and held_out.manifest.get("target_positions")):
            raise TrainingError(f"--calibration-data {cfg.calibration_data!r} records no target positions and camera "
                                "poses; collect it from an env whose info states them (as NeuralSimRoom-v0's does)")
        try:
            held_out.validate_for(tuple(dataset.manifest["image_size"]), dataset.action_spec)
        except DatasetError as exc:
            raise TrainingError(f"--calibration-data {cfg.calibration_data!r} does not fit --data {cfg.data!r}: {exc}") from None
    if cfg.stop_coast > 0 and list(dataset.action_spec.get("shape", ())) != [4]:
        raise TrainingError(f"--stop-coast reads camera actions [forward, strafe_right, yaw_right, pitch_up] (it lets "
                            f"translations coast and turns stop at once); --data {cfg.data!r} has actions of shape "
                            f"{dataset.action_spec.get('shape')}")
    longest = int(dataset.episode_steps.max())
    if cfg.window > longest:
        raise TrainingError(f"--window {cfg.window} is longer than every episode of --data {cfg.data!r} (the longest "
                            f"has {longest} steps); expected --window <= {longest}")
    if cfg.init:  # before --out is created: a bad --init leaves nothing behind
        try:
            init_cfg = read_config(resolve_checkpoint(cfg.init, "--init"))
            dataset.validate_for(tuple(init_cfg.image_size), init_cfg.action_spec)
        except (ValueError, FileNotFoundError) as exc:  # includes DatasetError and invalid JSON
            raise TrainingError(f"--init {cfg.init!r} does not fit --data {cfg.data!r}: {exc}"
                                if isinstance(exc, DatasetError) else str(exc)) from None
    out = Path(cfg.out)
    if not cfg.out:
        raise TrainingError("--out is required: the directory to write the model and checkpoints into")
    ensure_writable_dir(out, "--out", TrainingError, create=False)  # made by train() once the weights are loaded
    return dataset


def reward_kind_overrides(cfg: TrainConfig, manifest: dict) -> dict[str, Any]:
    """The config fields of the reward model ``--reward-kind`` asks for: a target tracker takes the task the data's env
    stated (``task`` in the manifest, from the env's ``task_spec``) and its camera's velocity servo (``camera``)."""
    if cfg.reward_kind == "recurrent":
        return {}
    task = manifest.get("task")
    if not isinstance(task, dict) or task.get("kind") != "reach_target":
        raise TrainingError(f"--reward-kind target needs data whose env states a reach-the-target task (the manifest's "
                            f"'task', from the env's task_spec: NeuralSimRoom-v0 writes one); --data {cfg.data!r} has "
                            f"{'none' if task is None else task!r}")
    servo = {k: (manifest.get("camera") or {}).get(k) for k in TranslationResponse.SPEC_KEYS}
    return {"reward_model_kind": "target", "reward_task": {**task, **{k: v for k, v in servo.items() if v is not None}}}


def init_reward_bonus(model: nn.Module, dataset: Any) -> float:
    """Start a new reward model's success bonus at the data's: the mean reward of the steps that end an episode minus
    that of the others (0 without any). A scalar that AdamW moves by about the learning rate per step would need
    thousands of steps to climb to the room's 10. Returns the value set."""
    if not isinstance(model.reward_model.bonus, nn.Parameter):  # a target tracker: the task states its bonus
        return float(model.reward_model.bonus)
    rewards, ended = dataset.step_column("rewards"), dataset.step_column("terminated")
    bonus = float(rewards[ended].mean() - rewards[~ended].mean()) if ended.any() and (~ended).any() else 0.0
    with torch.no_grad():
        model.reward_model.bonus.fill_(bonus)
    return bonus


def set_range_calibration(model: nn.Module, knots: list[list[float]] | None) -> None:
    """Give a model's target tracker the range calibration ``knots`` (None: none), in its config and its tracker."""
    model.config.reward_range_calibration = knots
    model.reward_model.range_calibration = [tuple(k) for k in knots or []]


@torch.no_grad()
def calibrate_tracker_range(model: nn.Module, dataset: Any, max_frames: int = 32768) -> list[list[float]]:
    """A target tracker's range calibration (:func:`neuralsim.reward.fit_range_calibration`) fitted on ``dataset``'s
    episodes (up to ``max_frames`` latent frames, in episode order): each frame encoded, its target measured by the
    uncalibrated localizer, against the target's true offset from the recorded pose and position; from the task's
    reach radius out."""
    from neuralsim.reward import fit_range_calibration, target_offsets

    tracker, k = model.reward_model, model.config.frames_per_latent
    kept, tracker.range_calibration = tracker.range_calibration, []
    was_training = model.training
    model.eval()
    measured, weights, truth, frames = [], [], [], 0
    try:
        for i in range(dataset.num_episodes):
            ep = dataset.episode(i)
            latents = model.encode(torch.from_numpy(np.ascontiguousarray(ep["frames"]))[None])[0]  # (1 + n, C, h, w)
            index = torch.arange(len(latents)) * k  # the raw frame each latent ends on (its first: frame 0)
            position, weight = tracker.measure(latents.to(model.device).float())
            poses = torch.as_tensor(ep["poses"])[index]
            measured.append(position.cpu())
            weights.append(weight.cpu())
            truth.append(target_offsets(poses, torch.as_tensor(ep["target_positions"])[index]))
            frames += len(latents)
            if frames >= max_frames:
                break
    finally:
        tracker.range_calibration = kept
        model.train(was_training)
    return fit_range_calibration(torch.cat(measured), torch.cat(weights), torch.cat(truth), min_range=tracker.reach)


def _with_overrides(model: nn.Module, overrides: dict[str, Any]) -> nn.Module:
    """``model`` rebuilt with ``--set`` fields changed and its weights kept; refused when a field changes a weight."""
    from neuralsim.model import WorldModel

    option = "--set " + " ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items())
    try:
        config = model.config.replace(**overrides)
        rebuilt = WorldModel(config, text_encoder=model.text_encoder)
    except (ValueError, TypeError, KeyError) as exc:
        raise TrainingError(f"{option}: {exc}") from None
    mine, theirs = rebuilt.state_dict(), model.state_dict()
    # A refiner may be added (its output layer starts at zero, so the model's outputs do not change), a reward model
    # (it only adds predictions), a prompt-start generator or a frame memory (nearly closed at init); every other
    # weight must stay as it is.
    added = sorted(k for k in mine if k not in theirs and (
        (k.startswith("refiner.") and model.config.refiner_channels == 0)
        or (k.startswith("reward_model.") and (model.config.reward_model_channels == 0 or "reward_task" in overrides))
        or (k.startswith("prompt_start.") and model.config.prompt_start_channels == 0)
        or (k.startswith("prompt_views.") and model.config.prompt_view_channels == 0)
        or (k.startswith("termination_detector.") and model.config.termination_detector_channels == 0)
        or (k.startswith("frame_memory.") and model.config.frame_memory_width == 0)
        or (k.startswith("frame_memory.depth.") and model.config.frame_memory_depth_width == 0)
        or (k.startswith("frame_memory.floor_net.") and model.config.frame_memory_floor_net_width == 0)))
    changed = sorted(k for k in set(mine) | set(theirs)
                     if k not in added and (k not in mine or k not in theirs or mine[k].shape != theirs[k].shape))
    if changed:
        raise TrainingError(f"{option} with --init changes the model's weights ({', '.join(changed[:3])}...); "
                            "--init continues a model, so only fields that keep every weight can change (or add a "
                            "refiner, a reward model, a prompt-start generator, a view generator, a frame memory or its depth net: "
                            "refiner_channels, reward_model_channels, prompt_start_channels, prompt_view_channels, "
                            "frame_memory_width, frame_memory_depth_width)")
    missing, _ = rebuilt.load_state_dict(theirs, strict=False)
    assert sorted(missing) == added, (missing, added)
    return rebuilt


def check_batch_memory(dataset: Any, cfg: TrainConfig) -> None:
    """Refuse a --batch-size whose float32 pixels alone would not fit in half of this machine's memory."""
    H, W = dataset.image_size
    frames = cfg.batch_size * (1 + cfg.window * dataset.frames_per_step)
    need = frames * H * W * 3 * 4  # float32 pixels of one batch (the model's activations come on top)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no sysconf: no check
        return
    if need > total // 2:
        fits = max(1, (total // 2) // max(1, need // cfg.batch_size))
        raise TrainingError(f"--batch-size {cfg.batch_size} is too large: one batch of {frames} frames of {H}x{W} needs "
                            f"{need / 2**30:.1f} GiB as float32 pixels alone, more than half of this machine's "
                            f"{total / 2**30:.1f} GiB; expected --batch-size <= {fits} (with --window {cfg.window})")


def train(cfg: TrainConfig) -> Path:
    """Run a training job; returns the output directory (a loadable checkpoint)."""
    from neuralsim.model import WorldModel

    dataset = validate(cfg)
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() else torch.device("cpu")
    if is_distributed() and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    out = Path(cfg.out)
    stages = ALL_STAGES if cfg.stage == "all" else (cfg.stage,)
    existing = latest_checkpoint(out)
    if existing is not None and not cfg.resume and existing["stage"] in stages:
        raise TrainingError(f"--out {cfg.out!r} already holds a {existing['stage']} run; pass --resume to continue it "
                            "or use a new --out")
    # A finished autoencoder run in --out is where `train dynamics` starts, not something to resume.
    resume_from = existing if cfg.resume and existing is not None and existing["stage"] in stages else None
    if resume_from is not None:
        check_resume_matches(cfg, resume_from)  # before anything in --out is touched
    if cfg.resume and rank() == 0:
        for path in remove_stale_temp_files(out):
            print(f"--resume: removed {path} (left by an interrupted run)", flush=True)
    # Which weights to start from: the resumed checkpoint, --init, the out dir (dynamics after autoencoder), or fresh.
    if resume_from is not None:
        model = WorldModel.from_pretrained(resume_from["dir"] / "model")
    elif cfg.init:
        try:  # config.json was checked by validate(); the weights are checked here, still before --out exists
            model = WorldModel.from_pretrained(cfg.init)
        except (ValueError, FileNotFoundError) as exc:
            raise TrainingError(str(exc) if "--init" in str(exc) else f"--init {cfg.init!r}: {exc}") from None
        if cfg.config_overrides:  # --set on a continued model: fields that keep every weight's shape (e.g. a switch)
            overrides = dict(cfg.config_overrides)
            if stages == ("memory",) and model.frame_memory is None and overrides.get("frame_memory_depth_width"):
                overrides.setdefault("frame_memory_width", DEFAULT_FRAME_MEMORY_WIDTH)  # the memory a depth net serves
            with torch.random.fork_rng(devices=[]):  # weights it adds (refiner, reward model) follow --seed
                torch.manual_seed(cfg.seed)
                model = _with_overrides(model, overrides)
    elif stages in (("dynamics",), ("reward",), ("prompt",), ("memory",), ("views",), ("termination",)):
        if not (out / WEIGHTS_NAME).is_file():
            raise TrainingError(f"{stages[0]} needs a trained {'autoencoder' if stages[0] == 'dynamics' else 'world model'}: "
                                f"pass --init DIR, or run `neuralsim train {'autoencoder' if stages[0] == 'dynamics' else 'all'}` "
                                "with the same --out first")
        model = WorldModel.from_pretrained(out)
    else:
        model = build_model(cfg, dataset)
    if stages == ("reward",) and model.reward_model is not None and model.config.reward_model_kind != cfg.reward_kind:
        raise TrainingError(f"--reward-kind {cfg.reward_kind}: the reward model of --init {cfg.init!r} is "
                            f"{model.config.reward_model_kind!r}; pass --reward-kind {model.config.reward_model_kind} to "
                            "continue it")
    if (stages == ("reward",) and model.reward_model is not None and cfg.reward_kind == "target"
            and (task := reward_kind_overrides(cfg, dataset.manifest)["reward_task"]) != model.config.reward_task):
        # the data states the task anew (e.g. the room now states its walls): the tracker takes it, its weights kept
        # and any head the new task needs added
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = _with_overrides(model, {"reward_task": task})
        if rank() == 0:
            print(f"the reward model takes the data's task: {json.dumps(task)}", flush=True)
    if stages == ("reward",) and model.reward_model is None:  # the first reward run on this model: add one
        with torch.random.fork_rng(devices=[]):  # its initial weights follow --seed, as a fresh model's do
            torch.manual_seed(cfg.seed)
            model = _with_overrides(model, {"reward_model_channels": DEFAULT_REWARD_MODEL_CHANNELS,
                                            **reward_kind_overrides(cfg, dataset.manifest)})
        bonus = init_reward_bonus(model, dataset)
        if rank() == 0:
            print(f"added a reward model ({DEFAULT_REWARD_MODEL_CHANNELS} channels, "
                  f"{sum(p.numel() for p in model.reward_model.parameters()):,} weights; success bonus from the data: "
                  f"{bonus:.3f}) to the model", flush=True)
    if stages == ("memory",) and model.frame_memory is None:  # the first memory run on this model: add one
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            try:
                model = _with_overrides(model, {"frame_memory_width": DEFAULT_FRAME_MEMORY_WIDTH})
            except ValueError as exc:  # a world without camera actions has no pose to warp a memory by
                raise TrainingError(f"train memory: {exc}") from None
        if rank() == 0:
            print(f"added a frame memory (width {DEFAULT_FRAME_MEMORY_WIDTH}, "
                  f"{sum(p.numel() for p in model.frame_memory.parameters()):,} weights) to the model", flush=True)
    if cfg.memory_depth_frozen and not (stages == ("memory",) and model.frame_memory.depth is not None):
        raise TrainingError("--memory-depth-frozen keeps a frame memory's depth net as it is: it needs train memory on "
                            "a model with one (frame_memory_depth_width > 0, or --set frame_memory_depth_width=N)")
    if stages == ("prompt",) and model.prompt_start is None:  # the first prompt run on this model: add a generator
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = _with_overrides(model, {"prompt_start_channels": DEFAULT_PROMPT_START_CHANNELS})
        if rank() == 0:
            print(f"added a prompt-start generator ({DEFAULT_PROMPT_START_CHANNELS} channels, "
                  f"{sum(p.numel() for p in model.prompt_start.parameters()):,} weights) to the model", flush=True)
    if stages == ("termination",) and model.reward_model is None:
        raise TrainingError("train termination needs a model with a reward model (the detector replaces its ending "
                            "and bonus, its progress term stays): run `neuralsim train reward` first")
    if stages == ("termination",) and model.config.frames_per_latent != 1:
        raise TrainingError(f"train termination judges one decoded frame per step: it needs frames_per_latent 1, the "
                            f"model has {model.config.frames_per_latent}")
    if stages == ("termination",) and model.termination_detector is None:  # the first run on this model: add one
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = _with_overrides(model, {"termination_detector_channels": DEFAULT_TERMINATION_DETECTOR_CHANNELS})
        if rank() == 0:
            print(f"added a termination detector ({DEFAULT_TERMINATION_DETECTOR_CHANNELS} channels, "
                  f"{sum(p.numel() for p in model.termination_detector.parameters()):,} weights) to the model", flush=True)
    if stages == ("views",) and model.prompt_views is None:  # the first views run on this model: add a generator
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            try:
                channels = model.config.prompt_start_channels or DEFAULT_PROMPT_VIEW_CHANNELS
                model = _with_overrides(model, {"prompt_view_channels": channels})
            except TrainingError as exc:  # the views live in the frame memory
                raise TrainingError(f"train views: {exc}") from None
        start = model.prompt_start is not None
        if start:  # it first draws the room the sentence names, as the prompt start does, then learns the views
            model.prompt_views.init_from(model.prompt_start)
        if rank() == 0:
            print(f"added a view generator ({model.config.prompt_view_channels} channels, "
                  f"{sum(p.numel() for p in model.prompt_views.parameters()):,} weights"
                  + (", started from the prompt start's" if start else "") + ") to the model", flush=True)
    try:
        dataset.validate_for(tuple(model.config.image_size), model.config.action_spec)
    except ValueError as exc:  # DatasetError: the model being continued was trained for another world
        raise TrainingError(f"--data {cfg.data!r} does not fit the model in {str(out)!r}: {exc}") from None
    ensure_writable_dir(out, "--out", TrainingError)  # every input is valid: now --out may be made
    model.to(device)
    if rank() == 0:
        save_start_frames(dataset, out, cfg.start_frames)

    if stages == ("reward",) and getattr(model.reward_model, "range_calibration", None):
        set_range_calibration(model, None)  # fitted to the localizer as it was; training changes it
        if rank() == 0:
            print("the tracker's range calibration is dropped (it was fitted to the localizer before this training; "
                  "--calibration-data fits a new one)", flush=True)
    for stage in stages:
        total = cfg.steps if (stage == "dynamics" or cfg.stage != "all") else (cfg.ae_steps or max(1, cfg.steps // 2))
        if resume_from is not None and STAGES.index(resume_from["stage"]) > STAGES.index(stage):
            continue  # this stage finished before the interruption
        normalised = model.config.latent_scale != 1.0 or model.config.latent_shift != 0.0
        if stage == "dynamics" and (resume_from is None or resume_from["stage"] != "dynamics") and not normalised:
            scale, shift = latent_statistics(model, dataset, cfg)
            model.set_latent_normalization(scale=scale, shift=shift)
        train_stage(model, dataset, cfg, stage, total, device, resume_from)
        if resume_from is not None and resume_from["stage"] == stage:
            resume_from = None
    if rank() == 0 and cfg.calibration_data:
        from neuralsim.data import Dataset

        knots = calibrate_tracker_range(model, Dataset(cfg.calibration_data))
        set_range_calibration(model, knots)
        print(f"the tracker's range calibration from --calibration-data: {json.dumps(knots)}", flush=True)
    if rank() == 0:
        # The live model now carries the EMA weights; record how it was made and export it.
        run = {k: v for k, v in asdict(cfg).items() if k != "progress"}
        # a frame memory is a part added to a finished model: its run is recorded beside the model's own
        key = "frame_memory" if stages == ("memory",) and "train_config" in model.config.provenance else "train_config"
        if key in model.config.provenance:  # a run continued from --init: its record keeps the earlier ones
            run["before"] = model.config.provenance[key]
        model.config.provenance = {**model.config.provenance, key: run}
        export_model(model, None, out)
    if world_size() > 1:
        dist.barrier()
    return out
