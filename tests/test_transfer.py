"""The policy-transfer pipeline (neuralsim.agents.transfer, `neuralsim eval transfer`)."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import neuralsim  # noqa: F401
from neuralsim.agents.transfer import (TransferConfig, constant_policy_fn, evaluate_dream, evaluate_real, format_table,
                                       random_policy_fn, run_transfer_benchmark, side_by_side_gif, spearman,
                                       spearman_interval)
from neuralsim.cli import main

from conftest import load_script, make_tiny_model, save_tiny_checkpoint

ROOT = Path(__file__).resolve().parent.parent
mujoco = pytest.importorskip("mujoco")


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833)  # ties share their average rank
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_spearman_interval_resamples_the_shared_starts():
    rng = np.random.default_rng(0)
    apart = [{"real_returns": list(10 * i + rng.normal(0, 1, 20)), "dream_returns": list(10 * i + rng.normal(0, 1, 20))}
             for i in range(5)]  # policies far apart: every draw ranks them alike
    assert spearman_interval(apart) == [1.0, 1.0]
    close = [{"real_returns": list(0.1 * i + rng.normal(0, 3, 20)), "dream_returns": list(0.1 * i + rng.normal(0, 3, 20))}
             for i in range(5)]  # within their noise: ranks swap from draw to draw
    low, high = spearman_interval(close)
    assert -1.0 <= low < high <= 1.0 and high - low > 0.5
    assert spearman_interval(close) == [low, high]  # a fixed seed
    assert spearman_interval(close[:1]) is None
    flat = [{"real_returns": [1.0] * 4, "dream_returns": [float(i)] * 4} for i in range(3)]  # ρ undefined
    assert spearman_interval(flat) is None


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="episodes must be a positive integer, got 0"):
        TransferConfig(episodes=0).validate()
    with pytest.raises(ValueError, match=r"--timesteps must be at least --num-envs x n_steps = 2048"):
        TransferConfig(timesteps=100).validate(cli=True)
    with pytest.raises(ValueError, match=r"--keys must be comma-separated key sets over 'wsadijkl'"):
        TransferConfig(keys=("w", "q")).validate(cli=True)
    with pytest.raises(ValueError, match=r"--rgb-extractor must be 'impala' or 'nature', got 'resnet'"):
        TransferConfig(rgb_extractor="resnet").validate(cli=True)


def test_dream_venv_with_key_sets(tiny_checkpoint):
    from neuralsim.agents.sb3 import make_sb3_env
    from neuralsim.agents.wrappers import KeySetVecActions

    venv = KeySetVecActions(make_sb3_env(model=str(tiny_checkpoint), num_envs=3, seed=0), ("w", "l", "wj"))
    assert venv.action_space == gym.spaces.Discrete(3)
    obs = venv.reset()
    obs, rewards, dones, infos = venv.step(np.array([0, 1, 2]))
    assert obs.shape == (3, 32, 32, 3) and rewards.shape == (3,)
    with pytest.raises(ValueError, match="venv must have the camera action space"):
        KeySetVecActions(venv, ("w",))


@pytest.mark.parametrize("argv,message", [
    (["--timesteps", "0"], "--timesteps must be a positive integer, got 0"),
    (["--num-envs", "64", "--timesteps", "1000"], "--timesteps must be at least --num-envs x n_steps = 8192"),
    (["--model", "no-such-model"], "--model='no-such-model': no checkpoint directory"),
    (["--out", "results.txt"], "--out 'results.txt' must end with one of .json"),
    (["--rgb-extractor", "resnet"], "argument --rgb-extractor: invalid choice: 'resnet'"),
    (["--task", "ball_start=rest"], "--task must be OPTION=JSON"),
    (["--task", "spawn=1"], "--task: NeuralSimRoom-v0 has no task option spawn"),
    (["--dream-starts", "-1"], "--dream-starts must be a non-negative integer, got -1"),
])
def test_cli_bad_input(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["eval", "transfer", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing trained or written


def test_evaluate_real_is_deterministic_and_batched():
    space = gym.spaces.Box(-1, 1, (4,), np.float32)
    seeds = [500_000, 500_001, 500_002]
    a = evaluate_real(random_policy_fn(space), "NeuralSimRoom-v0", {"max_episode_steps": 15}, seeds, max_steps=15, rng_seed=1)
    b = evaluate_real(random_policy_fn(space), "NeuralSimRoom-v0", {"max_episode_steps": 15}, seeds, max_steps=15, rng_seed=1)
    assert a == b and len(a["returns"]) == 3 and max(a["lengths"]) <= 15
    box = {"max_episode_steps": 10, "target": "box0"}  # a box target stays put (the ball rolls at the start)
    turn = evaluate_real(constant_policy_fn("l", space), "NeuralSimRoom-v0", box, seeds, 10, record=1)
    assert turn["returns"] == pytest.approx([0, 0, 0], abs=1e-6)  # turning on the spot makes no progress
    assert turn["frames"].shape == (11, 64, 64, 3)
    first = gym.make("NeuralSimRoom-v0", target="box0").reset(seed=seeds[1])[0]
    assert np.array_equal(turn["frames"][0], first) and not np.array_equal(turn["frames"][-1], first)


def test_evaluate_dream_starts_from_given_frames(tiny_checkpoint):
    starts = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    space = gym.spaces.Box(-1, 1, (4,), np.float32)
    out = evaluate_dream(constant_policy_fn("w", space), str(tiny_checkpoint), starts, ["a red ball", "a green box"],
                         max_steps=5, seed=0, record=0)
    again = evaluate_dream(constant_policy_fn("w", space), str(tiny_checkpoint), starts, ["a red ball", "a green box"],
                           max_steps=5, seed=0)
    assert out["returns"] == again["returns"] and out["lengths"] == [5, 5]
    assert out["frames"].shape == (6, 32, 32, 3)


def test_side_by_side_gif(tmp_path):
    import imageio.v3 as iio

    real = np.arange(5, dtype=np.uint8)[:, None, None, None].repeat(8, 1).repeat(8, 2).repeat(3, 3) * 40
    dream = np.full((3, 8, 8, 3), 200, np.uint8)
    video = iio.imread(side_by_side_gif(tmp_path / "pair.gif", real, dream, scale=2))
    assert video.shape[:3] == (5, 16, 36)  # the shorter episode holds its last frame; a 2-pixel gap between


def test_a_finished_training_is_reused_only_with_the_same_settings(tmp_path):
    from neuralsim.agents.transfer import RUN_RECORD, finished_training, train_ppo

    cfg = TransferConfig.quick_config(timesteps=256, max_episode_steps=20, workdir=str(tmp_path))
    run = train_ppo("real", cfg, 0, tmp_path / "real-seed0")
    assert (tmp_path / "real-seed0" / RUN_RECORD).is_file()
    assert finished_training("real", cfg, 0, tmp_path / "real-seed0") == json.loads(json.dumps(run))
    assert finished_training("real", cfg, 1, tmp_path / "real-seed0") is None  # another seed
    assert finished_training("real", dataclasses.replace(cfg, timesteps=512), 0, tmp_path / "real-seed0") is None
    assert finished_training("dream", cfg, 0, tmp_path / "real-seed0") is None
    shutil.rmtree(run["policies"][0]["path"])  # a policy it lists is gone: trained again
    assert finished_training("real", cfg, 0, tmp_path / "real-seed0") is None
    (tmp_path / "real-seed0" / RUN_RECORD).write_text("{not json")
    assert finished_training("real", cfg, 0, tmp_path / "real-seed0") is None
    with pytest.raises(ValueError, match="resume must be a bool"):
        TransferConfig(resume="yes").validate()


def test_a_dreams_training_key_names_its_models_weights_not_only_its_name(tmp_path, tiny_checkpoint):
    """A model installed under the same name is another dream: `--resume` must not reuse the old one's policies."""
    from neuralsim.agents.transfer import training_key
    from neuralsim.checkpoints import checkpoint_fingerprint, read_weights, write_weights

    model = tmp_path / "m"
    shutil.copytree(tiny_checkpoint, model)
    cfg = TransferConfig.quick_config(model=str(model), workdir=str(tmp_path))
    before = training_key("dream", cfg, 0)
    assert before["model_fingerprint"] == checkpoint_fingerprint(tiny_checkpoint)  # the same files, the same dream
    assert "model_fingerprint" not in training_key("real", cfg, 0)  # the room does not read the weights
    weights = read_weights(model)
    name = next(iter(weights))
    write_weights(model, {**weights, name: weights[name] + 1})
    assert training_key("dream", cfg, 0) != before
    assert "model" not in training_key("real", cfg, 0)  # the room on frames never reads the model: any --model reuses it
    latent = dataclasses.replace(cfg, obs="latent")  # ... on latents it does (the encoder)
    assert training_key("real", latent, 0)["model_fingerprint"] == checkpoint_fingerprint(model)
    # where the dream's latents come from is the dream's: the room's training (its frames encoded) is the same
    frames = dataclasses.replace(latent, latent_source="frames")
    assert training_key("real", frames, 0) == training_key("real", latent, 0)
    assert training_key("dream", frames, 0) != training_key("dream", latent, 0)
    with pytest.raises(FileNotFoundError, match="model='nowhere'"):
        checkpoint_fingerprint("nowhere")


