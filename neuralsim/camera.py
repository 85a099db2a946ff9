"""Camera math, once: poses from camera actions, pinhole intrinsics, Plücker rays and rotation warps.

Poses integrate as diffusers' ``pipelines.sana_wm.cam_utils.action_string_to_c2w`` (SANA-WM): OpenCV axes
(+X right, +Y down, +Z forward); yaw about the vertical axis, pitch about the camera's own x axis and clamped (a
step that would pass the limit does not pitch at all); translation on the horizontal XZ plane; every component
scaled by the magnitude of the canonical camera action ``[forward, strafe_right, yaw_right, pitch_up]``
(:data:`neuralsim.actions.CAMERA_ACTION_NAMES`).

:func:`camera_step` is the one implementation, batched in torch float64: the world model steps its state with it,
:class:`CameraIntegrator` steps one camera (numpy in and out; the official SANA-WM backend and
:func:`neuralsim.actions.action_string_to_c2w` use it). Rays: :func:`plucker_rays_torch` (a model's token grid)
and :func:`plucker_rays` (the form of diffusers' ``cam_utils.compute_raymap``) are one computation.

Example:
    >>> cam = CameraIntegrator(translation_speed=0.1)
    >>> cam.step([1.0, 0.0, 0.0, 0.0])[:3, 3]  # one frame forward: +Z
    array([0. , 0. , 0.1])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from neuralsim.actions import (
    CAMERA_ACTION_DIM,
    DEFAULT_PITCH_LIMIT_DEG,
    DEFAULT_ROTATION_SPEED_DEG,
    DEFAULT_TRANSLATION_SPEED,
)

# ---------------------------------------------------------------------------------------------
# Poses
# ---------------------------------------------------------------------------------------------


def _rot(axis: str, angle: torch.Tensor) -> torch.Tensor:
    """Batched rotation matrices ``[B, 3, 3]`` about ``x`` or ``y``."""
    c, s = angle.cos(), angle.sin()
    one, zero = torch.ones_like(c), torch.zeros_like(c)
    rows = ([one, zero, zero], [zero, c, -s], [zero, s, c]) if axis == "x" else ([c, zero, s], [zero, one, zero], [-s, zero, c])
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def camera_step(c2w: torch.Tensor, pitch: torch.Tensor, action: torch.Tensor, *, translation_speed: float,
                rotation_speed_deg: float, pitch_limit_deg: float = DEFAULT_PITCH_LIMIT_DEG) -> tuple[torch.Tensor, torch.Tensor]:
    """One frame of camera motion for a batch of cameras.

    Args:
        c2w: ``[B, 4, 4]`` float64 camera-to-world poses; pitch: ``[B]`` float64 accumulated pitch (radians).
        action: ``[B, 4]`` canonical ``[forward, strafe_right, yaw_right, pitch_up]``.
        translation_speed: units per frame at ``|forward| = 1``; rotation_speed_deg: degrees per frame at ``|yaw| = 1``.
        pitch_limit_deg: the pitch clamp (a step that would pass it leaves the pitch as it was).

    Returns:
        ``(new c2w, new pitch)``; the inputs are left unchanged.
    """
    f, r, y, p = action.double().unbind(-1)
    rot, limit = math.radians(rotation_speed_deg), math.radians(pitch_limit_deg)
    new_pitch = pitch + rot * p
    inside = (new_pitch >= -limit) & (new_pitch <= limit)
    pitch_delta = torch.where(inside, rot * p, torch.zeros_like(p))
    pitch = torch.where(inside, new_pitch, pitch)
    R = _rot("y", rot * y) @ c2w[:, :3, :3] @ _rot("x", pitch_delta)  # (B, 3, 3)
    horizontal = torch.tensor([1.0, 0.0, 1.0], dtype=R.dtype, device=R.device)
    forward, right = R[:, :, 2] * horizontal, R[:, :, 0] * horizontal  # y (down) component dropped
    forward = forward / torch.where((n := forward.norm(dim=-1, keepdim=True)) > 0, n, torch.ones_like(n))
    right = right / torch.where((n := right.norm(dim=-1, keepdim=True)) > 0, n, torch.ones_like(n))
    new = torch.eye(4, dtype=c2w.dtype, device=c2w.device).repeat(c2w.shape[0], 1, 1)
    new[:, :3, :3] = R
    new[:, :3, 3] = c2w[:, :3, 3] + (forward * f[:, None] + right * r[:, None]) * translation_speed
    return new, pitch


@dataclass(frozen=True)
class TranslationResponse:
    """How a physical camera's translation follows the commanded one: a velocity servo (a MuJoCo velocity
    actuator, as the real room's agent) with a gain and an acceleration limit, integrated in ``substeps`` implicit
    steps per frame. The commanded speed is reached after a fraction of a frame and, after a release, the camera
    coasts on: in the room a full-speed step from rest moves 0.56–0.71 of a step and the frame after letting go
    0.29–0.44 (which, depends on the heading: the room limits the force per world axis).

    ``velocity_gain`` (1/s, ``kv / mass``), ``acceleration_limit`` (m/s², ``force limit / mass``; the room clamps
    each world axis, this the vector's length, which the model can state without the room's absolute heading),
    ``frame_time`` (s per frame), ``substeps`` (physics steps per frame).
    """

    velocity_gain: float
    acceleration_limit: float
    frame_time: float
    substeps: int

    #: The keys of an env's ``camera_spec`` (and of a target tracker's ``reward_task``) that state the servo.
    SPEC_KEYS = ("velocity_gain", "acceleration_limit", "frame_time", "substeps")

    @classmethod
    def from_spec(cls, spec: dict | None) -> "TranslationResponse | None":
        """The servo a ``camera_spec``-like dict states, or None where it lacks one of :attr:`SPEC_KEYS` or its gain
        is 0 (the camera moves at the commanded speed at once)."""
        spec = spec or {}
        if not all(spec.get(k) for k in cls.SPEC_KEYS):
            return None
        return cls(float(spec["velocity_gain"]), float(spec["acceleration_limit"]), float(spec["frame_time"]),
                   int(spec["substeps"]))


def servo_config_fields(camera_spec: dict | None) -> dict[str, float | int]:
    """The ``WorldModelConfig`` fields of the velocity servo an env's ``camera_spec`` states (a dataset manifest's
    ``"camera"``: ``velocity_gain``, ``acceleration_limit``, ``frame_time``, ``substeps``), as
    ``camera_velocity_gain``, ...; ``{}`` when it states none (the camera moves at the commanded speed at once)."""
    spec = camera_spec or {}
    if not spec.get("velocity_gain"):
        return {}
    return {f"camera_{key}": (int if key == "substeps" else float)(spec[key])
            for key in TranslationResponse.SPEC_KEYS if spec.get(key) is not None}


def translation_response(velocity: torch.Tensor, action: torch.Tensor, response: TranslationResponse, *,
                         translation_speed: float, rotation_speed_deg: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One frame of the camera's translation under a :class:`TranslationResponse`.

    Args:
        velocity: ``[B, 2]`` float64 ``(forward, right)`` velocity before the frame, in the camera's heading before
            the frame and in units of ``translation_speed`` per frame (1 = the commanded full speed).
        action: ``[B, 4]`` canonical ``[forward, strafe_right, yaw_right, pitch_up]`` commanded this frame.

    Returns:
        ``(effective action [B, 4], velocity [B, 2])``: the action whose instant motion (:func:`camera_step`) is the
        frame's real displacement (forward and right replaced; yaw and pitch are kinematic, unchanged), and the
        velocity after the frame in the new heading.
    """
    action = action.double()
    theta = math.radians(rotation_speed_deg) * action[:, 2]  # the yaw turns first, as camera_step and the room
    c, s = theta.cos(), theta.sin()
    f, r = velocity.double().unbind(-1)
    v = torch.stack([f * c + r * s, r * c - f * s], dim=-1)  # the same world velocity seen from the new heading
    target = action[:, :2]
    h = response.frame_time / response.substeps
    gain = response.velocity_gain * h
    max_dv = response.acceleration_limit * h * response.frame_time / translation_speed  # in units per frame
    moved = torch.zeros_like(v)
    for _ in range(response.substeps):
        dv = (v + gain * target) / (1 + gain) - v  # implicit servo step (MuJoCo's implicit velocity actuator)
        if response.acceleration_limit > 0:
            norm = dv.norm(dim=-1, keepdim=True)
            dv = dv * torch.clamp(max_dv / norm.clamp_min(1e-12), max=1.0)
        v = v + dv
        moved = moved + v / response.substeps
    return torch.cat([moved, action[:, 2:]], dim=-1), v


