"""A memory of the last real frame: the dream's frames take its pixels back wherever the camera sees them again.

The one-step sampler draws the mean of the frames the history allows, and each dreamed frame feeds that blur into
the next: after 16 steps the wall corners and the floor line are gone, and a camera that turns away and back sees a
smear where the real room shows the view it started from (README, "Fidelity"). The last real frame of the context
still holds those pixels sharp. For a camera that only turned since that frame, where each of its pixels lies in
the current view follows from the rotation alone (:func:`neuralsim.camera.rotation_warp_grid`, no depth needed); after
a translation it is only roughly right, and a ball that rolled is not where it was.

:class:`FrameMemory` is a small learned gate over the decoded frame: it reads the decoded dream frame, the remembered
frame warped to the dream's camera, their difference, where the warp lands inside the remembered view, and how far the
camera has moved since (translation in steps, rotation angle), and puts the warped pixels in where it trusts them::

    frame' = frame + gate * (warped - frame),   gate in [0, 1], 0 outside the remembered view

so every output pixel is the dream's or the memory's, never a new texture; the gate also closes as the camera walks
away from where the memory was taken (fully after ``MAX_TRANSLATION_STEPS`` steps; with a depth net, which lets the
warp follow a walk, after ``DEPTH_MAX_TRANSLATION_STEPS``). The gate runs at a quarter of the frame's
resolution (its decision is per region; the pixels it blends are full resolution): 2.2 MFLOP per frame at width 12.

It acts only where frames are decoded (``WorldModel.decode`` with the step's state as ``context``): the dynamics and
its state are unchanged, and an agent on latent observations does not see it. ``neuralsim train memory --init MODEL``
adds one to a model and trains it on the model's own dreams of the data's windows (``neuralsim.train.DreamPool``);
the memory is the last real context frame for the whole episode.

With ``config.frame_memory_frames = K > 1`` it holds earlier real context frames too (:func:`memory_frame_indices`:
the first and others spread evenly, each with its pose and depth): a decode applies them oldest first and the last
frame after them, so where several see a pixel the newest frame's wins, and a turn back or a walk shows again what
an earlier frame saw and the last one never did. The same nets serve every frame; only inference changes.

With ``floor_height`` (``config.frame_memory_floor_height``: the camera's height above a flat floor) a remembered
frame's depth is capped where each pixel's ray meets the floor (:func:`~neuralsim.camera.floor_depth`; the floor is
opaque, so nothing seen lies beyond it). The depth net at half resolution merges a ball a few pixels across with the
wall behind it (1.37× too far on the transfer benchmark's starts); the ray through the ball meets the floor just
behind it, so the cap brings the ball near where it is and a walk toward it grows it as the room does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from neuralsim.camera import floor_depth, project_depth, reprojection_grid, rotation_warp_grid, splat_depth, splat_lands
from neuralsim.config import FRAME_MEMORY_GATES

#: The gate's features are averaged over POOL x POOL pixels (its decision is per region).
POOL = 4
#: The gate closes linearly as the camera moves away from where the memory was taken, fully at this many full-speed
#: steps of translation: the warp follows the rotation alone, and a step already shifts near things by pixels. A
#: learned gate alone trusted the warp after long strafes and backward walks its training dreams rarely showed.
MAX_TRANSLATION_STEPS = 3.0
#: With a depth net the warp follows the walk too (the memory's depth, forward-warped into the new view, and the
#: depth test hiding what was passed); the gate still closes by this many full-speed steps. At 16 the cap began to
#: fall within the fidelity benchmark's 16-step horizon and threw sharp pixels away (docs/experiments.md, "Depth for
#: the memory":
#: with the bicubic warp below, sharpness at t+16 0.50 / 0.49 -> 0.62 / 0.58, PSNR within 0.1 dB).
DEPTH_MAX_TRANSLATION_STEPS = 24.0
#: The gate's cap falls linearly to 0 over this many steps before the limit (the rotation-only memory: over all 3).
FADE_STEPS = 3.0
#: The depth net's range (metres, or the units of the camera's translation).
MIN_DEPTH, MAX_DEPTH = 0.1, 20.0
#: A warped pixel counts as seen when the depth it lands on agrees with its own to this fraction (else it is hidden
#: behind something nearer in the memory, or a hole the depth's fill invented).
DEPTH_AGREEMENT = 0.15
#: How the depth warp resamples the memory's colours. Bicubic keeps the edges a sub-pixel shift would blur with
#: bilinear sampling, step after step of a turn (with the cap above: sharpness at t+1 0.87 / 0.83 -> 0.97 / 0.97 of
#: the round trip's, PSNR -0.1 dB); its overshoot is clamped to the pixel range.
WARP_MODE = "bicubic"
#: Weight of the depth net's edge-aware smoothness term beside its photometric loss (Monodepth2's).
DEPTH_SMOOTHNESS = 1e-3


class _UNet(nn.Module):
    """The trunk :class:`DepthNet` and :class:`FloorNet` share: three stride-2 convolutions, a dilated one at 1/8
    resolution, one upsampling step with its skip; :meth:`half` gives the features at half resolution beside the
    first level's skip, which each net's own ``up1`` reads."""

    def __init__(self, width: int):
        super().__init__()
        w = width
        self.down1 = nn.Sequential(nn.Conv2d(3, w, 3, stride=2, padding=1), nn.SiLU())  # 1/2
        self.down2 = nn.Sequential(nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.SiLU())  # 1/4
        self.down3 = nn.Sequential(nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.SiLU(),  # 1/8
                                   nn.Conv2d(2 * w, 2 * w, 3, padding=2, dilation=2), nn.SiLU())
        self.up2 = nn.Sequential(nn.Conv2d(4 * w, 2 * w, 3, padding=1), nn.SiLU())

    def half(self, frame: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, 3 * width, H / 2, W / 2]``."""
        d1 = self.down1(frame)
        d2 = self.down2(d1)
        d3 = self.down3(d2)
        u2 = self.up2(torch.cat([F.interpolate(d3, scale_factor=2.0, mode="nearest"), d2], 1))
        return torch.cat([F.interpolate(u2, scale_factor=2.0, mode="nearest"), d1], 1)


