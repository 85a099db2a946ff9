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
away from where the memory was taken (fully after ``MAX_TRANSLATION_STEPS`` steps). The gate runs at a quarter of the frame's
resolution (its decision is per region; the pixels it blends are full resolution): 2.2 MFLOP per frame at width 12.

It acts only where frames are decoded (``WorldModel.decode`` with the step's state as ``context``): the dynamics and
its state are unchanged, and an agent on latent observations does not see it. ``neuralsim train memory --init MODEL``
adds one to a model and trains it on the model's own dreams of the data's windows (``neuralsim.train.DreamPool``);
the memory is the last real context frame for the whole episode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neuralsim.camera import rotation_warp_grid

#: The gate's features are averaged over POOL x POOL pixels (its decision is per region).
POOL = 4
#: The gate closes linearly as the camera moves away from where the memory was taken, fully at this many full-speed
#: steps of translation: the warp follows the rotation alone, and a step already shifts near things by pixels. A
#: learned gate alone trusted the warp after long strafes and backward walks its training dreams rarely showed.
MAX_TRANSLATION_STEPS = 3.0


def relative_pose(memory_c2w: torch.Tensor, c2w: torch.Tensor) -> torch.Tensor:
    """The current camera ``c2w [B, 4, 4]`` in the frame of the remembered camera ``memory_c2w [B, 4, 4]``."""
    return torch.linalg.inv(memory_c2w.double()) @ c2w.double()


class FrameMemory(nn.Module):
    """Gate ``[B, 3, H, W]`` decoded frames toward a remembered frame warped to their camera.

    Args:
        width: channels of the gate's convolutions.
        fovy_deg: the camera's vertical field of view (the warp's intrinsics).
        translation_speed: metres per full-speed step (the translation feature is in steps).
    """

    def __init__(self, width: int, fovy_deg: float, translation_speed: float):
        super().__init__()
        if width < 1 or not fovy_deg > 0 or not translation_speed > 0:
            raise ValueError(f"width must be >= 1, fovy_deg and translation_speed > 0, got {width!r}, {fovy_deg!r}, "
                             f"{translation_speed!r}")
        self.fovy_deg, self.translation_speed = float(fovy_deg), float(translation_speed)
        features = 3 + 3 + 3 + 1 + 4  # frame, warped memory, their difference, inside the view, motion
        self.net = nn.Sequential(
            nn.Conv2d(features, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=4, dilation=4), nn.SiLU(),
            nn.Conv2d(width, 1, 3, padding=1),
        )
        nn.init.zeros_(self.net[-1].weight)  # at init the gate is nearly closed everywhere (sigmoid(-4) = 0.018)
        nn.init.constant_(self.net[-1].bias, -4.0)

    def forward(self, frame: torch.Tensor, memory: torch.Tensor, rel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``frame``, ``memory``: ``[B, 3, H, W]`` in [-1, 1]; ``rel``: ``[B, 4, 4]`` the camera in the memory's
        camera frame (:func:`relative_pose`). Returns ``(frame', gate [B, 1, H, W])``."""
        B, _, H, W = frame.shape
        moved = rel[:, :3, 3].float().to(frame.device) / self.translation_speed  # in full-speed steps
        near = (1 - moved.norm(dim=1) / MAX_TRANSLATION_STEPS).clamp(min=0).to(frame.dtype)[:, None, None, None]
        if not bool((near > 0).any()):  # every camera has walked away from its memory: nothing to warp (a long dream)
            return frame, torch.zeros_like(frame[:, :1])
        grid = rotation_warp_grid(rel, H, W, self.fovy_deg).to(frame.device)
        warped = F.grid_sample(memory.to(frame.dtype), grid.to(frame.dtype), mode="bilinear", padding_mode="zeros",
                               align_corners=True)
        inside = (grid.abs() <= 1).all(-1)[:, None].to(frame.dtype)
        cos = ((rel[:, 0, 0] + rel[:, 1, 1] + rel[:, 2, 2] - 1) / 2).clamp(-1, 1)
        angle = torch.arccos(cos).float().to(frame.device)[:, None]  # radians turned since the memory
        motion = torch.cat([moved.clamp(-20, 20) / 10, angle], 1).to(frame.dtype)
        x = torch.cat([frame, warped, (frame - warped).abs(), inside], 1)
        x = torch.cat([F.avg_pool2d(x, POOL), motion[:, :, None, None].expand(B, 4, H // POOL, W // POOL)], 1)
        z = F.interpolate(self.net(x), size=(H, W), mode="bilinear", align_corners=False)
        gate = torch.sigmoid(z) * inside * near
        return frame + gate * (warped - frame), gate


__all__ = ["FrameMemory", "relative_pose", "POOL", "MAX_TRANSLATION_STEPS"]