@dataclass
class CameraIntegrator:
    """One camera stepped by :func:`camera_step`: integrates canonical camera actions into camera-to-world poses,
    as ``cam_utils.action_string_to_c2w``.

    Keeps the pose (``c2w``, ``[4, 4]`` float64) and the accumulated pitch (radians), so a rollout can be
    integrated one step at a time.
    """

    translation_speed: float = DEFAULT_TRANSLATION_SPEED
    rotation_speed_deg: float = DEFAULT_ROTATION_SPEED_DEG
    pitch_limit_deg: float = DEFAULT_PITCH_LIMIT_DEG

    def __post_init__(self) -> None:
        self.reset()

    def reset(self, c2w: np.ndarray | None = None, pitch_rad: float = 0.0) -> None:
        self.c2w = np.eye(4) if c2w is None else np.asarray(c2w, dtype=np.float64).copy()
        self.pitch = float(pitch_rad)

    def step(self, action: Sequence[float]) -> np.ndarray:
        """Advance one frame with ``action = [forward, strafe_right, yaw_right, pitch_up]``; returns the new c2w."""
        vector = torch.tensor([[float(x) for x in action[:CAMERA_ACTION_DIM]]], dtype=torch.float64)  # (1, 4)
        c2w, pitch = camera_step(torch.from_numpy(self.c2w)[None], torch.tensor([self.pitch], dtype=torch.float64),
                                 vector, translation_speed=self.translation_speed,
                                 rotation_speed_deg=self.rotation_speed_deg, pitch_limit_deg=self.pitch_limit_deg)
        self.c2w, self.pitch = c2w[0].numpy(), float(pitch[0])
        return self.c2w.copy()