class DepthNet(_UNet):
    """A frame's depth ``[B, H, W]`` from its pixels ``[B, 3, H, W]`` in [-1, 1]: a small U-Net (three stride-2
    convolutions, a dilated one at 1/8 resolution, two upsampling steps with skips) predicting disparity at half
    resolution, between ``1 / MAX_DEPTH`` and ``1 / MIN_DEPTH``. Trained without depth labels
    (:func:`photometric_depth_loss`): the camera's motion is known from the actions, so a depth map is right when
    the other frame, warped by it, matches.

    ``refine > 0`` adds a full-resolution step of that width: the half-resolution map, upsampled, corrected by two
    convolutions over it and the frame's pixels (its last one zero-initialised: added to a trained net, it changes
    nothing until trained). At half resolution a ball a few pixels across shares its disparity with the wall behind
    it: the best half-resolution map still places the room's ball 10 % too far at its start (median)."""

    def __init__(self, width: int, refine: int = 0):
        super().__init__(width)
        w = width
        self.up1 = nn.Sequential(nn.Conv2d(3 * w, w, 3, padding=1), nn.SiLU(), nn.Conv2d(w, 1, 3, padding=1))
        nn.init.constant_(self.up1[-1].bias, -3.0)  # start near 2 m everywhere (a room's scale), not at 0.2
        self.refine = None
        if refine:
            self.refine = nn.Sequential(nn.Conv2d(4, refine, 3, padding=1), nn.SiLU(), nn.Conv2d(refine, 1, 3, padding=1))
            nn.init.zeros_(self.refine[-1].weight)
            nn.init.zeros_(self.refine[-1].bias)

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.up1(self.half(frame)), size=frame.shape[-2:], mode="bilinear", align_corners=False)
        if self.refine is not None:
            x = x + self.refine(torch.cat([x, frame.to(x.dtype)], 1))
        disparity = 1 / MAX_DEPTH + (1 / MIN_DEPTH - 1 / MAX_DEPTH) * torch.sigmoid(x[:, 0].float())
        return 1 / disparity


