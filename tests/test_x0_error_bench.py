"""benchmarks/x0_error.py and ``streaming_loss(fixed_tau=...)``, its measurement."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import load_script, make_tiny_model, save_tiny_checkpoint


def test_fixed_tau_puts_every_frame_at_one_level():
    model = make_tiny_model(frames_per_latent=1).eval()
    latents = torch.randn(2, 4, *model.latent_shape)
    actions = np.zeros((2, 3, 4), np.float32)
    with torch.no_grad():
        low, _ = model.streaming_loss(latents, actions, generator=torch.Generator().manual_seed(0), fixed_tau=0.01)
        high, _ = model.streaming_loss(latents, actions, generator=torch.Generator().manual_seed(0), fixed_tau=1.0)
        again, _ = model.streaming_loss(latents, actions, generator=torch.Generator().manual_seed(0), fixed_tau=0.01)
    assert torch.equal(low, again) and not torch.equal(low, high)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"fixed_tau must be in \(0, 1\] or None"):
            model.streaming_loss(latents, actions, fixed_tau=bad)


def test_x0_error_script_on_a_tiny_checkpoint(dataset, tmp_path):
    """Every level is measured, the no-network posterior mean approaches 0 error at low noise, the JSON is written."""
    bench = load_script("benchmarks/x0_error.py", "x0_error_bench")
    ckpt = save_tiny_checkpoint(tmp_path / "tiny", frames_per_latent=1)
    result = bench.main(["--model", str(ckpt), "--data", str(dataset), "--quick", "--windows", "3", "--steps", "4",
                         "--results-dir", str(tmp_path), "--name", "x0"])
    for tau in bench.LEVELS:
        key = f"{tau:g}".replace(".", "p")
        assert math.isfinite(result[f"model_mse_tau{key}"]) and math.isfinite(result[f"posterior_mse_tau{key}"])
    assert result["posterior_mse_tau0p1"] < result["posterior_mse_tau1"] == pytest.approx(result["copy_previous_mse"], rel=1e-3)
    assert json.loads((tmp_path / "x0.json").read_text())["windows"] == 3
