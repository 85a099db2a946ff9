"""How far the dream's camera is from the room's, and what that costs the frame memory's object pixels.

Protocol. ``fidelity.py``'s run of one action protocol (``explore``: the collection policy's actions, or
``sticky``) on its held-out seeds (from 1,000,000; 16 real context frames, then the dream), twice: with the camera
moved by the commanded motion (``camera_velocity_gain = 0``: SANA-WM's DSL) and with the room's velocity servo
(the fields of the env's ``camera_spec``, :func:`neuralsim.camera.servo_config_fields`: it ramps up from rest and
coasts after a release, as the room's agent does). At each dream step a forward hook on ``model.frame_memory``
records the pose the memory is warped by (the camera relative to the last real frame) and the memory's frame and
depth. Reported per camera and horizon: the translation error of that pose against the room's true one (from
``info["pose"]``; mean and max over seeds, metres; the room's own mean motion beside it) and the PSNR of the
memory's warp alone on the task objects' pixels it sees (MuJoCo's segmentation of the real frame), with that pose
and with the room's true pose (``true``: what a perfect camera would give the same depth). The dream's own pixels,
the seam and the gate are left out: this is the warp's placement, which the fidelity benchmark's
``object_psnr_explore_t4`` inherits.

    python benchmarks/memory_pose.py [--model default] [--protocol explore] [--seeds 32] [--quick]

``--quick``: 8 seeds. Last line: one JSON object, also written to ``benchmarks/results/<name>.json`` (default
``memory_pose``; ``--quick``: ``memory_pose_quick``).
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_standard_args, load_memory_model, machine_info, resolve_standard_args, rounded, set_threads, write_result  # noqa: E402

HORIZONS = (1, 2, 4, 8)
SEEDS = (32, 8)  # held-out seeds: full, --quick
CAMERAS = ("commanded", "servo")


def object_warp_psnr(memory_module: Any, memory: torch.Tensor, rel: torch.Tensor, depth: torch.Tensor | None,
                     real: np.ndarray, objects: np.ndarray) -> float | None:
    """PSNR (dB) of ``memory`` warped by ``rel`` against ``real`` ``[B, H, W, 3]`` uint8 over the object pixels
    (``objects`` ``[B, H, W]``) the warp sees; None when it sees none."""
    warped, seen = memory_module.warp(memory, rel, depth)
    target = torch.from_numpy(np.ascontiguousarray(real)).float().div(127.5).sub(1).permute(0, 3, 1, 2)
    mask = (seen & torch.from_numpy(objects).bool()[:, None]).expand_as(target)
    if not bool(mask.any()):
        return None
    mse = float(((warped.float() - target) ** 2)[mask].mean()) * 127.5 ** 2
    return float(10 * np.log10(255 ** 2 / max(mse, 1e-10)))


def run_camera(model: Any, fields: dict[str, Any], episodes: list[dict], n_ctx: int, dream_seed: int) -> list[tuple]:
    """The dream of ``episodes`` with the config ``fields`` set; per dream step the frame memory's
    ``(memory, rel, depth)`` of its last remembered frame (the last context frame). A memory of several frames
    (``frame_memory_frames``) is called once per frame each step, the earlier ones first and the last one last."""
    import fidelity

    model.config = model.config.replace(**fields)
    calls: list[tuple] = []
    hook = model.frame_memory.register_forward_hook(
        lambda module, inputs, output: calls.append((inputs[1].detach(), inputs[2].detach(),
                                                     inputs[3].detach() if len(inputs) > 3 and inputs[3] is not None else None)))
    try:
        context = np.stack([ep["raw"] for ep in episodes])
        ctx_actions = np.stack([ep["actions"][: n_ctx - 1] for ep in episodes])
        future_actions = np.stack([ep["actions"][n_ctx - 1:] for ep in episodes])
        fidelity.dream_rollout(model, context, ctx_actions, future_actions, [ep["description"] for ep in episodes],
                               dream_seed, None)
    finally:
        hook.remove()
    steps = future_actions.shape[1]
    if not calls or len(calls) % steps:
        raise RuntimeError(f"the frame memory was called {len(calls)} times in {steps} dream steps; expected the same "
                           "number each step")
    per_step = len(calls) // steps
    return calls[per_step - 1::per_step]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="a model directory or 'default' (needs a frame memory)")
    parser.add_argument("--protocol", default="explore", choices=("explore", "sticky"))
    parser.add_argument("--threads", type=int, default=1)
    add_standard_args(parser, "memory_pose", quick_help="8 seeds", seeds=SEEDS)
    args = parser.parse_args(argv)
    resolve_standard_args(parser, args, "memory_pose", SEEDS)
    set_threads(args.threads)
    import gymnasium as gym

    import fidelity
    import neuralsim  # noqa: F401  (registers the envs)
    from neuralsim.camera import servo_config_fields

    t0 = time.perf_counter()
    model = load_memory_model(args.model)
    cfg = model.config
    k = int(cfg.frames_per_latent)
    n_ctx = 1 + (fidelity.CONTEXT - 1) // k
    env = gym.make("NeuralSimRoom-v0", image_size=tuple(cfg.image_size), reach_radius=1e-3,
                   **fidelity.WORLD_ENV_KWARGS).unwrapped
    servo = servo_config_fields(env.camera_spec)
    if not servo:
        raise SystemExit("the room states no velocity servo in its camera_spec: nothing to compare")
    seeds = [args.first_seed + i for i in range(args.seeds)]
    try:
        reach = float(inspect.signature(type(env)).parameters["reach_radius"].default)
        episodes = fidelity.protocol_episodes(args.protocol, env, seeds, HORIZONS, k=k, n_ctx=n_ctx, reach=reach)
    finally:
        env.close()
    poses = np.stack([ep["poses"] for ep in episodes]).astype(np.float64)  # [B, 1 + steps, 4, 4]
    dream_seed = fidelity.PROTOCOLS.index(args.protocol)
    result: dict[str, Any] = {"benchmark": "memory_pose", "model": args.model, "protocol": args.protocol,
                              "seeds": args.seeds, "first_seed": args.first_seed, "horizons": list(HORIZONS),
                              "servo": servo, "model_servo": {k: getattr(cfg, k) for k in servo}}
    with torch.no_grad():
        for camera in CAMERAS:
            calls = run_camera(model, servo if camera == "servo" else {"camera_velocity_gain": 0.0}, episodes, n_ctx,
                               dream_seed)
            for h in HORIZONS:
                memory, rel, depth = calls[h - 1]
                true = torch.from_numpy(np.stack([np.linalg.inv(p[n_ctx - 1]) @ p[n_ctx - 1 + h] for p in poses]))
                error = (rel[:, :3, 3].double() - true[:, :3, 3]).norm(dim=1)
                result[f"translation_error_mean_{camera}_t{h}"] = float(error.mean())
                result[f"translation_error_max_{camera}_t{h}"] = float(error.max())
                real = np.stack([ep["obs"][n_ctx - 1 + h] for ep in episodes])
                objects = np.stack([ep["masks"][n_ctx - 1 + h] for ep in episodes])
                result[f"object_warp_psnr_{camera}_t{h}"] = object_warp_psnr(model.frame_memory, memory, rel, depth,
                                                                            real, objects)
                if camera == CAMERAS[0]:
                    result[f"room_translation_mean_t{h}"] = float(true[:, :3, 3].norm(dim=1).mean())
                    result[f"object_warp_psnr_true_t{h}"] = object_warp_psnr(model.frame_memory, memory, true.float(),
                                                                            depth, real, objects)
    result.update(seconds=time.perf_counter() - t0, **machine_info())
    print(f"the frame memory's pose against the room's ({args.protocol}, {args.seeds} seeds, model {args.model}): "
          f"translation error mean / max (m), and the warp's PSNR on the object pixels it sees (dB)")
    print(f"{'horizon':<9}{'room moved':>11}" + "".join(f"{c + ' err':>20}{c + ' obj':>15}" for c in CAMERAS)
          + f"{'true pose obj':>15}")
    for h in HORIZONS:
        row = f"t+{h:<7}{result[f'room_translation_mean_t{h}']:>11.3f}"
        for c in CAMERAS:
            psnr = result[f"object_warp_psnr_{c}_t{h}"]
            row += (f"{result[f'translation_error_mean_{c}_t{h}']:>12.3f} / {result[f'translation_error_max_{c}_t{h}']:.3f}"
                    f"{'-' if psnr is None else f'{psnr:.2f}':>15}")
        psnr = result[f"object_warp_psnr_true_t{h}"]
        print(row + f"{'-' if psnr is None else f'{psnr:.2f}':>15}")
    result = rounded(result)
    write_result(result, args.results_dir / f"{args.name}.json")
    return result


if __name__ == "__main__":
    main()