class FloorNet(_UNet):
    """Which pixels of a frame ``[B, 3, H, W]`` in [-1, 1] show the floor: logits ``[B, H, W]`` (> 0: floor), at full
    resolution. A U-Net like :class:`DepthNet`'s (three stride-2 convolutions, a dilated one at 1/8, two upsampling
    steps with skips) ending in a full-resolution step over its features and the frame's pixels: where the floor ends
    under a ball a few pixels across is what :func:`standing_depth` reads. Trained on an env's segmentation
    (``examples/finetune_floor.py``, the room's ``floor_mask()``); a floor is a large region of one colour or
    texture, which a per-pixel class learns far better than a per-pixel depth does."""

    def __init__(self, width: int):
        super().__init__(width)
        w = width
        self.up1 = nn.Sequential(nn.Conv2d(3 * w, w, 3, padding=1), nn.SiLU())
        self.full = nn.Sequential(nn.Conv2d(w + 3, w, 3, padding=1), nn.SiLU(), nn.Conv2d(w, 1, 3, padding=1))

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.up1(self.half(frame)), size=frame.shape[-2:], mode="bilinear", align_corners=False)
        return self.full(torch.cat([x, frame.to(x.dtype)], 1))[:, 0].float()


def standing_depth(depth: torch.Tensor, floor: torch.Tensor, is_floor: torch.Tensor, min_depth: float) -> torch.Tensor:
    """A frame's depth ``[B, H, W]`` in a world of a flat floor and things standing on it (a stixel world).

    ``floor``: where each pixel's ray meets the floor (:func:`~neuralsim.camera.floor_depth`, ``inf`` at and above
    the horizon); ``is_floor``: the pixels that show it (bool). A floor pixel takes the floor's depth; any other pixel
    stands on the floor where its column next meets it below (that floor pixel's depth: a wall, a box, a ball seen
    upright), the depth net's ``depth`` (capped at the floor) where no floor lies below it in its column or where
    that stand is nearer than ``min_depth``. The depth net at half resolution shares a ball's depth with the wall
    behind it; where the floor ends under the ball says how far the ball is. Near things keep the net's depth: an
    object the agent is about to push moves with it, and a truer depth warps it as if it stood (docs/experiments.md,
    "The floor's pixels under what stands on it")."""
    H = depth.shape[-2]
    is_floor = is_floor & torch.isfinite(floor)  # no floor at or above the horizon, whatever a net marks there
    rows = torch.arange(H, device=depth.device).view(1, H, 1).expand_as(depth)
    below = torch.where(is_floor, rows, torch.full_like(rows, H)).flip(1).cummin(1).values.flip(1)  # first floor row >= r
    stand = floor.gather(1, below.clamp(max=H - 1))
    capped = torch.minimum(depth, floor)
    out = torch.where((below < H) & (stand >= min_depth), stand, capped)
    return torch.where(is_floor, floor, out)


def _sample(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)


def _inside(grid: torch.Tensor) -> torch.Tensor:
    within = grid.abs() <= 1
    return (within[..., 0] & within[..., 1])[:, None]  # (an all() over a last dim of 2 is ~10x slower on a CPU)


