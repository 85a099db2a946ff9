"""Does the dream show an agent reaching its target? The room's endings replayed in the dream.

The transfer benchmark's dream underpays the room's best policies (they end most episodes at the ball in the room,
about half in the dream). This benchmark asks why, on the approaches a trained agent makes: the room's ``seek``
policy (``neuralsim collect --policy seek``: it heads for the target on the walk-and-turn keys, straying now and
then) runs ``--episodes`` held-out layouts until the room's success; the dream starts from each real first frame and
its description and replays the same actions open loop, decoding every frame. Reported, over the episodes that end
in a success:

- ``detector_fires_real``: the share whose real last frame the model's termination detector calls an ending (the
  detector can see a success);
- ``dream_ends``: the share the dream ends within the last 4 steps (its termination probability > 0.5, what a dream
  env does): does the dream *show* it;
- ``end_psnr`` / ``end_object_psnr``: the dream's last frame against the real one, all pixels / the task objects'
  (MuJoCo's segmentation);
- ``target_growth_real`` / ``_dream``: the target's pixels in the last frame over the first (counted by the room's
  red target colour), and the median of their ratio per episode (1: the dream's target grows as the room's).

``--oracle-depth`` replaces the frame memory's depth of the start frame by the room's own depth map of it (MuJoCo's
depth buffer): what a perfect depth net would give, so the share of the gap the depth net accounts for.
``--ball-start`` is the room's ``ball_start``: ``rest`` (the default, the room's default task) starts its ball still on
the floor; ``thrown`` throws it: a thrown ball falls and rolls on for a while at a velocity the first frame does not
show, while the dream's frame memory holds it where the first frame has it.

    OMP_NUM_THREADS=1 python benchmarks/approach.py [--model default] [--episodes 24] [--oracle-depth]
        [--ball-start thrown|rest] [--strips PNG]

Prints a table; the last line is one JSON object, also written to ``benchmarks/results/approach.json`` (the ball
thrown: ``approach_ball_thrown.json``; ``--quick``:
4 episodes, ``approach_quick.json``; ``--name``, ``--results-dir`` to change).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (add_standard_args, ball_start_name, machine_info, resolve_standard_args, room_ball_start,  # noqa: E402
                     rounded, set_threads, write_result)
from fidelity import masked_psnr, psnr_stats  # noqa: E402

#: Held-out layouts of this benchmark (the transfer benchmark's are from 500,000, the fidelity benchmark's 1,000,000).
FIRST_SEED = 1_200_000
#: The dream "shows" an ending when it ends within this many steps of the room's.
END_WINDOW = 4
#: RGB of the room's red target and the tolerance the count allows (the dream's colours are a little off).
RED, RED_TOLERANCE = (np.array([200, 20, 20]), 90)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from neuralsim.envs.room import NeuralSimRoomEnv  # light: mujoco loads with the first env

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="checkpoint directory or shipped model name")
    parser.add_argument("--episodes", type=int, default=None, help="layouts (default 24; --quick 4)")
    parser.add_argument("--max-episode-steps", type=int, default=200, help="episode limit (default 200)")
    parser.add_argument("--oracle-depth", action="store_true",
                        help="the frame memory's depth of the start frame from the room's depth buffer")
    parser.add_argument("--ball-start", choices=NeuralSimRoomEnv.BALL_STARTS, default=room_ball_start(),
                        help="the room's ball at reset: at rest on the floor (default, the room's) or thrown (it falls "
                             "and rolls for a while)")
    parser.add_argument("--strips", type=Path, default=None,
                        help="PNG of the last 8 frames, room above dream, of the first 8 successful episodes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    add_standard_args(parser, "approach", quick_help="4 layouts (a smoke run, not a score)")
    args = parser.parse_args(argv)
    resolve_standard_args(parser, args, ball_start_name("approach", args.ball_start))
    args.episodes = args.episodes if args.episodes is not None else (4 if args.quick else 24)
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    if args.max_episode_steps < 1:
        parser.error(f"--max-episode-steps must be >= 1, got {args.max_episode_steps}")
    return args


def target_pixels(frames: np.ndarray) -> np.ndarray:
    """``[N, H, W, 3]`` uint8 → ``[N]`` pixels of the room's red target colour."""
    return (np.abs(frames.astype(np.int32) - RED).max(axis=-1) < RED_TOLERANCE).sum(axis=(1, 2))