def test_the_rooms_training_on_frames_is_reused_for_another_model_even_from_an_older_record(tmp_path):
    """Records written when the room's key named the model (before 2026-12-06) are reused for any --model."""
    from neuralsim.agents.transfer import RUN_RECORD, finished_training, training_key

    cfg = TransferConfig.quick_config(workdir=str(tmp_path))
    run_dir = tmp_path / "real-seed0"
    (run_dir / "p").mkdir(parents=True)
    (run_dir / "p" / "policy.json").write_text("{}")
    old_key = {**training_key("real", cfg, 0), "model": "default"}
    (run_dir / RUN_RECORD).write_text(json.dumps({"key": old_key, "run": {"wall_s": 1.0},
                                                  "policies": [{"path": str(run_dir / "p")}]}))
    from neuralsim.checkpoints import resolve_checkpoint

    other = dataclasses.replace(cfg, model=str(resolve_checkpoint("default")))  # another name, the same room
    assert finished_training("real", other, 0, run_dir) == {"wall_s": 1.0}
    assert finished_training("real", dataclasses.replace(cfg, timesteps=cfg.timesteps + 1), 0, run_dir) is None


@pytest.mark.slow
def test_quick_pipeline_end_to_end(tmp_path):
    cfg = TransferConfig.quick_config(workdir=str(tmp_path / "work"), out=str(tmp_path / "transfer.json"), timesteps=256,
                                      episodes=2, max_episode_steps=20)
    results = run_transfer_benchmark(cfg, log=lambda msg: None)
    assert json.loads((tmp_path / "transfer.json").read_text()) == json.loads(json.dumps(results))
    assert [r["method"] for r in results["rows"]][:3] == ["PPO in dream", "PPO in real", "random"]
    assert len(results["agreement"]) >= 5 and (tmp_path / "work" / "disagreement.gif").stat().st_size > 0
    assert results["spearman_ci90"] is None or len(results["spearman_ci90"]) == 2
    assert (tmp_path / "work" / "dream-seed0" / "final" / "policy.json").is_file()
    table = format_table(results)
    assert "transfer score" in table and "Spearman" in table
    g = results["disagreement_gif"]  # the numbers printed for the largest disagreement are that policy's table row
    row = next(a for a in results["agreement"] if a["policy"] == g["policy"])
    assert (g["real_return"], g["dream_return"]) == (row["real_return"], row["dream_return"])
    assert f"mean return real {row['real_return']:.2f}, dream {row['dream_return']:.2f}, as in the table" in table
    # --resume: the same run again trains nothing (both worlds' records are there) and gives the same returns
    logs: list[str] = []
    again = run_transfer_benchmark(dataclasses.replace(cfg, resume=True), log=logs.append)
    assert sum("reused" in m for m in logs) == 2 and not any(m.startswith("training PPO") for m in logs)
    assert [r["return"] for r in again["rows"]] == [r["return"] for r in results["rows"]]


