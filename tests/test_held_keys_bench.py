"""benchmarks/held_keys.py: the dream under a held key from one start frame, against the room."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import load_script, make_tiny_model, save_tiny_checkpoint


def test_gradient_energy_and_psnr_tell_flat_from_noisy_frames():
    script = load_script("benchmarks/held_keys.py", "held_keys_helpers")
    flat = np.full((2, 8, 8, 3), 100, np.uint8)
    noisy = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    assert np.allclose(script.gradient_energy(flat), 0) and (script.gradient_energy(noisy) > 50).all()
    assert script.psnr_stats(flat, flat + 10)["pooled"] == pytest.approx(10 * np.log10(255.0**2 / 100))


@pytest.mark.mujoco
def test_held_keys_on_a_tiny_model_writes_every_figure(tmp_path):
    model = make_tiny_model(frames_per_latent=1, frame_memory_width=4)
    path = save_tiny_checkpoint(tmp_path / "tiny", model=model)
    script = load_script("benchmarks/held_keys.py", "held_keys_bench")
    result = script.main(["--model", str(path), "--seeds", "2", "--steps", "4", "--keys", "w", "l",
                          "--results-dir", str(tmp_path), "--strips-dir", str(tmp_path / "strips")])
    for keys in ("w", "l"):
        for t in (1, 4):
            for name in ("psnr", "raw_psnr", "copy_psnr", "gradient_ratio", "latent_rms_ratio"):
                assert np.isfinite(result[f"{name}_{keys}_t{t}"]), (name, keys, t)
        assert (tmp_path / "strips" / f"held_{keys}.png").exists()
    assert "psnr_w_t16" not in result  # only the horizons the run reached
    assert json.loads((tmp_path / "held_keys.json").read_text())["steps"] == 4
    with pytest.raises(SystemExit):
        script.main(["--model", str(path), "--keys", "wx", "--results-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="frames_per_latent 1"):
        script.main(["--model", str(save_tiny_checkpoint(tmp_path / "k2")), "--seeds", "1", "--steps", "1",
                     "--results-dir", str(tmp_path)])


def test_write_result_makes_its_directory(tmp_path):
    common = load_script("benchmarks/_common.py", "bench_common_write")
    common.write_result({"a": 1}, tmp_path / "new" / "deeper" / "x.json")
    assert json.loads((tmp_path / "new" / "deeper" / "x.json").read_text()) == {"a": 1}
