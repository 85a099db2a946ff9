"""The dream under a held key from one start frame, as an agent's dream episode begins: does it stay a room?

The fidelity benchmark dreams from 16 real frames under mixed actions; an agent in ``SanaWM-v0`` starts from one real
reset frame and may hold one key for a long time (PPO's first policies walk straight on). Protocol: held-out layouts
of the room's default task (``NeuralSimRoom-v0``, seeds from 1,000,000), its reset frame and description as the envs
start from them (``DreamSession.start``: the frame memory, the views of a prompt), then ``--steps`` steps holding one
key set (``w``, ``l``, ``wl``: walk, turn, both) in the dream and in the real room. At horizons 1, 4, 16, 32, 64:

* ``psnr_{keys}_t{t}``: pooled PSNR of the frame the env shows (the decode with the frame memory) against the room's;
* ``raw_psnr_{keys}_t{t}``: the same for the dynamics' own frame (decoded without the memory, which hides it while
  it lasts: the memory fades after 24 steps of walking);
* ``copy_psnr_{keys}_t{t}``: the start frame held (the baseline a dream must beat);
* ``gradient_ratio_{keys}_t{t}``: the shown frame's mean absolute pixel gradient over the room frame's (median over
  the layouts): the room is flat coloured surfaces and a few edges; blur takes gradient away (< 1), a dream that
  turns into coloured noise adds it (> 1);
* ``latent_rms_ratio_{keys}_t{t}``: the dreamed latent's RMS over the real frame's encoded one (median over the
  layouts): 1 is a latent of a room's scale.

    OMP_NUM_THREADS=1 python benchmarks/held_keys.py [--model default] [--seeds 16] [--steps 64] [--strips-dir DIR]
    OMP_NUM_THREADS=1 python benchmarks/held_keys.py --quick      # 4 layouts, 32 steps

Prints a table; the last line is one JSON object, also written to ``benchmarks/results/held_keys.json``
(``--quick``: ``held_keys_quick.json``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_standard_args, machine_info, resolve_standard_args, rounded, set_threads, write_result  # noqa: E402
from fidelity import psnr_stats  # noqa: E402

SEEDS = (16, 4)  # held-out layouts: full, --quick
STEPS = (64, 32)
KEYSETS = ("w", "l", "wl")
HORIZONS = (1, 4, 16, 32, 64)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="checkpoint directory or shipped name")
    parser.add_argument("--steps", type=int, default=None, help=f"steps per key (default {STEPS[0]}; --quick {STEPS[1]})")
    parser.add_argument("--keys", nargs="+", default=list(KEYSETS), help=f"key sets to hold (default {' '.join(KEYSETS)})")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--strips-dir", type=Path, default=None,
                        help="write per key a PNG: for each layout the room, the shown dream and the dynamics' own frames")
    add_standard_args(parser, "held_keys", quick_help=f"{SEEDS[1]} layouts, {STEPS[1]} steps", seeds=SEEDS,
                      seeds_what="held-out layouts")
    args = parser.parse_args(argv)
    resolve_standard_args(parser, args, "held_keys", SEEDS)
    args.steps = args.steps if args.steps is not None else STEPS[1 if args.quick else 0]
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    bad = [k for k in args.keys if not k or set(k) - set("wsadijkl")]
    if bad:
        parser.error(f"--keys must be key strings over 'wsadijkl' (e.g. w l wl), got {bad}")
    return args


def gradient_energy(frames: np.ndarray) -> np.ndarray:
    """Mean absolute horizontal + vertical difference of each uint8 image ``[N, H, W, 3]`` -> ``[N]``."""
    x = frames.astype(np.float32)
    return np.abs(np.diff(x, axis=-2)).mean(axis=(-3, -2, -1)) + np.abs(np.diff(x, axis=-3)).mean(axis=(-3, -2, -1))


def real_rollouts(seeds: Sequence[int], vector: np.ndarray, steps: int, image_size: tuple[int, int]
                  ) -> tuple[np.ndarray, list[str], np.ndarray]:
    """The room's reset frames ``[N, H, W, 3]``, descriptions, and the frames after each of ``steps`` steps of the held
    action ``[N, steps, H, W, 3]`` (an episode that ends early keeps its last frame: the room stops there)."""
    import gymnasium as gym

    import neuralsim.envs  # noqa: F401  (registers the room)

    env = gym.make("NeuralSimRoom-v0", image_size=tuple(image_size)).unwrapped
    starts, prompts, frames = [], [], []
    for seed in seeds:
        obs, info = env.reset(seed=int(seed))
        starts.append(obs)
        prompts.append(info["description"])
        episode, ended = [], False
        for _ in range(steps):
            if not ended:
                obs, _, ended, _, _ = env.step(vector)
            episode.append(obs)
        frames.append(np.stack(episode))
    env.close()
    return np.stack(starts), prompts, np.stack(frames)


def dream_rollouts(model: Any, starts: np.ndarray, prompts: list[str], vector: np.ndarray, steps: int,
                   seed: int) -> dict[str, np.ndarray]:
    """The dream of the same held action from each reset frame: ``shown`` (the env's frames), ``raw`` (decoded without
    the frame memory) ``[N, steps, H, W, 3]`` and ``latent_rms [N, steps]``."""
    from neuralsim.session import DreamSession

    session = DreamSession(model, dtype="float32")
    g = session.generator(seed)
    state, _, _ = session.start(len(starts), g, session.check_start(len(starts), image=starts, prompt=prompts))
    actions = np.repeat(vector[None], len(starts), 0).astype(np.float32)
    shown, raw, rms = [], [], []
    for _ in range(steps):
        out = session.step(state, actions, g)
        state = out.state
        shown.append(out.frames[:, -1])
        raw.append(session.decode(out.latent[:, None], first_frame=False)[:, -1])
        rms.append(out.latent.float().pow(2).mean(dim=(1, 2, 3)).sqrt().cpu().numpy())
    return {"shown": np.stack(shown, 1), "raw": np.stack(raw, 1), "latent_rms": np.stack(rms, 1)}


def strip(real: np.ndarray, shown: np.ndarray, raw: np.ndarray, every: int) -> np.ndarray:
    """Rows of three per layout (room, shown dream, the dynamics' own frame), a frame every ``every`` steps."""
    pick = list(range(every - 1, real.shape[1], every))
    rows = [np.concatenate(list(x[i, pick]), 1) for i in range(len(real)) for x in (real, shown, raw)]
    return np.concatenate(rows, 0)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_threads(args.threads or 1)
    from neuralsim.actions import keys_to_vector
    from neuralsim.model import WorldModel

    t0 = time.perf_counter()
    model = WorldModel.from_pretrained(args.model).float().eval()
    if model.config.action_spec.get("type") != "box" or model.config.action_dim != 4:
        raise SystemExit(f"held_keys.py needs a model of the room's 4-dim camera actions, got {model.config.action_spec}")
    if model.config.frames_per_latent != 1:
        raise SystemExit(f"held_keys.py compares one dreamed frame per room step: it needs frames_per_latent 1, the "
                         f"model has {model.config.frames_per_latent}")
    seeds = [args.first_seed + i for i in range(args.seeds)]
    horizons = [t for t in HORIZONS if t <= args.steps]
    figures: dict[str, Any] = {}
    print(f"{'keys':>5s} {'t':>4s} {'shown dB':>9s} {'raw dB':>7s} {'copy dB':>8s} {'gradient':>9s} {'latent rms':>11s}",
          file=sys.stderr)
    for k, keys in enumerate(args.keys):
        vector = keys_to_vector(keys).astype(np.float32)
        starts, prompts, real = real_rollouts(seeds, vector, args.steps, model.config.image_size)
        with torch.no_grad():
            dream = dream_rollouts(model, starts, prompts, vector, args.steps, seed=7 + k)
            real_rms = model.encode(real.reshape(-1, 1, *real.shape[2:]))[:, 0].float().pow(2).mean(dim=(1, 2, 3)).sqrt()
        real_rms = real_rms.view(len(seeds), args.steps).cpu().numpy()
        for t in horizons:
            row = {"psnr": psnr_stats(dream["shown"][:, t - 1], real[:, t - 1])["pooled"],
                   "raw_psnr": psnr_stats(dream["raw"][:, t - 1], real[:, t - 1])["pooled"],
                   "copy_psnr": psnr_stats(starts, real[:, t - 1])["pooled"],
                   "gradient_ratio": float(np.median(gradient_energy(dream["shown"][:, t - 1])
                                                     / np.maximum(gradient_energy(real[:, t - 1]), 1e-3))),
                   "latent_rms_ratio": float(np.median(dream["latent_rms"][:, t - 1] / real_rms[:, t - 1]))}
            figures.update({f"{name}_{keys}_t{t}": value for name, value in row.items()})
            print(f"{keys:>5s} {t:>4d} {row['psnr']:>9.2f} {row['raw_psnr']:>7.2f} {row['copy_psnr']:>8.2f} "
                  f"{row['gradient_ratio']:>9.2f} {row['latent_rms_ratio']:>11.2f}", file=sys.stderr)
        if args.strips_dir is not None:
            import imageio.v2 as imageio

            args.strips_dir.mkdir(parents=True, exist_ok=True)
            imageio.imwrite(args.strips_dir / f"held_{keys}.png",
                            strip(real, dream["shown"], dream["raw"], max(1, args.steps // 16)))
    result = {"benchmark": "held_keys", "model": args.model, "quick": args.quick, "seeds": args.seeds,
              "first_seed": args.first_seed, "steps": args.steps, "keys": list(args.keys), **figures,
              "seconds": time.perf_counter() - t0, "machine": machine_info()}
    result = rounded(result)
    write_result(result, args.results_dir / f"{args.name}.json")
    return result


if __name__ == "__main__":
    main()