# ---------------------------------------------------------------------------------------------
# Rays
# ---------------------------------------------------------------------------------------------


def camera_intrinsics(height: int, width: int, fovy_deg: float) -> tuple[float, float, float, float]:
    """Pinhole ``(fx, fy, cx, cy)`` in pixels of a ``height × width`` grid (square pixels, centred)."""
    fy = 0.5 * height / math.tan(math.radians(fovy_deg) / 2)
    return fy, fy, (width - 1) / 2, (height - 1) / 2


def _pixel_axes(height: int, width: int, intrinsics: Sequence[float], device: torch.device, dtype: torch.dtype
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The camera-frame direction ``(x, y, 1)`` through every pixel centre, as its x along a row ``[1, 1, width]`` and
    its y down a column ``[1, height, 1]``: a direction's x depends on its column alone and its y on its row, so a
    rotation of every pixel's direction is a sum of a row and a column (:func:`_rotated_directions`), one pass over
    the image instead of a (pixels × 3) @ (3 × 3) product."""
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    xs = (torch.arange(width, dtype=torch.float64, device=device) - cx) / fx
    ys = (torch.arange(height, dtype=torch.float64, device=device) - cy) / fy
    return xs.to(dtype).view(1, 1, width), ys.to(dtype).view(1, height, 1)


def _pixel_directions(height: int, width: int, intrinsics: Sequence[float], device: torch.device) -> torch.Tensor:
    """Camera-frame directions ``(x, y, 1)`` through every pixel centre, row-major: ``[height*width, 3]`` float64."""
    xs, ys = (a.expand(1, height, width)[0] for a in _pixel_axes(height, width, intrinsics, device, torch.float64))
    return torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(-1, 3)  # (S, 3)


def _plucker(c2w: torch.Tensor, dirs_cam: torch.Tensor) -> torch.Tensor:
    """Plücker rays ``(d, o × d)`` of poses ``c2w [B, 4, 4]`` through directions ``dirs_cam [S, 3]``: ``[B, S, 6]`` float32."""
    dirs = torch.einsum("bij,sj->bsi", c2w[:, :3, :3].double(), dirs_cam)  # (B, S, 3)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = c2w[:, None, :3, 3].double().expand_as(dirs)
    return torch.cat([dirs, torch.cross(origins, dirs, dim=-1)], dim=-1).float()


def plucker_rays_torch(c2w: torch.Tensor, height: int, width: int, fovy_deg: float) -> torch.Tensor:
    """Per-token Plücker rays ``(d, o × d)`` of poses ``c2w [B, 4, 4]`` → ``[B, height*width, 6]`` float32,
    with :func:`camera_intrinsics` (the world model's token grid)."""
    return _plucker(c2w, _pixel_directions(height, width, camera_intrinsics(height, width, fovy_deg), c2w.device))


def plucker_rays(intrinsics: np.ndarray, c2w: np.ndarray, height: int, width: int) -> np.ndarray:
    """Per-pixel Plücker coordinates ``(d, o × d)``, as ``cam_utils.compute_raymap(use_plucker=True)``.

    Args:
        intrinsics: ``[T, 4]`` ``fx, fy, cx, cy`` in pixels of the ``height × width`` grid.
        c2w: ``[T, 4, 4]`` camera-to-world poses (OpenCV axes).

    Returns:
        ``[T, height, width, 6]`` float32.
    """
    intrinsics = np.asarray(intrinsics, dtype=np.float64).reshape(-1, 4)
    poses = torch.from_numpy(np.asarray(c2w, dtype=np.float64).reshape(-1, 4, 4))
    rays = [_plucker(poses[t : t + 1], _pixel_directions(height, width, intrinsics[t], poses.device))
            for t in range(len(intrinsics))]
    return torch.cat(rays).reshape(-1, height, width, 6).numpy()


def rotation_warp_grid(rel: torch.Tensor, height: int, width: int, fovy_deg: float) -> torch.Tensor:
    """Where each pixel of a new view was in the previous view, the camera having turned by ``rel``.

    ``rel [B, 4, 4]``: the new camera's pose in the previous camera's frame. Only the rotation is used
    (a translation needs depth: :func:`reprojection_grid`). Returns the ``grid_sample``
    grid ``[B, height, width, 2]`` (x, y in [-1, 1], pixel centres at ±1, ``align_corners=True``): identity
    for no rotation, so a still camera sees its previous frame exactly.
    """
    return reprojection_grid(rel, None, height, width, fovy_deg)[0]


def reprojection_grid(rel: torch.Tensor, depth: torch.Tensor | None, height: int, width: int,
                      fovy_deg: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each pixel of a new view lies in a previous view, given the new view's depth.

    Args:
        rel: ``[B, 4, 4]`` the new camera's pose in the previous camera's frame.
        depth: ``[B, height, width]`` the new view's depth along its optical axis (the pixels' z), in the units of
            ``rel``'s translation; ``None`` or ``inf`` pixels: at infinity (the rotation alone moves them).

    Returns:
        ``(grid [B, height, width, 2], z [B, height, width])``: the ``grid_sample`` grid into the previous view (x, y in
        [-1, 1] at the pixel centres, ``align_corners=True``; behind the previous camera: far off-screen) and each
        point's depth in the previous camera (``inf`` at infinity). A pure rotation gives the same grid
        whatever the depth.
    """
    fx, fy, cx, cy = intrinsics = camera_intrinsics(height, width, fovy_deg)
    # float64 for the rotation alone (a still camera gives the identity exactly); float32 with depth, whose own
    # precision is far coarser (and a depth warp runs on every decoded frame of a batch)
    dtype = torch.float64 if depth is None else torch.float32
    xs, ys = _pixel_axes(height, width, intrinsics, rel.device, dtype)
    x, y, z = _rotated_directions(rel[:, :3, :3].to(dtype), xs, ys)  # (B, H, W) each: directions at depth 1
    far = torch.full_like(z, math.inf)
    if depth is not None:  # an infinite depth (nothing known there) moves with the rotation alone
        depth = depth.reshape(z.shape).to(dtype)
        finite = torch.isfinite(depth)
        d = depth.where(finite, 0)
        t = rel[:, :3, 3].to(dtype)[:, :, None, None]
        x, y, z = (torch.where(finite, torch.addcmul(t[:, k], a, d), a) for k, a in enumerate((x, y, z)))
        far = torch.where(finite, z, far)
    front = z.clamp_min(1e-3)  # behind the previous camera: pushed far off-screen (border value)
    u = (fx * x / front + cx) / max(width - 1, 1) * 2 - 1
    v = (fy * y / front + cy) / max(height - 1, 1) * 2 - 1
    return torch.stack([u, v], dim=-1).float(), far.float()


def _min3x3(x: torch.Tensor) -> torch.Tensor:
    """The minimum over each pixel's 3×3 neighbourhood of ``x [B, H, W]`` (``inf`` beyond the edge)."""
    H, W = x.shape[-2:]
    padded = torch.nn.functional.pad(x[:, None], (1, 1, 1, 1), value=math.inf)[:, 0]
    # separable: the minimum along each row, then down each column (4 minimums instead of 8, the same values)
    rows = torch.minimum(torch.minimum(padded[:, :, 0:W], padded[:, :, 1:W + 1]), padded[:, :, 2:W + 2])
    return torch.minimum(torch.minimum(rows[:, 0:H], rows[:, 1:H + 1]), rows[:, 2:H + 2])


def _rotated_directions(rot: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> list[torch.Tensor]:
    """``rot [B, 3, 3] @ (x, y, 1)`` for every pixel: three ``[B, H, W]`` planes (row ``k`` of ``rot`` gives plane k)."""
    r = rot[:, :, :, None, None]  # (B, 3, 3, 1, 1)
    return [torch.addcmul(r[:, k, 2] + r[:, k, 1] * ys, r[:, k, 0], xs) for k in range(3)]


def project_depth(rel: torch.Tensor, depth: torch.Tensor, fovy_deg: float
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each pixel of a previous view's ``depth [B, H, W]`` as a 3-D point projected into the new camera ``rel``:
    ``(u, v, z, front)`` ``[B, H*W]`` (pixel coordinates, depth, in front of the camera). :func:`splat_lands` and
    :func:`splat_depth` take it as ``projected`` where a caller needs both (the projection computed once)."""
    B, H, W = depth.shape
    fx, fy, cx, cy = intrinsics = camera_intrinsics(H, W, fovy_deg)
    xs, ys = _pixel_axes(H, W, intrinsics, depth.device, torch.float32)
    # p' = R^T (d * dir - t) = d * (R^T dir) - R^T t, plane by plane (fp32, as the depth)
    rot_t = rel[:, :3, :3].float().transpose(1, 2)
    shift = (rot_t @ rel[:, :3, 3:].float())[:, :, :, None]  # (B, 3, 1, 1)
    depth = depth.float()
    x, y, z = (torch.addcmul(-shift[:, k], depth, a) for k, a in enumerate(_rotated_directions(rot_t, xs, ys)))
    inv_z = z.clamp_min(1e-2).reciprocal_()
    u = torch.addcmul(torch.full_like(x, cx), x, inv_z, value=fx)
    v = torch.addcmul(torch.full_like(y, cy), y, inv_z, value=fy)
    return u.view(B, -1), v.view(B, -1), z.view(B, -1), z.view(B, -1) > 1e-2


def floor_depth(c2w: torch.Tensor, height: int, width: int, fovy_deg: float, camera_height: float) -> torch.Tensor:
    """Where each pixel's ray meets the floor, as a depth along the optical axis: ``[B, H, W]`` float32 for poses
    ``c2w [B, 4, 4]`` (OpenCV axes, the world's +Y pointing down, as a level start pose makes it; the floor
    ``camera_height`` below the world's origin, the start camera), ``inf`` where the ray does not go down. Nothing
    the camera sees lies beyond it: the floor is opaque."""
    dirs = _pixel_directions(height, width, camera_intrinsics(height, width, fovy_deg), c2w.device)  # (S, 3), z = 1
    down = (dirs[None] @ c2w[:, :3, :3].double().transpose(1, 2))[..., 1]  # (B, S): the ray's world-down per unit depth
    above = camera_height - c2w[:, 1:2, 3].double()  # (B, 1): the floor's distance below each camera
    depth = torch.where(down > 1e-9, above / down.clamp_min(1e-9), torch.full_like(down, math.inf))
    return depth.float().view(-1, height, width)


def splat_lands(rel: torch.Tensor, depth: torch.Tensor, fovy_deg: float,
                projected: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
    """``[B]`` bool: whether any point of ``depth`` lands where :func:`splat_depth` writes it (a pixel of the new
    view, in front of the camera). Where none does, the splat is empty: nothing of that view can be seen.
    ``projected``: :func:`project_depth` of ``(rel, depth)`` when the caller has it."""
    H, W = depth.shape[-2:]
    u, v, _, front = project_depth(rel, depth, fovy_deg) if projected is None else projected
    # a point writes the four pixels around it: its top-left one, floor(u), from -1 to W - 1 (so -1 <= u < W)
    return (front & (u >= -1) & (u < W) & (v >= -1) & (v < H)).any(dim=1)


def splat_depth(rel: torch.Tensor, depth: torch.Tensor, fovy_deg: float, fill: int = 2,
                projected: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
    """A previous view's depth seen from a new camera: the depth map of the new view, ``inf`` where nothing lands.

    Each pixel of ``depth [B, H, W]`` (the previous view's, along its optical axis) is placed at its 3-D point,
    moved into the new camera (``rel [B, 4, 4]``: the new camera in the previous camera's frame) and written to the
    four new pixels around where it projects, the nearest point winning (a z-buffer). A camera walking forward
    magnifies the view; ``fill`` passes of a 3×3 minimum close the holes that leaves. With the result,
    :func:`reprojection_grid` finds each new pixel's place in the previous view (forward-warped depth,
    backward-warped colour: no pixel is drawn twice and no pixel is torn). ``projected``: :func:`project_depth` of
    ``(rel, depth)`` when the caller has it. Not differentiable (the z-buffer works on the depths' bits): nothing is
    trained through it, the depth net learns from :func:`neuralsim.frame_memory.photometric_depth_loss`.
    """
    B, H, W = depth.shape
    u, v, z, front = project_depth(rel, depth, fovy_deg) if projected is None else projected
    miss = B * H * W
    out = torch.full((miss + 1,), math.inf, dtype=torch.float32, device=depth.device)  # the last: a bin for misses
    u0, v0 = u.floor(), v.floor()
    # Each point's top-left pixel as a flat index, computed once (its four pixels are it + 0, 1, W, W + 1; the clamp
    # only keeps the arithmetic in range: a pixel out of view goes to the miss bin), and whether its left / right
    # column and its top / bottom row are in view, each tested once (25 % faster at batch 64 than per pixel, the
    # same depth map bit for bit).
    corner = (v0.clamp(-1, H - 1) * W + u0.clamp(-1, W - 1)).long() + (torch.arange(B, device=depth.device) * H * W)[:, None]
    cols = ((u0 >= 0) & (u0 <= W - 1), (u0 >= -1) & (u0 <= W - 2))
    rows = (front & (v0 >= 0) & (v0 <= H - 1), front & (v0 >= -1) & (v0 <= H - 2))
    # The z-buffer's minimum taken on the floats' bits as int32: a point written to a pixel lies in front of the
    # camera (z > 0, finite), and positive IEEE floats order as their bits do (inf, the empty pixel, above them all),
    # so the minimum is the same bit for bit, and the integer scatter is twice as fast as the float one on a CPU.
    # (The miss bin gathers points behind the camera too: its value, discarded, is not a depth.)
    out_bits, z_bits = out.view(torch.int32), z.reshape(-1).contiguous().view(torch.int32)
    for dv in (0, 1):
        for du in (0, 1):
            index = torch.where(rows[dv] & cols[du], corner + (dv * W + du), miss)
            out_bits.scatter_reduce_(0, index.reshape(-1), z_bits, reduce="amin")
    out = out[:-1].reshape(B, H, W)
    for _ in range(fill):  # holes take the nearest depth around them (the surface in front wins at an edge)
        out = torch.where(torch.isinf(out), _min3x3(out), out)
    return out


__all__ = ["camera_step", "CameraIntegrator", "servo_config_fields", "camera_intrinsics", "plucker_rays_torch", "plucker_rays",
           "rotation_warp_grid", "reprojection_grid", "project_depth", "splat_depth", "splat_lands", "floor_depth"]