def photometric_depth_loss(depth_net: nn.Module, first: torch.Tensor, second: torch.Tensor, rel: torch.Tensor,
                           fovy_deg: float) -> tuple[torch.Tensor, dict]:
    """Self-supervised depth (SfMLearner, Monodepth2): each frame's predicted depth warps the other frame into it.

    ``first``, ``second``: ``[B, 3, H, W]`` in [-1, 1]; ``rel``: ``[B, 4, 4]`` the second camera in the first
    camera's frame (from the actions). The L1 error of each warped frame against the frame it is warped into, over
    the pixels that land inside the other view and that the warp explains better than the frames unwarped
    (Monodepth2's auto-mask: a still camera or a moving object teaches nothing), plus edge-aware smoothness of the
    mean-normalised disparity."""
    H, W = first.shape[-2:]
    rel = rel.double()
    frames, poses = (second, first), (rel, torch.linalg.inv(rel))  # each as the new view, the other as the previous
    depth = depth_net(torch.cat(frames))
    losses, smooth = [], []
    for k, (target, source, pose) in enumerate(zip(frames, frames[::-1], poses)):
        d = depth[k * len(first):(k + 1) * len(first)]
        grid, z = reprojection_grid(pose, d, H, W, fovy_deg)
        warped = _sample(source, grid)
        error = (warped - target).abs().mean(1, keepdim=True)
        still = (source - target).abs().mean(1, keepdim=True)
        mask = (_inside(grid) & (z[:, None] > 1e-2) & (error < still)).float()
        losses.append((error * mask).sum() / mask.sum().clamp_min(1))
        disparity = 1 / d[:, None]
        disparity = disparity / disparity.mean((2, 3), keepdim=True)
        for dim in (2, 3):
            grad_d = disparity.diff(dim=dim).abs()
            grad_i = target.diff(dim=dim).abs().mean(1, keepdim=True)
            smooth.append((grad_d * torch.exp(-grad_i)).mean())
    photometric, smoothness = sum(losses) / 2, sum(smooth) / 4
    return photometric + DEPTH_SMOOTHNESS * smoothness, {"photometric": photometric.item(),
                                                          "smoothness": smoothness.item()}


def _box_sum3(x: torch.Tensor) -> torch.Tensor:
    """The sum over each pixel's 3×3 neighbourhood of ``x [B, 1, H, W]`` (zeros beyond the edge), separably: on a
    CPU ~5× faster than ``avg_pool2d``'s stride-1 window at batch 64 (exact for counts)."""
    H, W = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1))
    rows = padded[..., 0:W] + padded[..., 1:W + 1] + padded[..., 2:W + 2]
    return rows[..., 0:H, :] + rows[..., 1:H + 1, :] + rows[..., 2:H + 2, :]


def memory_frame_indices(context_frames: int, memory_frames: int) -> list[int]:
    """Which of ``context_frames`` real frames a memory of ``memory_frames`` holds besides the last, oldest first:
    spread evenly back through the context to its first frame (16 frames, 3 held: ``[0, 7]`` beside 15). A context
    shorter than the memory repeats frames (the shapes stay fixed; a repeat of the last frame adds nothing)."""
    if context_frames < 1 or memory_frames < 1:
        raise ValueError(f"context_frames and memory_frames must be >= 1, got {context_frames!r}, {memory_frames!r}")
    last = context_frames - 1
    return [last - round(j * last / (memory_frames - 1)) for j in range(memory_frames - 1, 0, -1)]


def relative_pose(memory_c2w: torch.Tensor, c2w: torch.Tensor) -> torch.Tensor:
    """The current camera ``c2w [B, 4, 4]`` in the frame of the remembered camera ``memory_c2w [B, 4, 4]``."""
    return torch.linalg.inv(memory_c2w.double()) @ c2w.double()


