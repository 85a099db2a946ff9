"""benchmarks/throughput.py: what its FLOP count (the MFU and the fidelity issue's cost gate) includes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import load_script


def test_flop_count_includes_attention_on_the_cpu():
    """PyTorch's counter has no formula for the CPU attention kernel (it counted 0); the benchmark registers one."""
    bench = load_script("benchmarks/throughput.py", "throughput_under_test")
    q, k = torch.randn(2, 4, 16, 32), torch.randn(2, 4, 96, 32)
    mask = torch.zeros(2, 4, 16, 96)
    flops = bench.count_flops(lambda: F.scaled_dot_product_attention(q, k, k, attn_mask=mask))
    assert flops == 2 * (2 * 2 * 4 * 16 * 96 * 32)  # q·kᵀ and p·v, 2 FLOPs per multiply-add
    linear = torch.nn.Linear(32, 8)
    assert bench.count_flops(lambda: linear(q)) == 2 * (2 * 4 * 16) * 32 * 8


def test_the_profile_labels_every_part_a_step_runs_and_latent_steps_decode_nothing(tmp_path):
    """`--profile`: the phases name the decoder and the frame memory where rgb steps run them, none with latents."""
    from conftest import save_tiny_checkpoint

    bench = load_script("benchmarks/throughput.py", "throughput_under_test")
    path = save_tiny_checkpoint(tmp_path / "m", frames_per_latent=1, frame_memory_width=4)
    phases = {}
    for obs in ("rgb", "latent"):
        out = bench.profile_step(str(path), 2, "fp32", 2, tmp_path / f"{obs}.txt", obs_type=obs)
        assert out["obs"] == obs and out["batch"] == 2 and out["dtype"] == "fp32" and out["profiled_ms_per_step"] > 0
        assert (tmp_path / f"{obs}.txt").read_text().startswith("env.step of WorldModelVectorEnv, batch 2, fp32")
        phases[obs] = {row["phase"] for row in out["phases"]}
    assert {"decoder", "frame memory", "dynamics attn (gdn)"} <= phases["rgb"]
    assert "dynamics attn (gdn)" in phases["latent"] and not {"decoder", "frame memory"} & phases["latent"]


def test_targets_state_the_mfu_each_speed_target_needs():
    throughput = load_script("benchmarks/throughput.py", "throughput_under_test")

    rows = [{"obs": "rgb", "dtype": "bf16", "batch": 64, "env_sps": 250.0, "flops_per_env_step": 200e6, "mfu": 0.25},
            {"obs": "latent", "dtype": "bf16", "batch": 64, "env_sps": 900.0, "flops_per_env_step": 50e6, "mfu": 0.2}]
    peaks = {"bf16": {"size": 2048, "flops_per_s": 200e9}}
    targets = throughput.evaluate_targets(rows, {"room_sps": 2000.0}, [], None, None, peaks)
    # rgb at half the room: 1,000 env-steps/s x 200 MFLOP = 200 GFLOP/s, the whole peak
    assert targets["vs_room"]["mfu_needed"] == pytest.approx(1.0)
    assert targets["vs_room_latent"]["mfu_needed"] == pytest.approx(1.5 * 2000 * 50e6 / 200e9)
    assert targets["env_sps"]["mfu_needed"] == pytest.approx(2000 * 200e6 / 200e9)
    # no peak of the dtype measured: nothing claimed
    assert throughput.evaluate_targets(rows, {"room_sps": 2000.0}, [], None, None)["vs_room"]["mfu_needed"] is None
