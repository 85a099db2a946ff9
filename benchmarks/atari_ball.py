"""Small-object fidelity of the autoencoder on an Atari game: PSNR on Breakout's ball at the default recipe's size.

Protocol. ``ALE/Breakout-v5`` (the env's own settings: frameskip 4, sticky actions 0.25) is collected by
``neuralsim.data.collect`` exactly as ``neuralsim collect --env ale_py:ALE/Breakout-v5 --image-size 64`` does: the
``explore`` policy (sticky random for an env without its own policies; FIRE is one of the 4 actions, so the ball is
served within a few steps), episodes of at most 200 steps, frames padded from 210×160 to 210×210 (black borders) and
area-resampled to 64×64. At the default recipe's size (``examples/make_default_model.py``: 400 episodes × 200 steps)
the ``default`` preset's autoencoder is trained with the recipe's settings (1,800 steps × 32 samples, lr 2e-3, fp32,
seed 0; ``neuralsim.train.train(TrainConfig(stage="autoencoder", ...))``). Then held-out episodes (seeds from
1,000,000; collection uses seeds 0…episodes-1), same policy, go through the autoencoder frame by frame
(``model.decode(model.encode(frame))``).

The ball's pixels come from the **RAM**, checked against the rendered frame. The ball's colour (200, 72, 72) is
also the paddle's and the top brick row's, and the frame difference of consecutive frames also lights up the paddle,
breaking bricks and the score, so neither separates the ball alone; the RAM gives its position exactly. Measured on
ale-py 0.12 (and re-checked on every held-out frame, ``ram_check_fraction``): the ball is the 4×2 (rows × columns)
block whose top row is ``ram[101] + 9`` and whose left column is ``ram[99] - 49`` in the 210×160 frame
(``ram[101] == 0``: no ball in play). A frame counts as a **ball frame** when all 8 pixels of that block have the
ball's colour and the 1-pixel ring around it is black (the ball fully drawn, on the background: not behind the
walls, not touching the paddle or a brick, not between serves); other frames are skipped for the ball figures. The
ball's mask at 64×64 is the block carried through the same pad + area resampling as the frame (every 64×64 pixel the
block touches) grown by a 1-pixel margin: 12-20 pixels per frame, where the ball is ~0.6 px wide and ~1.2 px tall at 64×64.

Reported:

* ``ae_psnr_pooled``: PSNR of the round trip over all pixels of all held-out frames (MSE pooled over frames first);
  ``ae_psnr_off_ball_pooled``: the same on the ball frames outside the ball's masks.
* ``ball_psnr_pooled``: PSNR of the round trip on the ball's mask pixels only, pooled over the ball frames
  (``ball_psnr_median``: the median of the per-frame values).
* ``baseline_ball_psnr_pooled``: the same for the **ball removed** (the real frame with the ball's block painted
  the background's black before resizing: a perfect reconstruction of everything but the ball). An autoencoder
  at or below this number has lost the ball.
* ``ball_visible_fraction``: the share of ball frames whose round trip is, on the ball's mask, closer (MSE) to the
  real frame than to the ball-removed one. ``ball_contrast_retained``: the pooled projection of the round trip's
  ball signal on the real one, ``Σ(recon - removed)·(real - removed) / Σ(real - removed)²`` over the masks
  (1: the ball's full contrast is kept, 0: gone); ``ball_peak_contrast`` (real) and ``ball_peak_contrast_ae``: the
  mean over ball frames of the largest ``|frame - removed|`` on the mask (0-255): how faint a 4×2 ball is at 64×64.
* ``frames``: the ball frames measured (``eval_frames``: all held-out frames); ``ram_check_fraction``: the ball
  frames whose ball-coloured pixels between the bricks and the paddle are exactly the RAM's block (1.0 expected).

The run directory (``--out``, default ``runs/atari_ball``; ``--quick``: ``runs/atari_ball_quick``) holds
``data/`` (the dataset), ``model/`` (training, resumable: a killed run continues from its last checkpoint) and
``autoencoder/`` (the finished autoencoder: when present, training is skipped).

    OMP_NUM_THREADS=1 python benchmarks/atari_ball.py --quick --threads 1    # ~1 min: 8 episodes, 60 AE steps
    OMP_NUM_THREADS=1 python benchmarks/atari_ball.py --threads 1            # the figure: ~35-45 min on 1 thread

Prints a table; the last line is one JSON object, also written to ``benchmarks/results/atari_ball.json``
(``--quick``: ``atari_ball_quick.json``; ``--results-dir``, ``--name`` to change).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, when imported as a module (tests)
from _common import add_standard_args, machine_info, resolve_standard_args, rounded, set_threads, write_result  # noqa: E402

ENV_ID = "ale_py:ALE/Breakout-v5"
IMAGE_SIZE = (64, 64)  # the default preset's frame size
RESIZE = "pad"  # collect's default: aspect kept, black borders
POLICY = "explore"
# The default recipe (examples/make_default_model.py, Recipe): collection size and the autoencoder stage.
RECIPE_EPISODES, RECIPE_MAX_STEPS, RECIPE_SEED = 400, 200, 0
RECIPE_AE = {"preset": "default", "steps": 1800, "lr": 2e-3, "batch_size": 32, "window": 6, "dtype": "float32"}
QUICK_EPISODES, QUICK_AE_STEPS, QUICK_EVAL_EPISODES = 8, 60, 2
EVAL_EPISODES, FIRST_EVAL_SEED = 16, 1_000_000

# Breakout's ball (ale-py 0.12, measured: see the module docstring).
RAM_BALL_X, RAM_BALL_Y = 99, 101
BALL_ROW_OFFSET, BALL_COL_OFFSET = 9, -49  # top row = ram[101] + 9, left column = ram[99] - 49
BALL_H, BALL_W = 4, 2
BALL_RGB = (200, 72, 72)
MSE_FLOOR = 1e-10  # identical pixels: 10*log10(255^2/1e-10) = 148 dB (finite, for JSON)


# ------------------------------------------------------------------------------------------ the ball's mask


def ball_block(ram: np.ndarray) -> tuple[int, int] | None:
    """``(top row, left column)`` of the ball's 4×2 block in the 210×160 frame from Breakout's RAM; None: no ball in play."""
    y, x = int(ram[RAM_BALL_Y]), int(ram[RAM_BALL_X])
    if y == 0:
        return None
    return y + BALL_ROW_OFFSET, x + BALL_COL_OFFSET


def ball_mask(frame: np.ndarray, ram: np.ndarray) -> np.ndarray | None:
    """The ball's pixels ``bool [h, w]`` in a native frame ``[h, w, 3] uint8``, or None when it is not a ball frame.

    A ball frame: the RAM's block lies inside the frame with a 1-pixel ring around it, all its pixels have the ball's
    colour and the ring is black (the ball fully drawn on the background).
    """
    block = ball_block(ram)
    if block is None:
        return None
    top, left = block
    h, w = frame.shape[:2]
    if top < 1 or left < 1 or top + BALL_H + 1 > h or left + BALL_W + 1 > w:
        return None
    inner = frame[top:top + BALL_H, left:left + BALL_W]
    if not np.all(inner == np.asarray(BALL_RGB, dtype=frame.dtype)):
        return None
    ring = frame[top - 1:top + BALL_H + 1, left - 1:left + BALL_W + 1].astype(np.int64).sum(-1)
    ring[1:-1, 1:-1] = 0
    if ring.any():
        return None
    mask = np.zeros((h, w), dtype=bool)
    mask[top:top + BALL_H, left:left + BALL_W] = True
    return mask


def colour_matches_block(frame: np.ndarray, mask: np.ndarray, *, rows: tuple[int, int] = (93, 189)) -> bool:
    """Check of the RAM mapping: between the bricks and the paddle (``rows``), the ball-coloured pixels are exactly ``mask``."""
    colour = np.all(frame == np.asarray(BALL_RGB, dtype=frame.dtype), axis=-1)
    return bool(np.array_equal(colour[rows[0]:rows[1]], mask[rows[0]:rows[1]]))


def remove_ball(frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``frame`` with the ball's pixels painted black (the background it moves on)."""
    out = frame.copy()
    out[mask] = 0
    return out