class FrameMemory(nn.Module):
    """Gate ``[B, 3, H, W]`` decoded frames toward a remembered frame warped to their camera.

    Args:
        width: channels of the gate's convolutions.
        fovy_deg: the camera's vertical field of view (the warp's intrinsics).
        translation_speed: metres per full-speed step (the translation feature is in steps).
        depth_width: 0: the warp follows the camera's rotation alone; > 0: a :class:`DepthNet` of this width gives
            the memory's depth once per episode (:meth:`memory_depth`) and the warp follows the walk too.
        gate: ``"learned"``: the gate's net weighs the memory's pixels against the dream's; ``"seen"``: the gate is 1
            wherever the warp sees the pixel (and 0 elsewhere), under the same cap as the camera walks away, feathered
            the same way; the net is kept but not run.
        depth_refine: width of the depth net's full-resolution correction (0: none).
        range_steps: full-speed steps of translation from the remembered frame by which the gate has closed (it fades
            over the last ``FADE_STEPS``); 0: ``MAX_TRANSLATION_STEPS``, or ``DEPTH_MAX_TRANSLATION_STEPS`` with depth.
        floor_height: > 0 (with a depth net): the camera's height above a flat floor, in the translation's units; a
            remembered frame's depth is capped where each ray meets the floor (:meth:`memory_depth` given the frame's
            pose). 0: no floor.
        floor_net_width: > 0 (with a floor): a :class:`FloorNet` of this width marks the floor's pixels and the
            remembered depth is :func:`standing_depth`'s; 0: the cap alone.
        stand_min_depth: :func:`standing_depth`'s ``min_depth``.
    """

    def __init__(self, width: int, fovy_deg: float, translation_speed: float, depth_width: int = 0,
                 gate: str = "learned", depth_refine: int = 0, range_steps: float = 0.0, floor_height: float = 0.0,
                 floor_net_width: int = 0, stand_min_depth: float = 1.0):
        super().__init__()
        if width < 1 or not fovy_deg > 0 or not translation_speed > 0 or depth_width < 0:
            raise ValueError(f"width must be >= 1, fovy_deg and translation_speed > 0, depth_width >= 0, got {width!r}, "
                             f"{fovy_deg!r}, {translation_speed!r}, {depth_width!r}")
        if depth_refine < 0 or (depth_refine and not depth_width):
            raise ValueError(f"depth_refine must be 0 or, with depth_width > 0, positive, got {depth_refine!r}")
        if gate not in FRAME_MEMORY_GATES:
            raise ValueError(f'gate must be "learned" or "seen", got {gate!r}')
        if not (floor_height == 0 or (floor_height > 0 and math.isfinite(floor_height) and depth_width)):
            raise ValueError(f"floor_height must be 0 or, with depth_width > 0, a finite height > 0, got {floor_height!r}")
        if floor_net_width < 0 or (floor_net_width and not floor_height):
            raise ValueError(f"floor_net_width must be 0 or, with floor_height > 0, positive, got {floor_net_width!r}")
        if not (stand_min_depth >= 0 and math.isfinite(stand_min_depth)):
            raise ValueError(f"stand_min_depth must be a finite number >= 0, got {stand_min_depth!r}")
        self.gate = gate
        self.floor_height = float(floor_height)
        self.floor_net = FloorNet(floor_net_width) if floor_net_width else None
        self.stand_min_depth = float(stand_min_depth)
        self.fovy_deg, self.translation_speed = float(fovy_deg), float(translation_speed)
        self.depth = DepthNet(depth_width, depth_refine) if depth_width else None
        if not (range_steps == 0 or range_steps >= FADE_STEPS + 1):
            raise ValueError(f"range_steps must be 0 (the default) or >= {FADE_STEPS + 1:g}, got {range_steps!r}")
        self.max_translation_steps = (float(range_steps) if range_steps else
                                      DEPTH_MAX_TRANSLATION_STEPS if depth_width else MAX_TRANSLATION_STEPS)
        features = 3 + 3 + 3 + 1 + 4  # frame, warped memory, their difference, inside the view, motion
        self.net = nn.Sequential(
            nn.Conv2d(features, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=4, dilation=4), nn.SiLU(),
            nn.Conv2d(width, 1, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)  # at init the gate is nearly closed everywhere (sigmoid(-4) = 0.018)
        nn.init.constant_(self.net[-1].bias, -4.0)

    def memory_depth(self, memory: torch.Tensor, c2w: torch.Tensor | None = None) -> torch.Tensor | None:
        """The remembered frame's depth ``[B, H, W]`` (None without a depth net): computed once per episode. With a
        ``floor_height`` and the frames' poses ``c2w [B, 4, 4]`` (the dream's world frame: a level start), capped
        where each pixel's ray meets the floor; with a floor net, :func:`standing_depth` of the pixels it marks."""
        if self.depth is None:
            return None
        frame = memory.float()
        depth = self.depth(frame)
        if self.floor_height and c2w is not None:
            floor = floor_depth(c2w.to(depth.device), *depth.shape[-2:], self.fovy_deg, self.floor_height).to(depth.dtype)
            if self.floor_net is None:
                return torch.minimum(depth, floor)
            return standing_depth(depth, floor, self.floor_net(frame) > 0, self.stand_min_depth)
        return depth

    def warp(self, memory: torch.Tensor, rel: torch.Tensor, depth: torch.Tensor | None,
             projected: tuple[torch.Tensor, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The memory seen from the camera ``rel``: ``(warped [B, 3, H, W], seen [B, 1, H, W] bool)``, seen where the
        pixel lies inside the remembered view (and, with depth, is not hidden behind something nearer).
        ``projected``: :func:`~neuralsim.camera.project_depth` of ``(rel, depth)`` when the caller has it."""
        H, W = memory.shape[-2:]
        if depth is None:
            grid = rotation_warp_grid(rel, H, W, self.fovy_deg).to(memory.device)
            return _sample(memory, grid), _inside(grid)
        # The geometry in fp32 whatever autocast a session runs (bf16 would place a 64-pixel frame's points a
        # quarter pixel off, and the z-buffer's scatter needs one dtype); the colours come back in memory's dtype.
        with torch.autocast(device_type=memory.device.type, enabled=False):
            target = splat_depth(rel, depth.float(), self.fovy_deg, projected=projected)
            warped, seen = self._depth_warp(memory.float(), rel, depth.float(), target)
        return warped.to(memory.dtype), seen

    def _depth_warp(self, memory: torch.Tensor, rel: torch.Tensor, depth: torch.Tensor, target: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        H, W = memory.shape[-2:]
        known = torch.isfinite(target)
        grid, z = reprojection_grid(rel, target, H, W, self.fovy_deg)
        grid, z = grid.to(memory.device), z.to(memory.device)
        there = F.grid_sample(depth[:, None].float(), grid, mode="nearest", padding_mode="border", align_corners=True)
        agree = (there[:, 0] - z).abs() <= DEPTH_AGREEMENT * z
        seen = (_inside(grid) & (known & agree)[:, None]).float()
        seen = torch.maximum(seen, (_box_sum3(seen) >= 5).float())  # close pinholes: 5 of the 3x3 around seen
        warped = F.grid_sample(memory, grid.to(memory.dtype), mode=WARP_MODE, padding_mode="border", align_corners=True)
        return warped.clamp(-1, 1), seen.bool()

    def forward(self, frame: torch.Tensor, memory: torch.Tensor, rel: torch.Tensor,
                depth: torch.Tensor | None = None, gate: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``frame``, ``memory``: ``[B, 3, H, W]`` in [-1, 1]; ``rel``: ``[B, 4, 4]`` the camera in the memory's
        camera frame (:func:`relative_pose`); ``depth``: the memory's (:meth:`memory_depth`; computed here when the
        memory has a depth net and none is given); ``gate``: ``"learned"`` or ``"seen"`` for this call (None: the
        module's; training the gate's net passes ``"learned"``). Returns ``(frame', gate [B, 1, H, W])``."""
        mode = self.gate if gate is None else gate
        if mode not in FRAME_MEMORY_GATES:
            raise ValueError(f'gate must be "learned" or "seen", got {gate!r}')
        projected = None
        if depth is None:  # no depth (or not given: the depth net's, computed for the rows that may see it)
            see = self.may_see(rel, None, *frame.shape[-2:]).to(frame.device)
        else:  # the memory's points projected once: may_see tests where they land, the warp splats them
            with torch.autocast(device_type=depth.device.type, enabled=False):
                projected = project_depth(rel, depth.float(), self.fovy_deg)
            see = self.may_see(rel, depth, *frame.shape[-2:], projected=projected).to(frame.device)
        if bool(see.all()):
            return self._blend(frame, memory, rel, depth, mode, projected)
        if not bool(see.any()):  # no camera looks where the memory was seen: its pixels cannot land in any view
            return frame, torch.zeros_like(frame[:, :1])
        rows = see.nonzero()[:, 0]  # the rows that may see it, alone: the others keep their frame, exactly as a zero gate
        out, gate_rows = self._blend(frame[rows], memory[rows], rel[rows.to(rel.device)],
                                     None if depth is None else depth[rows.to(depth.device)], mode,
                                     None if projected is None else tuple(t[rows.to(t.device)] for t in projected))
        return frame.index_copy(0, rows, out), torch.zeros_like(frame[:, :1]).index_copy(0, rows, gate_rows)

    def may_see(self, rel: torch.Tensor, depth: torch.Tensor | None, height: int, width: int,
                projected: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """``[B]`` bool: whether the camera ``rel`` (in the memory's camera frame) may see any pixel of the memory.
        False only where it cannot: the camera walked past the memory's range; or, with the memory's ``depth``, none
        of its points lands in the view (:func:`~neuralsim.camera.splat_lands`: the depth warp would be empty);
        without it, the two views' axes are further apart than the two frusta's half diagonals plus the parallax of
        the camera's shift at the depth net's nearest depth (a rotation-only memory: plus nothing). A conservative
        test: a row it passes may still see nothing. ``projected``: :func:`~neuralsim.camera.project_depth` of
        ``(rel, depth)`` when the caller has it."""
        within = rel[:, :3, 3].double().norm(dim=1) / self.translation_speed < self.max_translation_steps
        if depth is not None:
            return within & splat_lands(rel, depth, self.fovy_deg, projected).to(within.device)
        tan_y = math.tan(math.radians(self.fovy_deg) / 2)
        half_diagonal = math.atan(tan_y * math.hypot(1.0, width / height))
        rel = rel.double()
        angle = torch.arccos(rel[:, 2, 2].clamp(-1, 1))  # between the two cameras' forward axes
        allowed = torch.full_like(angle, 2 * half_diagonal + math.radians(1.0))
        if self.depth is not None:  # its depth not given: the nearest the depth net can give
            allowed = allowed + torch.arcsin((rel[:, :3, 3].norm(dim=1) / MIN_DEPTH).clamp(max=1.0))
        return (angle <= allowed) & within

    def _blend(self, frame: torch.Tensor, memory: torch.Tensor, rel: torch.Tensor, depth: torch.Tensor | None,
               mode: str, projected: tuple[torch.Tensor, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        B, _, H, W = frame.shape
        moved = rel[:, :3, 3].float().to(frame.device) / self.translation_speed  # in full-speed steps
        near = ((self.max_translation_steps - moved.norm(dim=1)) / FADE_STEPS).clamp(0, 1).to(frame.dtype)[:, None, None, None]
        if not bool((near > 0).any()):  # every camera has walked away from its memory: nothing to warp (a long dream)
            return frame, torch.zeros_like(frame[:, :1])
        if depth is None and self.depth is not None:
            depth = self.memory_depth(memory)
        warped, inside = self.warp(memory.to(frame.dtype), rel, depth, projected)
        warped, inside = warped.to(frame.dtype), inside.to(frame.dtype)
        if mode == "seen":
            gate = inside * near
        else:
            cos = ((rel[:, 0, 0] + rel[:, 1, 1] + rel[:, 2, 2] - 1) / 2).clamp(-1, 1)
            angle = torch.arccos(cos).float().to(frame.device)[:, None]  # radians turned since the memory
            motion = torch.cat([moved.clamp(-20, 20) / 10, angle], 1).to(frame.dtype)
            pooled = [F.avg_pool2d(t, POOL) for t in (frame, warped, (frame - warped).abs(), inside)]  # pool first
            x = torch.cat([*pooled, motion[:, :, None, None].expand(B, 4, H // POOL, W // POOL)], 1)
            z = F.interpolate(self.net(x), size=(H, W), mode="bilinear", align_corners=False)
            gate = torch.sigmoid(z) * inside * near
        if depth is not None:  # feathered: the seam between the memory's pixels and the dream's is not a new edge
            gate = _box_sum3(gate) / _box_sum3(torch.ones_like(gate[:1]))  # the mean over the in-view 3x3
        return frame + gate * (warped - frame), gate


__all__ = ["FrameMemory", "DepthNet", "photometric_depth_loss", "relative_pose", "memory_frame_indices", "POOL",
           "MAX_TRANSLATION_STEPS", "DEPTH_MAX_TRANSLATION_STEPS", "WARP_MODE"]
