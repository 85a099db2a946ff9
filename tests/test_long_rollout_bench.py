"""benchmarks/long_rollout.py: the minute-scale rollout through gym.make, per dtype, on the tiny checkpoint (behaviour,
not timing), and its table in make_table.py."""

from __future__ import annotations

import json

import pytest

from conftest import TINY_FRAMES_PER_STEP, load_script


def test_long_rollout_script_smoke(tiny_checkpoint, tmp_path, capsys):
    bench = load_script("benchmarks/long_rollout.py", "long_rollout_bench")
    out = tmp_path / "long_rollout.json"
    result = bench.main(["--model", str(tiny_checkpoint), "--steps", "4", "--window", "2", "--frames", "6",
                         "--dtypes", "float32", "bfloat16", "--repeats", "2", "--threads", "1", "--out", str(out)])
    assert [p["step"] for p in result["long"]["points"]] == [4]
    rows = result["minutes"]
    assert [(r["via"], r["dtype"], r["compiled"]) for r in rows] == [
        ("env", "float32", False), ("env", "bfloat16", False), ("rollout", "float32", False),
        ("rollout", "bfloat16", False)]
    for r in rows:  # 6 frames = 3 env steps of the tiny model's 2 frames
        assert r["frames"] == 6 and r["env_steps"] == 6 // TINY_FRAMES_PER_STEP == 3
        assert len(r["rounds_wall_s"]) == 2 and r["wall_s"] == min(r["rounds_wall_s"]) and r["compile_s"] is None
    assert result["minute"] in rows and result["auto_dtype"] in ("float32", "bfloat16")
    targets = result["targets"]
    assert targets["minute_rollout_dtype"] == result["minute"]["dtype"]
    assert targets["minute_rollout_le_10s"] == (targets["minute_rollout_1440_s"] <= 10)
    assert targets["cpu_capability"] == result["machine"]["cpu_capability"]
    assert targets["dream_rollout_le_10s"] == (targets["dream_rollout_1440_s"] <= 10)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["benchmark"] == "long_rollout"
    saved = json.loads(out.read_text())
    assert saved["targets"]["minute_rollout_dtype"] == result["minute"]["dtype"]

    only_minute = bench.main(["--model", str(tiny_checkpoint), "--skip-long", "--frames", "4", "--dtypes", "float32",
                              "--threads", "1", "--paths", "env", "--out", str(tmp_path / "minute.json")])
    assert only_minute["long"] is None and len(only_minute["minutes"]) == 1
    assert "dream_rollout_1440_s" not in only_minute["targets"]
    in_a_process = bench.main(["--model", str(tiny_checkpoint), "--skip-long", "--frames", "4", "--dtypes", "float32",
                               "--threads", "1", "--paths", "env", "process", "--out", str(tmp_path / "process.json")])
    assert [r["via"] for r in in_a_process["minutes"]] == ["env", "process"]
    targets = in_a_process["targets"]
    assert targets["process_rollout_le_10s"] == (targets["process_rollout_1440_s"] <= 10)
    assert "dream_rollout_1440_s" not in targets
    with pytest.raises(SystemExit):  # the figure is the env's: it cannot be left out
        bench.main(["--model", str(tiny_checkpoint), "--skip-long", "--paths", "rollout", "--out", str(tmp_path / "x.json")])

    make_table = load_script("benchmarks/make_table.py", "make_table_for_long_rollout")
    text = make_table.long_rollout(saved)
    assert "gym.make" in text and "bfloat16" in text and "neuralsim rollout" in text
    assert "gym.make" in make_table.long_rollout(json.loads((tmp_path / "minute.json").read_text()))