def test_quick_run_writes_nothing_into_the_working_directory(tmp_path, monkeypatch):
    import argparse
    import tempfile

    from neuralsim.cli.evaluate import add_transfer_arguments, config_from_args

    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser()
    add_transfer_arguments(parser)
    cfg = config_from_args(parser.parse_args(["--quick"]))
    assert Path(cfg.workdir).parent == Path(tempfile.gettempdir()) and Path(cfg.out).parent == Path(cfg.workdir)
    assert Path(cfg.out).name == "transfer-quick.json" and list(tmp_path.iterdir()) == []
    Path(cfg.workdir).rmdir()
    full = config_from_args(parser.parse_args(["--workdir", "w"]))
    assert (full.workdir, full.out) == ("w", str(Path("w") / "transfer.json"))
    assert (full.real_task, full.dream_starts) == (None, TransferConfig.dream_starts)  # the env's transfer task
    task = config_from_args(parser.parse_args(["--task", 'ball_start="thrown"', "--task", "start_view_deg=null",
                                               "--dream-starts", "0"]))
    assert task.real_task == {"ball_start": "thrown", "start_view_deg": None} and task.dream_starts == 0


@pytest.mark.slow
def test_example_trains_in_dream_and_evaluates_in_real(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "train_ppo_in_dream.py"), "--timesteps", "256",
                          "--num-envs", "2", "--episodes", "2", "--out", str(tmp_path / "ppo")],
                         capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    last = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(last["real"]) == {"PPO trained in the dream", "random"}
    assert (tmp_path / "ppo" / "model.safetensors").is_file()