def room_episode(seed: int, max_steps: int, image_size: tuple[int, int], ball_start: str) -> dict[str, Any]:
    """One ``seek`` episode of the room's ball task from ``reset(seed)`` at the model's ``image_size``: frames,
    actions, the end's object mask, the first frame's depth, its description."""
    import gymnasium as gym

    from neuralsim.data import make_policy

    env = gym.make("NeuralSimRoom-v0", max_episode_steps=max_steps, image_size=image_size, ball_start=ball_start)
    obs, info = env.reset(seed=seed)
    room = env.unwrapped
    first_depth, description = room.depth_map().copy(), str(info.get("description", ""))
    policy = make_policy("seek", env)
    policy.reset(env, np.random.default_rng(seed))
    frames, actions, success = [obs], [], False
    while True:
        action = np.asarray(policy.act(obs, info), np.float32)
        obs, _, terminated, truncated, info = env.step(action)
        frames.append(obs)
        actions.append(action)
        if terminated or truncated:
            success = bool(terminated)
            break
    end_objects = room.object_mask()
    env.close()
    return {"frames": np.stack(frames), "actions": np.stack(actions), "success": success, "depth": first_depth,
            "description": description, "end_objects": end_objects}


def dream_replay(session: Any, episode: dict[str, Any], seed: int) -> dict[str, np.ndarray]:
    """The dream from the episode's first frame and description under its actions: frames ``[1 + T, H, W, 3]`` and
    termination probabilities ``[T]``."""
    generator = session.generator(seed)
    inputs = session.check_start(1, image=episode["frames"][:1], prompt=[episode["description"] or None], resize=True)
    state, _, _ = session.start(1, generator, inputs)
    frames, probs = [episode["frames"][0]], []
    for action in episode["actions"]:
        out = session.step(state, action[None], generator, decode=True)
        state = out.state
        frames.append(out.frames[0, -1])
        probs.append(float(out.termination_prob[0]))
    return {"frames": np.stack(frames), "termination_prob": np.asarray(probs)}