def model_mask(mask: np.ndarray, size: Sequence[int] = IMAGE_SIZE, *, resize: str = RESIZE, margin: int = 1) -> np.ndarray:
    """A native mask ``bool [h, w]`` at the model's size: every pixel the masked pixels touch after the same resize as
    the frames (:func:`neuralsim.images.resize_frame`), grown by ``margin`` pixels (3×3 max filter per pixel)."""
    from neuralsim.images import resize_frame

    img = np.repeat((mask.astype(np.uint8) * 255)[..., None], 3, axis=-1)
    out = resize_frame(img, size, mode=resize)[..., 0] > 0
    for _ in range(margin):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        grown[1:, 1:] |= out[:-1, :-1]
        grown[1:, :-1] |= out[:-1, 1:]
        grown[:-1, 1:] |= out[1:, :-1]
        grown[:-1, :-1] |= out[1:, 1:]
        out = grown
    return out


# ------------------------------------------------------------------------------------------ metrics


def _db(mse: Any) -> Any:
    return 10 * np.log10(255.0**2 / np.maximum(mse, MSE_FLOOR))


def masked_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float | None:
    """PSNR (dB) of uint8 images ``[N, H, W, 3]`` over the pixels where ``mask [N, H, W]`` is true, the squared error
    pooled over all those pixels of all images first (None: no such pixel; identical pixels: 148 dB)."""
    if a.shape != b.shape or mask.shape != a.shape[:-1]:
        raise ValueError(f"masked_psnr: a {a.shape}, b {b.shape} and mask {mask.shape} must be [N, H, W, 3] x2 and [N, H, W]")
    if not mask.any():
        return None
    err = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    return float(_db(err[mask].mean()))