@pytest.mark.slow
def test_room_baseline_example(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "train_ppo_in_room.py"), "--timesteps", "256",
                          "--num-envs", "2", "--episodes", "2", "--target", "ball", "--target-colour", "none",
                          "--keys", "w,l", "--out", str(tmp_path / "ppo")],
                         capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    last = json.loads(out.stdout.strip().splitlines()[-1])
    assert last["room_kwargs"] == {"target": "ball", "target_colour": None} and last["keysets"] == ["w", "l"]
    assert "random" in last["real"]


def test_real_traces_and_their_open_loop_replay_in_the_dream(tiny_checkpoint):
    from neuralsim.agents.transfer import replay_in_dream, reward_agreement

    space = gym.spaces.Box(-1, 1, (4,), np.float32)
    seeds = [500_000, 500_001]
    res = evaluate_real(constant_policy_fn("w", space), "NeuralSimRoom-v0", {"max_episode_steps": 30}, seeds, 30, trace=5)
    trace = res["trace"]
    assert trace["actions"].shape == (2, 5, 4) and trace["rewards"].shape == trace["valid"].shape == (2, 5)
    assert np.allclose(trace["actions"], [1, 0, 0, 0]) and trace["valid"].all()
    full = evaluate_real(constant_policy_fn("w", space), "NeuralSimRoom-v0", {"max_episode_steps": 5}, seeds, 5)
    np.testing.assert_allclose(trace["rewards"].sum(1), full["returns"], rtol=1e-5)  # the traced steps are the episode's
    starts = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    a = replay_in_dream(str(tiny_checkpoint), starts, ["a room", "a room"], trace["actions"], seed=3)
    b = replay_in_dream(str(tiny_checkpoint), starts, ["a room", "a room"], trace["actions"], seed=3)
    assert a["rewards"].shape == a["termination_prob"].shape == (2, 5)
    np.testing.assert_array_equal(a["rewards"], b["rewards"])
    # The agreement: a dream that predicts the real rewards exactly scores 1; steps after an end are left out.
    real = {"rewards": np.array([[1.0, 2.0, 12.0, 5.0]]), "terminated": np.array([[False, False, True, False]]),
            "valid": np.array([[True, True, True, False]])}
    dream = {"rewards": np.array([[1.0, 2.0, 12.0, -99.0]]), "termination_prob": np.array([[0.1, 0.2, 0.9, 0.0]])}
    m = reward_agreement([real], [dream])
    assert m["reward_corr_t1_16"] == pytest.approx(1.0) and m["termination_f1"] == 1.0 and m["reward_steps"] == 3