def oracle_depth(depths: dict[str, np.ndarray]) -> Any:
    """A ``FrameMemory.memory_depth`` that returns the room's depth of any frame in ``depths`` (keyed by its pixels'
    hash) and the net's elsewhere (capped by the model's floor where it has one, as the net's always is; the room's own
    depth needs no cap)."""
    import torch

    from neuralsim.frame_memory import FrameMemory

    net_depth = FrameMemory.memory_depth

    def memory_depth(self: Any, memory: torch.Tensor, c2w: torch.Tensor | None = None) -> torch.Tensor | None:
        depth = net_depth(self, memory, c2w)
        if depth is None:
            return None
        pixels = ((memory.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        depth = depth.clone()
        for i, frame in enumerate(pixels):
            true = depths.get(hashlib.sha1(np.ascontiguousarray(frame).tobytes()).hexdigest())
            if true is not None:
                depth[i] = torch.from_numpy(true).to(depth)
        return depth

    return memory_depth


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(args.threads)
    import torch

    import neuralsim  # noqa: F401  (registers the envs)
    from neuralsim.frame_memory import FrameMemory
    from neuralsim.session import DreamSession

    t0 = time.perf_counter()
    session = DreamSession(args.model, dtype="float32")
    if session.model.config.frames_per_latent != 1:
        raise SystemExit(f"approach.py replays one room step per dream step: it needs a model with frames_per_latent 1, "
                         f"got {session.model.config.frames_per_latent} ({args.model!r})")
    detector = getattr(session.model, "termination_detector", None)
    depths: dict[str, np.ndarray] = {}
    net_depth = FrameMemory.memory_depth
    if args.oracle_depth:
        if session.model.frame_memory is None or session.model.frame_memory.depth is None:
            raise SystemExit(f"--oracle-depth: model {args.model!r} has no frame memory with a depth net")
        FrameMemory.memory_depth = oracle_depth(depths)
    rows, strips = [], []
    try:
        for e in range(args.episodes):
            seed = FIRST_SEED + e
            ep = room_episode(seed, args.max_episode_steps, tuple(session.model.config.image_size), args.ball_start)
            if not ep["success"]:
                rows.append({"seed": seed, "steps": len(ep["actions"]), "success": False})
                continue
            depths[hashlib.sha1(np.ascontiguousarray(ep["frames"][0]).tobytes()).hexdigest()] = ep["depth"]
            with torch.no_grad():
                dream = dream_replay(session, ep, seed)
                fires_real = None if detector is None else bool(detector(torch.from_numpy(ep["frames"][-1:])).item() > 0)
            real_px, dream_px = target_pixels(ep["frames"][[0, -1]]), target_pixels(dream["frames"][[0, -1]])
            real_growth = float(real_px[1] / max(real_px[0], 1))
            dream_growth = float(dream_px[1] / max(dream_px[0], 1))
            rows.append({"seed": seed, "steps": len(ep["actions"]), "success": True, "detector_fires_real": fires_real,
                         "dream_ends": bool((dream["termination_prob"][-END_WINDOW:] > 0.5).any()),
                         "end_psnr": psnr_stats(dream["frames"][-1:], ep["frames"][-1:])["pooled"],
                         "end_object_psnr": masked_psnr(dream["frames"][-1:], ep["frames"][-1:], ep["end_objects"][None]),
                         "target_growth_real": real_growth, "target_growth_dream": dream_growth})
            if args.strips is not None and len(strips) < 8:
                k = min(8, len(ep["frames"]))
                strips.append(np.concatenate([np.concatenate(list(ep["frames"][-k:]), 1),
                                              np.concatenate(list(dream["frames"][-k:]), 1)], 0))
    finally:
        FrameMemory.memory_depth = net_depth
    ok = [r for r in rows if r["success"]]
    def mean(key: str) -> float | None:  # over the successful episodes that have the figure
        values = [r[key] for r in ok if r.get(key) is not None]
        return float(np.mean(values)) if values else None

    growth = (float(np.median([r["target_growth_dream"] / max(r["target_growth_real"], 1e-9) for r in ok]))
              if ok else None)
    result = {"benchmark": "approach", "model": args.model, "quick": args.quick, "oracle_depth": args.oracle_depth,
              "ball_start": args.ball_start,
              "episodes": args.episodes, "first_seed": FIRST_SEED, "successes": len(ok),
              "mean_steps": float(np.mean([r["steps"] for r in ok])) if ok else None,
              "detector_fires_real": mean("detector_fires_real"), "dream_ends": mean("dream_ends"),
              "end_psnr": mean("end_psnr"), "end_object_psnr": mean("end_object_psnr"),
              "target_growth_real": mean("target_growth_real"), "target_growth_dream": mean("target_growth_dream"),
              "target_growth_ratio_median": growth, "rows": rows,
              "seconds": time.perf_counter() - t0, "machine": machine_info()}
    print(f"\n{args.model}{' (oracle depth)' if args.oracle_depth else ''}, ball {args.ball_start}: {len(ok)} of "
          f"{args.episodes} seek episodes "
          f"end at the target in the room", file=sys.stderr)
    print(f"{'figure':<44}{'value':>10}", file=sys.stderr)
    for key in ("detector_fires_real", "dream_ends", "end_psnr", "end_object_psnr", "target_growth_real",
                "target_growth_dream", "target_growth_ratio_median"):
        value = result[key]
        print(f"{key:<44}{'-' if value is None else f'{value:.3f}':>10}", file=sys.stderr)
    if strips:
        import imageio.v3 as iio

        width = max(s.shape[1] for s in strips)
        image = np.concatenate([np.pad(s, ((0, 4), (0, width - s.shape[1]), (0, 0))) for s in strips], 0)
        args.strips.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(args.strips, image)
    result = rounded(result)
    write_result(result, args.results_dir / f"{args.name}.json")
    return result


if __name__ == "__main__":
    main()