def masked_mse_per_image(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-image MSE over the masked pixels ``[N]`` (NaN for an image without masked pixels)."""
    err = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean(-1)  # (N, H, W)
    count = mask.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (err * mask).sum(axis=(1, 2)) / count, np.nan)


def peak_on_mask(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per image, the largest ``|a - b|`` (over channels and the masked pixels) of ``[N, H, W, 3]`` images ``[N]``."""
    diff = np.abs(a.astype(np.int64) - b.astype(np.int64)).max(-1)  # (N, H, W)
    return np.where(mask, diff, 0).reshape(len(a), -1).max(-1, initial=0)


def ball_metrics(real: np.ndarray, recon: np.ndarray, removed: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """The ball figures of ball frames ``[N, H, W, 3] uint8`` (real, round trip, ball removed) and masks ``[N, H, W]``."""
    if len(real) == 0:
        keys = ("ball_psnr_pooled", "ball_psnr_median", "baseline_ball_psnr_pooled", "ball_visible_fraction",
                "ball_contrast_retained", "ball_peak_contrast", "ball_peak_contrast_ae", "ball_mask_pixels_mean")
        return dict.fromkeys(keys)
    mse_recon = masked_mse_per_image(recon, real, mask)
    mse_removed = masked_mse_per_image(recon, removed, mask)
    r, x, z = (t.astype(np.float64) for t in (real, recon, removed))
    signal = (r - z) * mask[..., None]  # the ball's own contribution to the real frame
    energy = float((signal**2).sum())
    return {
        "ball_psnr_pooled": masked_psnr(recon, real, mask),
        "ball_psnr_median": float(np.median(_db(mse_recon))),
        "baseline_ball_psnr_pooled": masked_psnr(removed, real, mask),
        "ball_visible_fraction": float(np.mean(mse_recon < mse_removed)),
        "ball_contrast_retained": float(((x - z) * signal).sum() / energy) if energy > 0 else None,
        "ball_peak_contrast": float(peak_on_mask(real, removed, mask).mean()),
        "ball_peak_contrast_ae": float(peak_on_mask(recon, removed, mask).mean()),
        "ball_mask_pixels_mean": float(mask.sum(axis=(1, 2)).mean()),
    }


# ------------------------------------------------------------------------------------------ the stages


def collect_data(data: Path, episodes: int, max_steps: int, seed: int, workers: int) -> dict[str, Any]:
    """The dataset of ``neuralsim collect --env ale_py:ALE/Breakout-v5 --image-size 64`` (continued when interrupted)."""
    from neuralsim.data import collect

    resume = (data / "manifest.json").exists()
    return collect(ENV_ID, data, episodes, policy=POLICY, workers=workers, seed=seed, max_steps=max_steps,
                   image_size=IMAGE_SIZE, resize=RESIZE, resume=resume, progress=sys.stderr.isatty())


def train_autoencoder(out: Path, data: Path, steps: int, seed: int) -> tuple[Path, bool]:
    """The default recipe's autoencoder stage into ``out/model`` (resumed when interrupted), exported to
    ``out/autoencoder`` (the marker that it is done). Returns ``(the autoencoder's directory, trained now)``."""
    import json

    ae_dir, model_dir = out / "autoencoder", out / "model"
    if (ae_dir / "model.safetensors").exists():
        config = json.loads((ae_dir / "config.json").read_text())
        done = config.get("provenance", {}).get("train_config", {}).get("steps")
        if done is not None and int(done) != steps:
            raise ValueError(f"--out {str(out)!r} holds an autoencoder trained for {done} steps, not --ae-steps {steps}; "
                             "use another --out (or the same --ae-steps)")
        return ae_dir, False
    from neuralsim.train import TrainConfig, train

    cfg = dict(RECIPE_AE)
    cfg["steps"] = steps
    train(TrainConfig(stage="autoencoder", data=str(data), out=str(model_dir), seed=seed,
                      resume=(model_dir / "checkpoints" / "latest.json").exists(), progress=sys.stderr.isatty(), **cfg))
    tmp = out / ".autoencoder-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(model_dir, tmp, ignore=shutil.ignore_patterns("checkpoints", "logs", "samples"))
    from neuralsim.checkpoints import publish_dir

    publish_dir(tmp, ae_dir)
    return ae_dir, True


def held_out_frames(episodes: int, first_seed: int, max_steps: int, max_frames: int | None) -> dict[str, Any]:
    """Held-out Breakout frames at 64×64 with the ball's masks: the collection's env, policy and resize, new seeds.

    Returns ``frames [N, 64, 64, 3]`` (every frame, the reset frames included), ``ball_index [M]`` (which of them are
    ball frames), ``removed [M, 64, 64, 3]``, ``masks [M, 64, 64]``, ``ram_checks`` (ball frames whose colour mask in
    the open play area equals the RAM's block) and ``episode_steps``.
    """
    from neuralsim.data.collection import FrameRecorder, make_policy
    from neuralsim.images import resize_frame

    recorder = FrameRecorder(ENV_ID, {}, None, resize=RESIZE)  # native frames: the masks need them
    env = recorder.env
    policy = make_policy(POLICY, env)
    frames, ball_index, removed, masks, checks, lengths = [], [], [], [], 0, []
    try:
        for i in range(episodes):
            seed = first_seed + i
            obs, info = env.reset(seed=seed)
            policy.reset(env, np.random.default_rng([first_seed, i]))  # as FrameRecorder.episode seeds it
            steps, done = 0, False
            while True:
                native = np.asarray(obs, dtype=np.uint8)
                frames.append(resize_frame(native, IMAGE_SIZE, mode=RESIZE))
                mask = ball_mask(native, env.unwrapped.ale.getRAM())
                if mask is not None:
                    ball_index.append(len(frames) - 1)
                    removed.append(resize_frame(remove_ball(native, mask), IMAGE_SIZE, mode=RESIZE))
                    masks.append(model_mask(mask))
                    checks += colour_matches_block(native, mask)
                if done or steps == max_steps or (max_frames is not None and len(frames) >= max_frames):
                    break
                obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
                steps, done = steps + 1, bool(terminated or truncated)
            lengths.append(steps)
            if max_frames is not None and len(frames) >= max_frames:
                break
    finally:
        env.close()
    shape = (0, *IMAGE_SIZE)
    return {"frames": np.stack(frames), "ball_index": np.asarray(ball_index, dtype=np.int64),
            "removed": np.stack(removed) if removed else np.zeros((*shape, 3), np.uint8),
            "masks": np.stack(masks) if masks else np.zeros(shape, bool), "ram_checks": int(checks),
            "episode_steps": lengths}


@torch.no_grad()
def round_trip(model: Any, frames: np.ndarray, batch: int = 256) -> np.ndarray:
    """``model.decode(model.encode(frame))`` of every frame ``[N, H, W, 3] uint8``, one latent frame each."""
    out = []
    for a in range(0, len(frames), batch):
        x = torch.from_numpy(np.ascontiguousarray(frames[a:a + batch]))[:, None]  # (B, 1, H, W, 3)
        out.append(model.decode(model.encode(x))[:, 0].cpu().numpy())
    return np.concatenate(out) if out else frames.copy()


def evaluate(ae_dir: Path, held: dict[str, Any]) -> dict[str, Any]:
    """Every figure of the held-out frames through the autoencoder in ``ae_dir``."""
    from neuralsim.model import WorldModel

    model = WorldModel.from_pretrained(ae_dir).eval()
    frames = held["frames"]
    recon = round_trip(model, frames)
    idx = held["ball_index"]
    real_b, recon_b, masks = frames[idx], recon[idx], held["masks"]
    full = np.ones(frames.shape[:-1], dtype=bool)
    result = {"ae_psnr_pooled": masked_psnr(recon, frames, full),
              "ae_psnr_off_ball_pooled": masked_psnr(recon_b, real_b, ~masks) if len(idx) else None}
    result.update(ball_metrics(real_b, recon_b, held["removed"], masks))
    return result


# ------------------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_standard_args(parser, "atari_ball", quick_help=f"{QUICK_EPISODES} episodes, {QUICK_AE_STEPS} autoencoder steps, "
                                                       f"{QUICK_EVAL_EPISODES} held-out episodes")
    parser.add_argument("--out", type=Path, default=None, help="run directory (default runs/atari_ball; --quick: runs/atari_ball_quick)")
    parser.add_argument("--episodes", type=int, default=None, help=f"collected episodes (default {RECIPE_EPISODES}, the recipe's)")
    parser.add_argument("--max-steps", type=int, default=RECIPE_MAX_STEPS, help="steps per episode at most (collected and held out)")
    parser.add_argument("--ae-steps", type=int, default=None, help=f"autoencoder steps (default {RECIPE_AE['steps']}; --quick {QUICK_AE_STEPS})")
    parser.add_argument("--seed", type=int, default=RECIPE_SEED, help="collection seed (episodes use seed..seed+episodes-1) and training seed")
    parser.add_argument("--workers", type=int, default=1, help="collection processes (the data do not depend on it)")
    parser.add_argument("--eval-episodes", type=int, default=None, help=f"held-out episodes (default {EVAL_EPISODES}; --quick {QUICK_EVAL_EPISODES})")
    parser.add_argument("--first-eval-seed", type=int, default=FIRST_EVAL_SEED, help="held-out seeds start here")
    parser.add_argument("--max-frames", type=int, default=None, help="cap on held-out frames (default: all)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args(argv)
    args.episodes = args.episodes or (QUICK_EPISODES if args.quick else RECIPE_EPISODES)
    args.ae_steps = args.ae_steps or (QUICK_AE_STEPS if args.quick else RECIPE_AE["steps"])
    args.eval_episodes = args.eval_episodes or (QUICK_EVAL_EPISODES if args.quick else EVAL_EPISODES)
    args.out = args.out or Path("runs/atari_ball_quick" if args.quick else "runs/atari_ball")
    resolve_standard_args(parser, args, "atari_ball")
    for name in ("episodes", "max_steps", "ae_steps", "eval_episodes", "workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    train_seeds = range(args.seed, args.seed + args.episodes)
    eval_seeds = range(args.first_eval_seed, args.first_eval_seed + args.eval_episodes)
    if set(train_seeds) & set(eval_seeds):
        parser.error(f"--first-eval-seed {args.first_eval_seed}: held-out seeds {eval_seeds.start}..{eval_seeds.stop - 1} "
                     f"overlap the collection seeds {train_seeds.start}..{train_seeds.stop - 1}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    try:
        import ale_py  # noqa: F401
    except ImportError as err:
        raise SystemExit(f'atari_ball.py needs ale-py ({err}): pip install "neuralsim[atari]"') from None
    set_threads(args.threads)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    t = time.perf_counter()
    summary = collect_data(out / "data", args.episodes, args.max_steps, args.seed, args.workers)
    timings["collect_s"] = time.perf_counter() - t
    print(f"collected: {summary['episodes']} episodes, {summary['steps']} steps in {out / 'data'}", file=sys.stderr, flush=True)

    t = time.perf_counter()
    try:
        ae_dir, trained = train_autoencoder(out, out / "data", args.ae_steps, args.seed)
    except ValueError as err:  # an autoencoder of another length already in --out
        raise SystemExit(f"atari_ball.py: {err}") from None
    timings["train_s" if trained else "train_skipped_s"] = time.perf_counter() - t
    print(f"autoencoder: {ae_dir} ({'trained' if trained else 'already trained, reused'})", file=sys.stderr, flush=True)

    t = time.perf_counter()
    held = held_out_frames(args.eval_episodes, args.first_eval_seed, args.max_steps, args.max_frames)
    timings["held_out_s"] = time.perf_counter() - t
    t = time.perf_counter()
    figures = evaluate(ae_dir, held)
    timings["eval_s"] = time.perf_counter() - t

    n_ball = len(held["ball_index"])
    result = {
        "benchmark": "atari_ball", "env": ENV_ID, "quick": args.quick, "image_size": list(IMAGE_SIZE), "resize": RESIZE,
        "mask_method": "ram", **figures,
        "frames": n_ball, "eval_frames": len(held["frames"]),
        "ball_frame_fraction": n_ball / max(1, len(held["frames"])),
        "ram_check_fraction": held["ram_checks"] / n_ball if n_ball else None,
        "eval_episodes": len(held["episode_steps"]), "first_eval_seed": args.first_eval_seed,
        "train_episodes": summary["episodes"], "train_steps": summary["steps"], "max_steps": args.max_steps,
        "ae_steps": args.ae_steps, "ae_trained_now": trained, "run_dir": str(out),
        "threads": torch.get_num_threads(), **timings, "seconds": time.perf_counter() - t0, "machine": machine_info(),
    }

    def fmt(v: Any, unit: str = "") -> str:
        return "-" if v is None else f"{v:.2f}{unit}"

    print(f"\natari_ball: {ENV_ID} at {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} ({RESIZE}), autoencoder of the default preset, "
          f"{args.ae_steps} steps on {summary['episodes']} episodes; {len(held['frames'])} held-out frames, "
          f"{n_ball} ball frames{' (quick)' if args.quick else ''}")
    rows = [
        ("AE round trip, all pixels (pooled)", fmt(figures["ae_psnr_pooled"], " dB")),
        ("AE round trip, ball frames off the ball", fmt(figures["ae_psnr_off_ball_pooled"], " dB")),
        ("AE round trip, ball pixels (pooled)", fmt(figures["ball_psnr_pooled"], " dB")),
        ("AE round trip, ball pixels (median frame)", fmt(figures["ball_psnr_median"], " dB")),
        ("baseline: ball removed, ball pixels", fmt(figures["baseline_ball_psnr_pooled"], " dB")),
        ("ball still visible after the round trip", "-" if figures["ball_visible_fraction"] is None
         else f"{100 * figures['ball_visible_fraction']:.1f} %"),
        ("ball contrast retained (1 = all)", fmt(figures["ball_contrast_retained"])),
        ("ball peak contrast real / AE (0-255)",
         f"{fmt(figures['ball_peak_contrast'])} / {fmt(figures['ball_peak_contrast_ae'])}"),
        ("mask pixels per ball frame (64x64)", fmt(figures["ball_mask_pixels_mean"])),
        ("RAM block = ball colour (open area)", "-" if result["ram_check_fraction"] is None
         else f"{100 * result['ram_check_fraction']:.1f} %"),
    ]
    width = max(len(r[0]) for r in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value:>14}")
    write_result(rounded(result), args.results_dir / f"{args.name}.json")
    return result


if __name__ == "__main__":
    main()