def test_real_env_spec_keeps_the_world_and_drops_the_task(tiny_checkpoint, tmp_path):
    import shutil

    from neuralsim.agents.transfer import real_env_spec

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["provenance"] = {**config.get("provenance", {}), "env_id": "NeuralSimRoom-v0",
                            "env_kwargs": {"target": None, "start_view_deg": None, "room_size": 6.0}}
    (ckpt / "config.json").write_text(json.dumps(config))
    # the task: the env's transfer task by default (the room's ball at rest), {} its default task, or the one given
    assert real_env_spec(str(ckpt)) == ("NeuralSimRoom-v0", {"room_size": 6.0, "ball_start": "rest"})
    assert real_env_spec(str(ckpt), {}) == ("NeuralSimRoom-v0", {"room_size": 6.0})
    assert real_env_spec(str(ckpt), {"target": None}) == ("NeuralSimRoom-v0", {"room_size": 6.0, "target": None})


def test_the_dream_trains_from_first_frames_of_the_real_task(tiny_checkpoint, tmp_path, monkeypatch):
    """The dream's training episodes start from the real task's first frames (the room's ball at rest), not the
    checkpoint's start set; dream_starts=0 keeps the checkpoint's; the dream's run record names the count."""
    from neuralsim.agents import transfer
    from neuralsim.agents.transfer import DREAM_START_SEED, dream_start_set, real_starts, training_key

    cfg = TransferConfig.quick_config(model=str(tiny_checkpoint), dream_starts=5, workdir=str(tmp_path))
    frames, descriptions = dream_start_set(cfg)
    expected = real_starts("NeuralSimRoom-v0", {**transfer.real_env_spec(cfg.model)[1]},
                           [DREAM_START_SEED + i for i in range(5)])
    assert np.array_equal(frames, expected[0]) and descriptions == expected[1] and len(frames) == 5
    assert dream_start_set(dataclasses.replace(cfg, dream_starts=0)) is None
    assert training_key("dream", cfg, 0)["dream_starts"] == 5 and "dream_starts" not in training_key("real", cfg, 0)
    assert training_key("dream", cfg, 0) != training_key("dream", dataclasses.replace(cfg, dream_starts=6), 0)
    seen = {}

    def capture(model, num_envs, seed, max_episode_steps, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("captured")

    monkeypatch.setattr(transfer, "make_dream_venv", capture)
    with pytest.raises(RuntimeError, match="captured"):
        transfer.train_ppo("dream", cfg, 0, tmp_path)
    assert np.array_equal(seen["starts"][0], frames)
    with pytest.raises(ValueError, match="dream_starts must be a non-negative integer"):
        TransferConfig(dream_starts=-1).validate()


def test_ppo_budget_benchmark(tmp_path, capsys):
    """benchmarks/ppo_budget.py: real-room PPO's saved policies beside random and each key set held, on held-out
    layouts; the JSON (last line and file) says the first budget above random."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import ppo_budget
    finally:
        sys.path.pop(0)
    out = tmp_path / "budget.json"
    result = ppo_budget.main(["--quick", "--timesteps", "256", "--checkpoints", "2", "--episodes", "2",
                              "--task", "start_view_deg=null", "--workdir", str(tmp_path / "work"), "--out", str(out)])
    assert result["task"] == {"start_view_deg": None}
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(out.read_text()) == result
    names = [r["policy"] for r in result["rows"]]
    assert names[:6] == ["random", "always w", "always j", "always l", "always wj", "always wl"]
    assert [r["steps"] for r in result["rows"][6:]] == [128, 256] and result["rows"][0]["return_mean"] == result["random_return"]
    assert result["first_steps_above_random"] in (None, 128, 256)
    assert (tmp_path / "work" / "real-seed0" / "final" / "policy.json").is_file()
    with pytest.raises(SystemExit):
        ppo_budget.main(["--quick", "--episodes", "0", "--out", str(tmp_path / "x.json")])
    assert "--episodes must be >= 1, got 0" in capsys.readouterr().err
    for bad, message in (("foo=1", "has no task option foo"), ("start_view_deg", "--task must be OPTION=JSON"),
                         ("start_view_deg=500", "start_view_deg must be None")):
        with pytest.raises(SystemExit):
            ppo_budget.main(["--quick", "--task", bad, "--out", str(tmp_path / "x.json")])
        assert message in capsys.readouterr().err


def test_real_task_reaches_the_real_envs(tmp_path, monkeypatch):
    """TransferConfig.real_task: task options for the real env's training and evaluation, checked by validate."""
    from neuralsim.agents import transfer

    with pytest.raises(ValueError, match="real_task must be None or a dict"):
        TransferConfig(real_task=[("start_view_deg", None)]).validate()
    cfg = TransferConfig(real_task={"start_view_deg": None})
    cfg.validate()
    seen = {}

    def capture(env_id, env_kwargs, *args, **kwargs):
        seen.update(env_kwargs)
        raise RuntimeError("captured")

    monkeypatch.setattr(transfer, "make_real_venv", capture)
    with pytest.raises(RuntimeError, match="captured"):
        transfer.train_ppo("real", cfg, 0, tmp_path)
    assert "start_view_deg" in seen and seen["start_view_deg"] is None


def test_ppo_speed_benchmark(tmp_path, capsys):
    """benchmarks/ppo_speed.py: PPO's training speed in both worlds with both observation types, and the ratios."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import ppo_speed
    finally:
        sys.path.pop(0)
    out = tmp_path / "speed.json"
    result = ppo_speed.main(["--quick", "--timesteps", "128", "--out", str(out)])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(out.read_text()) == result
    assert [(r["world"], r["obs"]) for r in result["rows"]] == [("real", "rgb"), ("dream", "rgb"), ("real", "latent"),
                                                                 ("dream", "latent")]
    assert all(r["env_steps"] == 128 and r["env_steps_per_s"] > 0 for r in result["rows"])
    speed = {(r["world"], r["obs"]): r["env_steps_per_s"] for r in result["rows"]}
    assert result["dream_latent_vs_real_rgb"] == pytest.approx(speed[("dream", "latent")] / speed[("real", "rgb")], rel=1e-3)
    latent = [r for r in result["rows"] if r["obs"] == "latent"]  # the shipped model: a tracker, so taught first
    assert all(r["extractor"] == "pretrained" and r["pretrain_s"] > 0 for r in latent)
    # the dream's latents from its decoded frames: a dream row of its own; the real env's latents are latent's
    frames = ppo_speed.main(["--quick", "--timesteps", "128", "--obs", "latent", "latent-frames", "--out", str(out)])
    rows = {(r["world"], r["obs"]): r for r in frames["rows"]}
    assert list(rows) == [("real", "latent"), ("dream", "latent"), ("real", "latent-frames"), ("dream", "latent-frames")]
    assert rows[("real", "latent-frames")]["same_as"] == "latent"
    assert rows[("real", "latent-frames")]["env_steps_per_s"] == rows[("real", "latent")]["env_steps_per_s"]
    assert "dream_latent_frames_vs_real_latent_frames" in frames
    with pytest.raises(SystemExit):
        ppo_speed.main(["--quick", "--timesteps", "64", "--out", str(tmp_path / "x.json")])
    assert "--timesteps must be at least" in capsys.readouterr().err


def test_ppo_observation_benchmark(tmp_path, capsys):
    """benchmarks/ppo_observation.py: PPO on the frames and on two oracles of the target; the oracle bar stands at the
    target's side of the image and the oracle state says its bearing and distance."""
    pytest.importorskip("mujoco")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import ppo_observation
    finally:
        sys.path.pop(0)
    env = ppo_observation.StateObservation(gym.make("NeuralSimRoom-v0"))
    bar = ppo_observation.BarObservation(gym.make("NeuralSimRoom-v0"))
    for seed in range(6):
        state, info = env.reset(seed=seed)
        image, _ = bar.reset(seed=seed)
        assert state[2] == pytest.approx(info["target_distance"]) and state[0] > math.cos(math.radians(36))  # in view
        columns = np.flatnonzero(image.max(axis=(0, 2)) == 255)
        assert len(columns) and np.sign(columns.mean() - 31.5) == np.sign(state[1])  # + bearing: right of centre
    env.close()
    bar.close()
    out = tmp_path / "obs.json"
    result = ppo_observation.main(["--quick", "--timesteps", "256", "--observations", "bar,state",
                                   "--task", "target_colour=\"red\"", "--out", str(out)])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(out.read_text()) == result
    assert [r["observation"] for r in result["rows"]] == ["bar", "state"] and result["task"] == {"target_colour": "red"}
    # the latent observations: the room through a model's encoder, three extractors; and back through its decoder
    tiny = save_tiny_checkpoint(tmp_path / "tiny", model=make_tiny_model(frames_per_latent=1))
    latent = ppo_observation.main(["--quick", "--timesteps", "256", "--observations",
                                   "latent,latent-per-cell,latent-decoder-stem,decoded", "--model", str(tiny),
                                   "--out", str(tmp_path / "latent.json")])
    assert [r["observation"] for r in latent["rows"]] == ["latent", "latent-per-cell", "latent-decoder-stem", "decoded"]
    assert all(r["episodes"] >= 0 and r["env_steps_per_s"] > 0 for r in latent["rows"])
    # the extractors taught first (by the simulator's labels, by the dream's tracker) and the tracker's own readers
    # need the shipped model's target tracker
    taught = ppo_observation.main(["--quick", "--timesteps", "256", "--observations",
                                   "latent-probed,latent-dreamed,latent-tracker,latent-measure",
                                   "--out", str(tmp_path / "taught.json")])
    rows = {r["observation"]: r for r in taught["rows"]}
    assert list(rows) == ["latent-probed", "latent-dreamed", "latent-tracker", "latent-measure"]
    for name in ("latent-probed", "latent-dreamed"):
        assert 0 <= rows[name]["pretraining"]["visible_accuracy"] <= 1 and rows[name]["pretraining"]["seconds"] > 0
    for bad in (["--observations", "depth"], ["--task", "target_colour=\"grey\""]):
        with pytest.raises(SystemExit):
            ppo_observation.main(["--quick", *bad, "--out", str(tmp_path / "x.json")])


def test_the_agreement_benchmark_refuses_a_directory_without_saved_trainings(tmp_path):
    script = load_script("benchmarks/transfer_agreement.py", "transfer_agreement_args")
    with pytest.raises(SystemExit):
        script.main(["--policies", str(tmp_path), "--results-dir", str(tmp_path)])
    (tmp_path / "dream-seed0").mkdir()
    (tmp_path / "real-seed0").mkdir()
    for world in ("dream", "real"):
        (tmp_path / f"{world}-seed0" / "run.json").write_text("{}")
    with pytest.raises(SystemExit):
        script.main(["--policies", str(tmp_path), "--episodes", "1", "--results-dir", str(tmp_path)])
    with pytest.raises(SystemExit):  # not JSON
        script.main(["--policies", str(tmp_path), "--task", "ball_start=rest", "--results-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="no task option spawn"):
        script.main(["--policies", str(tmp_path), "--task", "spawn=1", "--results-dir", str(tmp_path)])


@pytest.mark.slow
def test_the_agreement_benchmark_scores_a_runs_saved_policies_as_the_transfer_benchmark_does(tmp_path):
    from neuralsim.agents.transfer import train_ppo

    cfg = TransferConfig.quick_config(timesteps=256, max_episode_steps=10, workdir=str(tmp_path / "work"))
    for world in ("dream", "real"):
        train_ppo(world, cfg, 0, tmp_path / "work" / f"{world}-seed0")
    script = load_script("benchmarks/transfer_agreement.py", "transfer_agreement_bench")
    result = script.main(["--policies", str(tmp_path / "work"), "--episodes", "2", "--max-episode-steps", "10",
                          "--task", 'ball_start="thrown"', "--results-dir", str(tmp_path)])
    assert result["task"] == {"ball_start": "thrown"}
    names = [row["policy"] for row in result["agreement"]]
    assert names[-3:] == ["random", "scripted: forward", "scripted: turn"] and len(names) == 3 + 2 * cfg.checkpoints
    assert {"spearman", "spearman_ci90", "reward_corr_t1_16", "termination_f1"} <= set(result)
    assert all(len(row["real_returns"]) == len(row["dream_returns"]) == 2 for row in result["agreement"])
    assert json.loads((tmp_path / "transfer_agreement.json").read_text())["episodes"] == 2


@pytest.mark.slow
def test_the_agreement_benchmark_scores_latent_policies_with_either_latent_source(tmp_path):
    """A run on latent observations: the room through the encoder, the dream's latents from --latent-source."""
    from neuralsim.agents.transfer import train_ppo

    cfg = TransferConfig.quick_config(timesteps=256, max_episode_steps=8, workdir=str(tmp_path / "work"), obs="latent",
                                      latent_extractor="cells")
    for world in ("dream", "real"):
        train_ppo(world, cfg, 0, tmp_path / "work" / f"{world}-seed0")
    script = load_script("benchmarks/transfer_agreement.py", "transfer_agreement_latent")
    for source in ("dynamics", "frames"):
        result = script.main(["--policies", str(tmp_path / "work"), "--episodes", "2", "--max-episode-steps", "8",
                              "--latent-source", source, "--results-dir", str(tmp_path), "--name", source])
        assert result["obs"] == "latent" and result["latent_source"] == source
        assert all(len(row["dream_returns"]) == 2 for row in result["agreement"])
    with pytest.raises(SystemExit):
        script.main(["--policies", str(tmp_path / "work"), "--latent-source", "pixels", "--results-dir", str(tmp_path)])
    # the same run's final policies in the dream under each latent source, beside the room
    sources = load_script("benchmarks/latent_source.py", "latent_source_bench")
    result = sources.main(["--policies", str(tmp_path / "work"), "--episodes", "2", "--max-episode-steps", "8",
                           "--results-dir", str(tmp_path)])
    assert [row["policy"] for row in result["rows"]] == ["dream-seed0", "real-seed0"]
    assert result["sources"] == ["dynamics", "frames", "frames-no-memory"]
    for source in result["sources"]:
        assert all(0 <= row[f"{source}_success"] <= 1 for row in result["rows"]) and source in result["summary"]
    assert json.loads((tmp_path / "latent_source.json").read_text()) == result
    with pytest.raises(SystemExit):
        sources.main(["--policies", str(tmp_path / "work"), "--sources", "pixels", "--results-dir", str(tmp_path)])


def test_the_latent_source_benchmark_refuses_runs_it_cannot_score(tmp_path):
    script = load_script("benchmarks/latent_source.py", "latent_source_args")
    with pytest.raises(SystemExit):  # no saved policies
        script.main(["--policies", str(tmp_path), "--results-dir", str(tmp_path)])
    (tmp_path / "real-seed0" / "final").mkdir(parents=True)
    (tmp_path / "real-seed0" / "final" / "policy.json").write_text("{}")
    (tmp_path / "real-seed0" / "run.json").write_text(json.dumps({"key": {"obs": "rgb"}}))
    with pytest.raises(SystemExit, match="2"):  # policies on rgb frames
        script.main(["--policies", str(tmp_path), "--results-dir", str(tmp_path)])
