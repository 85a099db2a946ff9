"""benchmarks/atari_ball.py: the ball's mask (RAM block, its 64×64 footprint), PSNR on a mask, the ball figures on
synthetic frames, the RAM mapping on real Breakout frames, and (slow) the ``--quick`` run end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, load_script

BENCH = ROOT / "benchmarks" / "atari_ball.py"


def _load():
    return load_script(BENCH, "atari_ball_bench")


def _ram(A, top: int, left: int) -> np.ndarray:
    """A 128-byte RAM whose ball block starts at (top, left) of the 210×160 frame."""
    ram = np.zeros(128, np.uint8)
    ram[A.RAM_BALL_Y] = top - A.BALL_ROW_OFFSET
    ram[A.RAM_BALL_X] = left - A.BALL_COL_OFFSET
    return ram


def _frame_with_ball(A, top: int, left: int) -> np.ndarray:
    frame = np.zeros((210, 160, 3), np.uint8)
    frame[:, :8] = frame[:, 152:] = 142  # the walls
    frame[189:193, 60:76] = A.BALL_RGB  # the paddle: same colour as the ball
    frame[top:top + A.BALL_H, left:left + A.BALL_W] = A.BALL_RGB
    return frame


def test_ball_mask_is_the_ram_block_on_the_background():
    A = _load()
    frame = _frame_with_ball(A, 120, 70)
    mask = A.ball_mask(frame, _ram(A, 120, 70))
    assert mask is not None and mask.shape == (210, 160) and mask.sum() == A.BALL_H * A.BALL_W
    assert mask[120:124, 70:72].all()
    assert A.colour_matches_block(frame, mask)
    assert A.ball_mask(frame, np.zeros(128, np.uint8)) is None  # ram[101] == 0: no ball in play
    assert A.ball_mask(frame, _ram(A, 100, 70)) is None  # the RAM points at black pixels: not drawn there
    touching = _frame_with_ball(A, 185, 64)  # bottom row 188, the paddle starts at row 189: not on the background
    assert A.ball_mask(touching, _ram(A, 185, 64)) is None
    at_wall = _frame_with_ball(A, 120, 8)  # left of the block is the wall
    assert A.ball_mask(at_wall, _ram(A, 120, 8)) is None
    half = _frame_with_ball(A, 120, 70)
    half[122:124, 70:72] = 0  # partly drawn
    assert A.ball_mask(half, _ram(A, 120, 70)) is None
    stray = frame.copy()
    stray[150, 100] = A.BALL_RGB  # a ball-coloured pixel the RAM does not explain
    assert not A.colour_matches_block(stray, mask)


def test_model_mask_covers_every_pixel_the_ball_changes():
    from neuralsim.images import resize_frame

    A = _load()
    for top, left in [(120, 70), (95, 10), (150, 149), (133, 101)]:
        frame = _frame_with_ball(A, top, left)
        mask = A.ball_mask(frame, _ram(A, top, left))
        assert mask is not None
        small = A.model_mask(mask, margin=0)
        grown = A.model_mask(mask)
        real = resize_frame(frame, (64, 64), mode="pad").astype(int)
        removed = resize_frame(A.remove_ball(frame, mask), (64, 64), mode="pad").astype(int)
        changed = np.abs(real - removed).max(-1) > 0
        assert changed.any() and not (changed & ~small).any()  # the footprint holds every changed pixel
        assert 1 <= small.sum() <= 6  # 4×2 native pixels ≈ 1.2×0.6 px at 64×64 (padded 210×210 → 64)
        rows, cols = np.nonzero(small)
        scale = 64 / 210
        assert rows.min() == math.floor(top * scale) and cols.min() == math.floor((left + 25) * scale)  # 25 px pad
        assert small.sum() < grown.sum() <= (np.ptp(rows) + 3) * (np.ptp(cols) + 3)  # a 1-pixel margin
        assert grown[small].all()


def test_masked_psnr_pools_over_the_masked_pixels_only():
    A = _load()
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    b = a.copy()
    b[0, 2, 3] = np.clip(a[0, 2, 3].astype(int) + 10, 0, 255)
    b[2] = 255 - a[2]  # a frame far off, outside the mask
    mask = np.zeros((3, 8, 8), bool)
    assert A.masked_psnr(a, b, mask) is None
    mask[0, 2, 3] = mask[1, 4, 4] = True
    err = ((a[0, 2, 3].astype(float) - b[0, 2, 3]) ** 2).sum() / 6  # 2 pixels × 3 channels pooled
    assert A.masked_psnr(a, b, mask) == pytest.approx(10 * math.log10(255**2 / err))
    mask[:] = False
    mask[1] = True
    assert A.masked_psnr(a, b, mask) == pytest.approx(10 * math.log10(255**2 / 1e-10))  # identical: 148 dB
    with pytest.raises(ValueError, match="mask"):
        A.masked_psnr(a, b, mask[:, :4])


def test_ball_figures_of_a_kept_and_a_lost_ball():
    A = _load()
    from neuralsim.images import resize_frame

    frames, removed, masks = [], [], []
    for top, left in [(120, 70), (140, 30), (100, 120)]:
        native = _frame_with_ball(A, top, left)
        mask = A.ball_mask(native, _ram(A, top, left))
        frames.append(resize_frame(native, (64, 64), mode="pad"))
        removed.append(resize_frame(A.remove_ball(native, mask), (64, 64), mode="pad"))
        masks.append(A.model_mask(mask))
    real, gone, masks = np.stack(frames), np.stack(removed), np.stack(masks)
    kept = A.ball_metrics(real, real, gone, masks)
    assert kept["ball_visible_fraction"] == 1.0 and kept["ball_contrast_retained"] == pytest.approx(1.0)
    assert kept["ball_psnr_pooled"] > 140 and kept["ball_peak_contrast"] == kept["ball_peak_contrast_ae"] > 20
    lost = A.ball_metrics(real, gone, gone, masks)
    assert lost["ball_visible_fraction"] == 0.0 and lost["ball_contrast_retained"] == pytest.approx(0.0)
    assert lost["ball_psnr_pooled"] == pytest.approx(lost["baseline_ball_psnr_pooled"])
    assert lost["ball_psnr_pooled"] < 40
    assert lost["ball_peak_contrast_ae"] == 0
    dim = (gone + (real.astype(int) - gone) // 2).astype(np.uint8)  # half the ball's contrast
    half = A.ball_metrics(real, dim, gone, masks)
    assert 0.4 < half["ball_contrast_retained"] < 0.6
    assert lost["ball_psnr_pooled"] < half["ball_psnr_pooled"] < kept["ball_psnr_pooled"]


def test_held_out_seeds_must_not_overlap_the_collection():
    A = _load()
    with pytest.raises(SystemExit):
        A.parse_args(["--episodes", "10", "--first-eval-seed", "5"])
    args = A.parse_args(["--quick"])
    assert (args.episodes, args.ae_steps, args.name) == (A.QUICK_EPISODES, A.QUICK_AE_STEPS, "atari_ball_quick")
    args = A.parse_args([])
    assert (args.episodes, args.ae_steps, args.max_steps) == (400, 1800, 200)  # the default recipe's size


@pytest.mark.atari
def test_ram_block_is_the_rendered_ball_on_real_breakout_frames():
    pytest.importorskip("ale_py", reason="needs the [atari] extra (ale-py)")
    A = _load()
    held = A.held_out_frames(1, A.FIRST_EVAL_SEED, 80, None)
    n = len(held["ball_index"])
    assert n >= 10  # sticky random play with FIRE serves the ball within a few steps
    assert held["ram_checks"] == n  # every ball frame: the ball-coloured pixels of the open area = the RAM block
    assert held["masks"].shape == (n, 64, 64) and held["removed"].shape == (n, 64, 64, 3)
    real = held["frames"][held["ball_index"]].astype(int)
    changed = np.abs(real - held["removed"]).max(-1) > 0
    assert changed.any(axis=(1, 2)).all() and not (changed & ~held["masks"]).any()


@pytest.mark.slow
@pytest.mark.atari
def test_quick_run_end_to_end(tmp_path):
    pytest.importorskip("ale_py", reason="needs the [atari] extra (ale-py)")
    out, results = tmp_path / "run", tmp_path / "results"
    cmd = [sys.executable, str(BENCH), "--quick", "--threads", "1", "--out", str(out), "--results-dir", str(results)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result == json.loads((results / "atari_ball_quick.json").read_text())
    assert result["quick"] is True and result["ae_steps"] == 60 and result["ae_trained_now"] is True
    assert result["frames"] > 0 and result["ram_check_fraction"] == 1.0
    for key in ("ae_psnr_pooled", "ball_psnr_pooled", "baseline_ball_psnr_pooled"):
        assert 5 < result[key] < 60, (key, result[key])
    assert 0.0 <= result["ball_visible_fraction"] <= 1.0
    assert {"seconds", "machine", "frames", "ball_visible_fraction"} <= result.keys()
    assert (out / "autoencoder" / "model.safetensors").exists() and (out / "data" / "manifest.json").exists()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)  # the finished autoencoder is reused
    assert again.returncode == 0, again.stderr[-4000:]
    second = json.loads(again.stdout.strip().splitlines()[-1])
    assert second["ae_trained_now"] is False and second["ball_psnr_pooled"] == result["ball_psnr_pooled"]
