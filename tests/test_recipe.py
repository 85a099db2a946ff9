"""examples/make_default_model.py: the fresh dynamics of the from-start and fast schedules, their side jobs and merges,
and the option checks."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("recipe_under_test", ROOT / "examples" / "make_default_model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["recipe_under_test"] = module  # its dataclasses look their module up by name while it loads
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("recipe_under_test", None)


def test_fresh_dynamics_keeps_the_autoencoder_and_seeds_the_rest(recipe, tiny_checkpoint, tmp_path):
    from neuralsim.checkpoints import read_start_frames, read_weights
    from neuralsim.model import WorldModel

    recipe.fresh_dynamics(tiny_checkpoint, tmp_path / "a", 0, {"context_window": 7, "denoise_steps": 1})
    recipe.fresh_dynamics(tiny_checkpoint, tmp_path / "b", 0, {"context_window": 7, "denoise_steps": 1})
    recipe.fresh_dynamics(tiny_checkpoint, tmp_path / "c", 1, {"context_window": 7, "denoise_steps": 1})
    trained, a, b, c = (read_weights(d) for d in (tiny_checkpoint, tmp_path / "a", tmp_path / "b", tmp_path / "c"))
    for name, value in a.items():
        if name.startswith("autoencoder."):
            assert torch.equal(value, trained[name]), name  # the autoencoder, as it was
        assert torch.equal(value, b[name]), name  # the same seed, the same weights
    dynamics = [n for n in a if n.startswith("dynamics.") and a[n].is_floating_point() and a[n].std() > 0]
    # the tiny checkpoint is an untrained model seeded 0: seed 0 rebuilds its dynamics, seed 1 draws others
    assert dynamics and all(torch.equal(a[n], trained[n]) for n in dynamics)
    assert any(not torch.equal(c[n], trained[n]) for n in dynamics)
    assert all(torch.equal(c[n], trained[n]) for n in c if n.startswith("autoencoder."))
    model = WorldModel.from_pretrained(tmp_path / "a")
    assert model.config.context_window == 7 and model.config.denoise_steps == 1
    assert len(read_start_frames(tmp_path / "a")[0]) == len(read_start_frames(tiny_checkpoint)[0])
    assert not list(tmp_path.glob(".*-tmp"))  # staged, then moved into place


def test_the_from_start_stages_are_valid_streaming_runs(recipe):
    for stage in recipe.FROM_START_STAGES + recipe.STREAMING_STAGES + recipe.ONE_FRAME_STAGES:
        assert stage.steps > 0 and stage.window >= 2 and 0 <= stage.burn_in <= stage.window - 2
        assert 0 <= stage.own_history <= 1 and 0 <= stage.still_windows < 1 and 0 <= stage.stop_windows < 1
        assert stage.own_history > 0 or not stage.own_history_grad  # train refuses a gradient through no own history
    fields = dict(recipe.FROM_START_CONFIG)
    assert fields["denoise_steps"] == 1 and fields["context_window"] == 128


def test_the_fast_schedule_starts_with_every_shipped_field(recipe):
    fields = dict(recipe.FAST_CONFIG)
    # one network pass per env step from the first update; the memory whose gate runs no net, with a depth net
    assert fields["commit_from_denoise"] and fields["denoise_steps"] == 1 and fields["context_window"] == 128
    assert fields["frame_memory_gate"] == "seen" and fields["frame_memory_depth_width"] == recipe.FAST_DEPTH.width > 0
    trained_with = {k: v for k, v in recipe.INSTALL_CONFIG.items() if k not in recipe.INSTALL_ONLY}
    assert trained_with.items() <= fields.items() and set(recipe.INSTALL_ONLY) <= set(recipe.INSTALL_CONFIG)
    for stage in recipe.FAST_STAGES:  # every target frame at tau = 1: what commit_from_denoise samples
        assert stage.one_step_fraction == 1.0 and 0 <= stage.burn_in <= stage.window - 2 and not stage.config
    assert recipe.FAST_STAGES[-1].window == 64 and recipe.FAST_STAGES[-1].burn_in == 48
    assert recipe.FAST_DECODER[0][3] == 0.0 and recipe.FAST_DECODER[-1][3] > 0  # objects weighted up last
    assert not recipe.FAST_DEPTH.regate


def record_processes(recipe, monkeypatch) -> list[list[str]]:
    """Replace the recipe's subprocess.run: record each command and leave the files it would have written."""
    runs = []

    def fake_run(command, **kwargs):
        runs.append([str(c) for c in command])
        out = Path(command[command.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "model.safetensors", "manifest.json"):
            (out / name).write_text("{}")
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(recipe.subprocess, "run", fake_run)
    return runs


def test_the_fast_side_job_trains_the_tracker_then_the_depth_net_then_the_prompt_start(recipe, tmp_path,
                                                                                       monkeypatch):
    runs = record_processes(recipe, monkeypatch)
    timings = {}
    recipe.fast_side_job(recipe.Recipe(prompt_layouts=4, reward_episodes=8), tmp_path, tmp_path / "data",
                         tmp_path / "ae", tmp_path / "fresh", timings)
    collect, calibration, tracker, depth, prompt_collect, prompt, view_collect, views = runs
    assert collect[3] == "collect" and collect[collect.index("--out") + 1] == str(tmp_path / "reward_data")
    assert calibration[calibration.index("--out") + 1] == tracker[tracker.index("--calibration-data") + 1]
    assert collect[collect.index("--episodes") + 1] == "8" and collect[collect.index("--workers") + 1] == "1"
    assert tracker[3:5] == ["train", "reward"] and tracker[tracker.index("--init") + 1] == str(tmp_path / "fresh")
    assert tracker[tracker.index("--reward-kind") + 1] == "target"
    assert tracker[tracker.index("--steps") + 1] == str(recipe.Recipe().fast_reward_steps)
    assert tracker[tracker.index("--latent-cache") + 1] == str(tmp_path / "latent_cache")
    assert depth[1].endswith("finetune_depth.py") and depth[depth.index("--model") + 1] == str(tmp_path / "fresh")
    assert depth[depth.index("--threads") + 1] == "1" and depth[depth.index("--out") + 1] == str(tmp_path / "depth")
    assert prompt_collect[3] == "collect" and prompt[3:5] == ["train", "prompt"]
    assert prompt[prompt.index("--init") + 1] == str(tmp_path / "fresh")
    assert prompt[prompt.index("--steps") + 1] == str(recipe.Recipe().fast_prompt_steps)  # not the other schedules'
    # the view generator last: the room turned on the spot, then `train views` from the fresh model
    assert view_collect[3] == "collect" and view_collect[view_collect.index("--policy") + 1] == "turn"
    assert view_collect[view_collect.index("--max-steps") + 1] == "45"
    assert views[3:5] == ["train", "views"] and views[views.index("--init") + 1] == str(tmp_path / "prompt")
    assert views[views.index("--data") + 1] == view_collect[view_collect.index("--out") + 1]
    assert views[views.index("--view-pairs") + 1] == str(recipe.Recipe().view_pairs)
    assert {"tracker (beside the dynamics)", "depth net (beside the dynamics)",
            "prompt start (beside the dynamics)", "view generator (beside the dynamics)"} <= set(timings)
    # a recurrent reward model learns on the dynamics' own dreams: it is not trained beside them
    runs.clear()
    (tmp_path / "r").mkdir()
    recipe.fast_side_job(recipe.Recipe(prompt_layouts=0, view_layouts=0, reward_kind="recurrent"), tmp_path / "r", tmp_path / "data",
                         tmp_path / "ae", tmp_path / "fresh", {})
    assert [r[1].endswith("finetune_depth.py") for r in runs] == [True]


def test_reward_commands_collect_once_and_dream_only_for_a_recurrent_model(recipe, tmp_path):
    first = recipe.reward_commands(recipe.Recipe(), tmp_path, tmp_path / "m", 10, workers=2, progress=True)
    assert [c[3] for c in first] == ["collect", "collect", "train"] and "--no-progress" not in first[2]
    assert first[0][first[0].index("--workers") + 1] == "2" and first[2][first[2].index("--steps") + 1] == "10"
    assert first[2][first[2].index("--self-forcing") + 1] == "0.0"  # a tracker learns on real latents only
    # a tracker's range is calibrated on other episodes: other seeds, the policy mixture
    calibration = first[1]
    assert calibration[calibration.index("--policy") + 1] == "explore,scripted,sticky"
    assert calibration[calibration.index("--seed") + 1] == "2500000" != first[0][first[0].index("--seed") + 1]
    assert first[2][first[2].index("--calibration-data") + 1] == calibration[calibration.index("--out") + 1]
    for name in ("reward_data", "calibration_data"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text("{}")
    assert [c[3] for c in recipe.reward_commands(recipe.Recipe(), tmp_path, tmp_path / "m", 10, workers=1,
                                                 progress=False)] == ["train"]
    again = recipe.reward_commands(recipe.Recipe(reward_kind="recurrent"), tmp_path, tmp_path / "m", 10, workers=1,
                                   progress=False)
    assert [c[3] for c in again] == ["train"] and "--no-progress" in again[0] and "--calibration-data" not in again[0]
    assert again[0][again[0].index("--self-forcing") + 1] == str(recipe.Recipe().reward_own_share)


def test_the_fast_schedule_grows_the_decoder_after_the_dynamics_and_merges_every_part(recipe, tmp_path, monkeypatch):
    runs = record_processes(recipe, monkeypatch)
    merges = []
    monkeypatch.setattr(recipe, "fresh_dynamics", lambda ae, dest, *a, **k: (dest.mkdir(parents=True),
                                                                            (dest / "model.safetensors").write_text("")))
    monkeypatch.setattr(recipe, "run_streaming", lambda stages, init, out, prefix, *a: out / f"{prefix}{len(stages)}")
    monkeypatch.setattr(recipe, "merge_decoder_into", lambda part, model, dest: merges.append(("decoder", part, model))
                        or dest)
    monkeypatch.setattr(recipe, "merge_part", lambda part, model, dest, prefix, fields, start_set=None: merges.append(
        (prefix, part, model, fields, start_set)))
    monkeypatch.setattr(recipe, "merge_prompt_start", lambda part, model, dest: merges.append(("prompt", part, model)))
    servo = []
    monkeypatch.setattr(recipe, "set_camera_servo", lambda model, data: servo.append((model, data)) or {})
    final = recipe.run_fast(recipe.Recipe(prompt_layouts=4), tmp_path, tmp_path / "data", tmp_path / "ae", {}, {})
    decoders = [r for r in runs if r[1].endswith("finetune_decoder.py")]
    assert len(decoders) == len(recipe.FAST_DECODER)
    assert decoders[0][decoders[0].index("--model") + 1] == str(tmp_path / "ae") and "--decoder-blocks" in decoders[0]
    assert decoders[1][decoders[1].index("--model") + 1] == str(tmp_path / "decoder_grown1")
    assert "--decoder-blocks" not in decoders[1] and "--object-weight" in decoders[1]
    assert final == tmp_path / "final_fast"
    dynamics = tmp_path / f"fast{len(recipe.FAST_STAGES)}"
    assert merges == [
        ("decoder", tmp_path / f"decoder_grown{len(recipe.FAST_DECODER)}", dynamics),
        ("frame_memory.depth.", tmp_path / "depth", tmp_path / "final",
         ("frame_memory_depth_width", "frame_memory_depth_refine"), None),
        # the tracker brings the start set of its task's episodes
        ("reward_model.", tmp_path / "reward", tmp_path / "final_depth", recipe.REWARD_MODEL_FIELDS, tmp_path / "reward"),
        ("prompt", tmp_path / "prompt", tmp_path / "final_reward"),
        ("prompt_views.", tmp_path / "views", tmp_path / "final_prompt", recipe.VIEW_FIELDS, None)]
    assert servo == [(tmp_path / "final_fast", tmp_path / "data")]  # last: the data's camera servo in its config


def servo_dataset(path: Path, camera: dict | None) -> Path:
    """A one-episode camera dataset whose manifest states ``camera`` (an env's ``camera_spec``), or none."""
    import gymnasium as gym

    from neuralsim.actions import space_to_spec
    from neuralsim.data import ShardWriter

    manifest = {"env_id": "synthetic", "image_size": [32, 32], "action_spec": space_to_spec(
        gym.spaces.Box(-1, 1, (4,), np.float32)), "frames_per_step": 1, **({"camera": camera} if camera else {})}
    with ShardWriter(path, manifest, episodes_per_shard=1) as writer:
        writer.add_episode(np.zeros((3, 32, 32, 3), np.uint8), np.zeros((2, 4), np.float32), np.zeros(2, np.float32),
                           np.zeros(2, bool), np.array([False, True]), "")
    return path


def test_set_camera_servo_takes_the_datas_servo_into_the_config_and_keeps_the_weights(recipe, tmp_path):
    from conftest import model_weights, save_tiny_checkpoint
    from neuralsim.checkpoints import read_config, read_start_frames

    room = {"translation_speed": 0.08, "rotation_speed_deg": 4.0, "fovy_deg": 70.0, "velocity_gain": 100.0,
            "acceleration_limit": 33.666, "frame_time": 0.05, "substeps": 5.0}  # the room's camera_spec
    model = save_tiny_checkpoint(tmp_path / "model")
    before, start = model_weights(model), read_start_frames(model)
    fields = recipe.set_camera_servo(model, servo_dataset(tmp_path / "data", room))
    assert fields == {"camera_velocity_gain": 100.0, "camera_acceleration_limit": 33.666, "camera_frame_time": 0.05,
                      "camera_substeps": 5}
    config = read_config(model)
    assert (config.camera_velocity_gain, config.camera_acceleration_limit, config.camera_substeps) == (100.0, 33.666, 5)
    after = model_weights(model)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert np.array_equal(read_start_frames(model)[0], start[0])  # the start set travels with it
    # data without a servo leaves the model as it is
    assert recipe.set_camera_servo(model, servo_dataset(tmp_path / "still", None)) == {}
    assert read_config(model).camera_velocity_gain == 100.0


def test_merge_part_takes_the_depth_net_and_its_width_and_nothing_else(recipe, tmp_path):
    from conftest import make_tiny_model, save_tiny_checkpoint
    from neuralsim.checkpoints import read_weights
    from neuralsim.model import WorldModel

    save_tiny_checkpoint(tmp_path / "dream")
    save_tiny_checkpoint(tmp_path / "model", frames_per_latent=1, frame_memory_width=4, frame_memory_depth_width=4)
    wider = make_tiny_model(frames_per_latent=1, frame_memory_width=4, frame_memory_depth_width=8)
    with torch.no_grad():
        for p in wider.frame_memory.depth.parameters():
            p.add_(0.5)  # not the weights any fresh net of this seed would have
    save_tiny_checkpoint(tmp_path / "depth", model=wider)
    recipe.merge_part(tmp_path / "depth", tmp_path / "model", tmp_path / "merged", "frame_memory.depth.",
                      ("frame_memory_depth_width",))
    merged, model, depth = (read_weights(d) for d in (tmp_path / "merged", tmp_path / "model", tmp_path / "depth"))
    assert WorldModel.from_pretrained(tmp_path / "merged").config.frame_memory_depth_width == 8
    assert all(torch.equal(merged[k], v) for k, v in depth.items() if k.startswith("frame_memory.depth."))
    assert all(torch.equal(merged[k], v) for k, v in model.items() if not k.startswith("frame_memory.depth."))
    with pytest.raises(SystemExit, match="no weights under"):
        recipe.merge_part(tmp_path / "dream", tmp_path / "model", tmp_path / "refused", "frame_memory.depth.", ())
    assert not (tmp_path / "refused").exists()


def test_merge_part_keeps_the_models_start_set_unless_told_whose(recipe, tmp_path):
    """The tracker's merge brings the start set of its task's episodes; other parts keep the model's."""
    from conftest import save_tiny_checkpoint
    from neuralsim.checkpoints import read_start_frames, write_start_frames

    save_tiny_checkpoint(tmp_path / "model")
    save_tiny_checkpoint(tmp_path / "reward")
    own = np.full((2, *read_start_frames(tmp_path / "reward")[0].shape[1:]), 7, dtype=np.uint8)
    write_start_frames(tmp_path / "reward", own, ["target: the red ball", "target: the red ball"])
    recipe.merge_part(tmp_path / "reward", tmp_path / "model", tmp_path / "kept", "autoencoder.", ())
    recipe.merge_part(tmp_path / "reward", tmp_path / "model", tmp_path / "task", "autoencoder.", (),
                      start_set=tmp_path / "reward")
    kept, model = read_start_frames(tmp_path / "kept"), read_start_frames(tmp_path / "model")
    assert np.array_equal(kept[0], model[0]) and kept[1] == model[1]
    frames, descriptions = read_start_frames(tmp_path / "task")
    assert np.array_equal(frames, own) and descriptions == ["target: the red ball"] * 2


def test_run_streaming_passes_each_stage_to_train(recipe, tiny_checkpoint, tmp_path, monkeypatch):
    import neuralsim.train

    seen = []
    def fake_train(cfg):  # records the config and leaves a model where the next stage starts
        seen.append(cfg)
        shutil.copytree(tiny_checkpoint, cfg.out)

    monkeypatch.setattr(neuralsim.train, "train", fake_train)
    stages = (recipe.StreamingStage(steps=3, window=8, batch_size=2, lr=1e-4, warmup=1, own_history=0.9,
                                    one_step_fraction=1.0, still_windows=0.3, seed_offset=8, burn_in=4,
                                    stop_windows=0.3, own_history_grad=True, dtype="auto"),)
    stages += (recipe.StreamingStage(steps=3, window=8, batch_size=2, lr=1e-4, warmup=1, own_history=0.5,
                                     one_step_fraction=1.0, still_windows=0.0, data="own_data"),)
    last = recipe.run_streaming(stages, tiny_checkpoint, tmp_path, "s", recipe.Recipe(seed=1),
                                {"window": 2, "dtype": "float32", "data": "common_data"}, {})
    assert last == tmp_path / "s2" and len(seen) == 2
    cfg = seen[0]
    assert cfg.streaming and cfg.own_history_grad and cfg.own_history == 0.9 and cfg.burn_in == 4
    assert cfg.window == 8 and cfg.batch_size == 2 and cfg.seed == 9 and cfg.init == str(tiny_checkpoint)
    assert cfg.dtype == "auto" and seen[1].dtype == "float32"  # a stage's own dtype, else the recipe's
    assert seen[1].init == str(tmp_path / "s1") and not seen[1].own_history_grad  # each from the last
    assert seen[0].data == "common_data" and seen[1].data == str(tmp_path / "own_data")  # a stage's own data


def test_an_unknown_schedule_is_refused_naming_the_flag(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "make_default_model.py"), "--schedule", "fastest",
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--schedule must be one of parallel, from-start, fast, got 'fastest'" in run.stderr
    assert not (tmp_path / "out").exists()


def test_an_unknown_detector_data_is_refused_naming_the_flag(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "make_default_model.py"),
                          "--termination-detector-data", "data", "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "--termination-detector-data must be one of termination_data, one_frame_data, got 'data'" in run.stderr
    assert not (tmp_path / "out").exists()


def test_merge_prompt_start_adds_the_generator_and_refuses_other_latents(recipe, tmp_path):
    from conftest import save_tiny_checkpoint
    from neuralsim.checkpoints import read_weights
    from neuralsim.model import WorldModel

    dream = save_tiny_checkpoint(tmp_path / "dream")
    base = WorldModel.from_pretrained(dream)
    with_generator = WorldModel(base.config.replace(prompt_start_channels=32))
    with_generator.load_state_dict({**with_generator.state_dict(), **{
        k: v for k, v in base.state_dict().items() if k.startswith("autoencoder.")}})
    save_tiny_checkpoint(tmp_path / "prompt", model=with_generator)
    recipe.merge_prompt_start(tmp_path / "prompt", dream, tmp_path / "merged")
    merged, d, g = (read_weights(x) for x in (tmp_path / "merged", dream, tmp_path / "prompt"))
    assert all(torch.equal(merged[k], v) for k, v in d.items())  # the dream, as it was
    generator = [k for k in g if k.startswith("prompt_start.")]
    assert generator and all(torch.equal(merged[k], g[k]) for k in generator)  # plus the generator
    assert WorldModel.from_pretrained(tmp_path / "merged").config.prompt_start_channels == 32
    with torch.no_grad():  # a generator trained on another encoder
        with_generator.autoencoder.encoder.stem.weight.add_(1e-3)
    save_tiny_checkpoint(tmp_path / "other", model=with_generator)
    with pytest.raises(SystemExit, match="other latents"):
        recipe.merge_prompt_start(tmp_path / "other", dream, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_the_decoder_grows_beside_the_streaming_stages(recipe, tmp_path, dataset, monkeypatch):
    """grow_side_job: the decoder fine-tune's model grows (recipe.decoder_blocks) and trains through DECODER_GROWTH,
    one directory per run, each from the last; the dynamics stages after commit_from_denoise are what pay for it."""
    from conftest import make_tiny_model

    from neuralsim.checkpoints import read_config

    make_tiny_model(frames_per_latent=1).save_pretrained(tmp_path / "decoder")
    monkeypatch.setattr(recipe, "DECODER_GROWTH", ((2, 1e-3, 0, 0.0), (2, 1e-3, 1, 0.0)))
    timings = {}
    recipe.grow_side_job(recipe.Recipe(decoder_blocks="1,1,1,1"), tmp_path, dataset, None, tmp_path / "decoder", timings)
    first, second = read_config(tmp_path / "decoder_grown1"), read_config(tmp_path / "decoder_grown2")
    assert tuple(first.ae_decoder_blocks) == tuple(second.ae_decoder_blocks) == (1, 1, 1, 1)
    assert second.provenance["decoder_finetune"]["from"] == str(tmp_path / "decoder_grown1")
    assert second.provenance["decoder_finetune"]["before"]["seed"] == 0 and "decoder growth" in " ".join(timings)
    assert any(dict(stage.config).get("commit_from_denoise") for stage in recipe.STREAMING_STAGES)


def test_the_memory_stages_train_the_gate_add_its_depth_net_then_regate_on_true_depth(recipe, tmp_path):
    gate = recipe.memory_stage(recipe.Recipe(), tmp_path / "final", tmp_path / "data", tmp_path / "memory")
    assert gate.stage == "memory" and gate.init == str(tmp_path / "final") and gate.window == 48
    assert gate.steps == 3000 and gate.config_overrides == {} and not gate.resume
    depth = recipe.memory_stage(recipe.Recipe(), tmp_path / "memory", tmp_path / "data", tmp_path / "d", depth=True)
    assert depth.steps == 1000 and depth.init == str(tmp_path / "memory")
    assert depth.config_overrides == {"frame_memory_depth_width": 16} and not depth.memory_depth_frozen
    regate = recipe.memory_stage(recipe.Recipe(), tmp_path / "labels", tmp_path / "data", tmp_path / "g", regate=True)
    assert regate.steps == 1000 and regate.memory_depth_frozen and regate.config_overrides == {}
    first, second, fresh = (recipe.depth_label_command(recipe.Recipe(), stage, tmp_path / "d", tmp_path / "data",
                                                       tmp_path / "o") for stage in recipe.DEPTH_LABEL_STAGES)
    assert first[1].endswith("finetune_depth.py") and first[first.index("--model") + 1] == str(tmp_path / "d")
    assert first[first.index("--policies") + 1:first.index("--frames")] == ["explore"]
    assert first[first.index("--frames") + 1] == "32768" and "--width" not in first and "--flip" not in first
    assert second[second.index("--policies") + 1:second.index("--frames")] == ["explore", "sticky"]
    assert second[second.index("--steps") + 1] == "3000" and second[second.index("--lr") + 1] == "0.0005"
    # the last: a fresh, wider net on more frames, edges and objects weighted, mirrored; no gate after it
    assert fresh[fresh.index("--frames") + 1] == "131072" and fresh[fresh.index("--width") + 1] == "32"
    assert fresh[fresh.index("--edge-weight") + 1] == "4.0" and fresh[fresh.index("--object-weight") + 1] == "4.0"
    assert fresh[-1] == "--flip" and [s.regate for s in recipe.DEPTH_LABEL_STAGES] == [True, True, False]
    assert recipe.Recipe().memory_depth_label_stages == 3


@pytest.mark.mujoco
def test_the_recipe_collects_the_rooms_of_the_shipped_data(recipe):
    import gymnasium as gym

    import neuralsim.envs  # noqa: F401

    env = gym.make("NeuralSimRoom-v0", **recipe.SHIPPED_DATA_ROOM)
    try:
        room = env.unwrapped
        assert set(recipe.SHIPPED_DATA_ROOM) <= set(room.TASK_OPTIONS)  # only the task differs from today's room
        assert room.task_spec["reach_radius"] == 0.5  # the success of the shipped data: it sets episode lengths
    finally:
        env.close()


def test_termination_commands_collect_the_task_under_three_policies_then_train_from_the_finished_model(recipe, tmp_path):
    first = recipe.termination_commands(recipe.Recipe(), tmp_path, tmp_path / "m", progress=True)
    assert [c[3] for c in first] == ["collect", "collect", "train"] and "--no-progress" not in first[-1]
    collect, real, train_cmd = first
    assert collect[collect.index("--policy") + 1] == "explore,scripted,sticky"
    assert collect[collect.index("--seed") + 1] == "7000000"  # apart from every other part's data and the benchmarks'
    # the detector's own real frames: policies that reach the ball and that look around it, short episodes
    assert real[real.index("--policy") + 1] == "sticky,scripted,seek,explore"
    assert [real[real.index(flag) + 1] for flag in ("--episodes", "--seed", "--max-steps")] == ["4000", "9000000", "64"]
    assert train_cmd[train_cmd.index("--termination-real-data") + 1] == real[real.index("--out") + 1]
    assert train_cmd[train_cmd.index("--steps") + 1] == "5000"
    without = recipe.termination_commands(recipe.Recipe(termination_real_episodes=0), tmp_path, tmp_path / "m",
                                          progress=True)
    assert [c[3] for c in without] == ["collect", "train"] and "--termination-real-data" not in without[-1]
    assert train_cmd[4] == "termination" and train_cmd[train_cmd.index("--init") + 1] == str(tmp_path / "m")
    # the shipped detector dreams the walk-into-walls episodes (the second one-frame stage's); the usual ones on request
    assert train_cmd[train_cmd.index("--data") + 1] == str(tmp_path / "one_frame_data")
    usual = recipe.termination_commands(recipe.Recipe(termination_detector_data="termination_data"), tmp_path,
                                        tmp_path / "m", progress=True)[-1]
    assert usual[usual.index("--data") + 1] == collect[collect.index("--out") + 1]
    assert train_cmd[train_cmd.index("--termination-windows") + 1] == "4096"
    for name in ("termination_data", "termination_real_data"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text("{}")
    again = recipe.termination_commands(recipe.Recipe(), tmp_path, tmp_path / "m", progress=False)
    assert [c[3] for c in again] == ["train"] and "--no-progress" in again[0]  # collected once


def test_the_one_frame_stages_train_dreams_from_one_real_frame(recipe):
    """What an agent's dream is: one real frame, then the model's own frames, the gradient through them."""
    # runs/stream_start's, then runs/stream_keys's on the data that walks into walls
    assert [(s.window, s.steps, s.data) for s in recipe.ONE_FRAME_STAGES] == [
        (48, 400, "termination_data"), (48, 400, "one_frame_data")]
    assert len({s.seed_offset for s in recipe.ONE_FRAME_STAGES}) == 2  # the second draws other windows
    for stage in recipe.ONE_FRAME_STAGES:
        assert stage.burn_in == 0 and stage.own_history == 0.9 and stage.own_history_grad
    assert "keys" in recipe.Recipe().one_frame_policy.split(",")
    # the shipped model's: both stages, the detector on the walk-into-walls data (docs/experiments.md)
    assert recipe.Recipe().one_frame_stages == 2 and recipe.Recipe().termination_detector_data == "one_frame_data"


@pytest.mark.parametrize("stages, detector_data", [(0, "termination_data"), (1, "termination_data"),
                                                   (2, "termination_data"), (2, "one_frame_data"),
                                                   (0, "one_frame_data")])
def test_the_termination_stage_trains_the_one_frame_stages_on_its_data_then_the_detector_on_them(
        recipe, tiny_checkpoint, tmp_path, monkeypatch, stages, detector_data):
    from conftest import save_tiny_checkpoint
    from neuralsim.checkpoints import read_start_frames, write_start_frames

    init = tmp_path / "finished"
    shutil.copytree(tiny_checkpoint, init)
    streamed, commands = [], []
    def fake_streaming(stage_list, start, out, prefix, rcp, common, timings):
        streamed.append((stage_list, start, prefix, common["data"]))
        save_tiny_checkpoint(out / "one_frame1")
        frames = read_start_frames(out / "one_frame1")[0]  # its own start set (its data's): not the finished model's
        write_start_frames(out / "one_frame1", np.full_like(frames, 7), ["its data"] * len(frames))
        return out / "one_frame1"

    def fake_run(command, check):
        commands.append(command)
        if command[3] == "train":  # the detector's run leaves its model
            shutil.copytree(command[command.index("--init") + 1], tmp_path / "termination")

    monkeypatch.setattr(recipe, "run_streaming", fake_streaming)
    monkeypatch.setattr(recipe.subprocess, "run", fake_run)
    monkeypatch.setattr(recipe, "TERMINATION_FIELDS", ())
    monkeypatch.setattr(recipe, "merge_part", lambda part, model, dest, prefix, fields: shutil.copytree(model, dest))
    final = recipe.termination_stage(recipe.Recipe(one_frame_stages=stages, termination_detector_data=detector_data),
                                     tmp_path, init, {})
    # the walk-into-walls data is collected once, only where the second stage or the detector trains on it
    assert final == tmp_path / "final_termination"
    walls = stages == 2 or detector_data == "one_frame_data"
    assert [c[3] for c in commands] == ["collect"] * (3 if walls else 2) + ["train"]
    if walls:
        keys = commands[2]
        assert keys[keys.index("--out") + 1] == str(tmp_path / "one_frame_data")
        assert keys[keys.index("--policy") + 1] == "explore,scripted,keys,keys"
        assert keys[keys.index("--seed") + 1] == "8000000"
    detector = commands[-1]
    assert detector[detector.index("--data") + 1] == str(tmp_path / detector_data)
    detector_init = Path(detector[detector.index("--init") + 1])
    if stages == 0:
        assert streamed == [] and detector_init == init
        return
    assert streamed == [(recipe.ONE_FRAME_STAGES[:stages], init, "one_frame", str(tmp_path / "termination_data"))]
    assert detector_init == tmp_path / "final_one_frame"  # the detector learns the new dynamics' dreams
    kept, finished = read_start_frames(detector_init), read_start_frames(init)
    assert np.array_equal(kept[0], finished[0]) and kept[1] == finished[1]  # the task's start set stays


def test_install_only_of_a_fast_run_sets_the_datas_servo_then_installs(recipe, tmp_path, monkeypatch):
    """A fast run made before the servo step: --install-only sets it in the last stage's model, then installs that."""
    out = tmp_path / "out"
    (out / "final_fast").mkdir(parents=True)
    (out / "final_fast" / "config.json").write_text("{}")
    (out / "data").mkdir()
    (out / "data" / "manifest.json").write_text("{}")
    calls = []
    monkeypatch.setattr(recipe, "set_camera_servo", lambda model, data: calls.append(("servo", model, data)) or {})
    monkeypatch.setattr(recipe, "install", lambda model: calls.append(("install", model)))
    monkeypatch.setattr(sys, "argv", ["make_default_model.py", "--out", str(out), "--install-only"])
    recipe.main()
    assert calls == [("servo", out / "final_fast", out / "data"), ("install", out / "final_fast")]


def test_install_only_looks_for_every_memory_stage_last_first(recipe, tmp_path):
    dirs = recipe.memory_dirs(tmp_path)
    assert [d.name for d in dirs] == ["memory_depth_labels3", "memory_regate2", "memory_regate1", "memory_depth",
                                      "memory"]


def test_the_installed_copy_is_fp16_with_the_install_config_set(recipe, tiny_checkpoint, tmp_path):
    import json

    from neuralsim.checkpoints import read_weights

    assert recipe.INSTALL_CONFIG == {"frame_memory_gate": "seen", "frame_memory_frames": 3,
                                     "frame_memory_range_steps": 64.0}
    dest = tmp_path / "installed"
    recipe.fp16_copy(tiny_checkpoint, dest, {"frame_memory_gate": "seen"})
    config, before = json.loads((dest / "config.json").read_text()), json.loads((tiny_checkpoint / "config.json").read_text())
    assert config == {**before, "frame_memory_gate": "seen"}
    weights, source = read_weights(dest), read_weights(tiny_checkpoint)
    assert weights.keys() == source.keys()
    assert all(v.dtype == torch.float16 for k, v in weights.items() if source[k].is_floating_point())
    plain = tmp_path / "plain"
    recipe.fp16_copy(tiny_checkpoint, plain)  # the copies between stages: the config as it was
    assert (plain / "config.json").read_bytes() == (tiny_checkpoint / "config.json").read_bytes()


def test_the_floor_stage_trains_the_floor_net_on_the_finished_model_then_merges_it_alone(recipe, tmp_path, monkeypatch):
    from conftest import make_tiny_model, save_tiny_checkpoint
    from neuralsim.checkpoints import read_weights
    from neuralsim.model import WorldModel

    r = recipe.Recipe()
    command = recipe.floor_command(r, tmp_path / "init", tmp_path / "data", tmp_path / "floor")
    assert command[1].endswith("finetune_floor.py") and command[command.index("--model") + 1] == str(tmp_path / "init")
    assert command[command.index("--floor-height") + 1] == str(recipe.ROOM_CAMERA_HEIGHT)
    assert command[command.index("--stand-min-depth") + 1] == str(r.floor_stand_min_depth)
    assert command[command.index("--policies") + 1 : command.index("--policies") + 4] == ["explore", "sticky", "scripted"]
    save_tiny_checkpoint(tmp_path / "init", frames_per_latent=1, frame_memory_width=4, frame_memory_depth_width=4)
    trained = make_tiny_model(frames_per_latent=1, frame_memory_width=4, frame_memory_depth_width=4,
                              frame_memory_floor_height=0.6, frame_memory_floor_net_width=4,
                              frame_memory_stand_min_depth=1.2)
    calls = []

    def fake_run(cmd, check):  # the script's output: the finished model with a floor net (and a depth net changed)
        calls.append(cmd)
        with torch.no_grad():
            for p in trained.frame_memory.depth.parameters():
                p.add_(0.5)
        save_tiny_checkpoint(Path(cmd[cmd.index("--out") + 1]), model=trained)

    monkeypatch.setattr(recipe.subprocess, "run", fake_run)
    timings = {}
    final = recipe.floor_stage(r, tmp_path, tmp_path / "data", tmp_path / "init", timings)
    assert final == tmp_path / "final_floor" and len(calls) == 1 and "floor net" in timings
    merged, init = read_weights(final), read_weights(tmp_path / "init")
    assert all(torch.equal(merged[k], v) for k, v in init.items())  # the depth net and everything else: init's
    assert {k for k in merged if k not in init} == {k for k in read_weights(tmp_path / "floor")
                                                     if k.startswith("frame_memory.floor_net.")}
    config = WorldModel.from_pretrained(final).config
    assert (config.frame_memory_floor_height, config.frame_memory_floor_net_width,
            config.frame_memory_stand_min_depth) == (0.6, 4, 1.2)
    recipe.floor_stage(r, tmp_path, tmp_path / "data", tmp_path / "init", timings)
    assert len(calls) == 1  # a finished floor run is not trained again (resume)


@pytest.mark.mujoco
def test_the_installed_start_set_is_redrawn_in_the_rooms_default_task(recipe, tmp_path):
    """The recipe's start set shows thrown balls (its data's); the installed one shows the same rooms in the room's
    default task (the ball at rest); a start set of other rooms is refused."""
    import gymnasium as gym

    from neuralsim.checkpoints import read_start_frames, write_start_frames

    assert recipe.RECIPE_BALL == {"ball_start": "thrown"} and recipe.SHIPPED_DATA_ROOM["ball_start"] == "thrown"
    thrown, rest = gym.make("NeuralSimRoom-v0", ball_start="thrown"), gym.make("NeuralSimRoom-v0")
    shots = [(thrown.reset(seed=70 + i), rest.reset(seed=70 + i)) for i in range(2)]
    thrown.close(), rest.close()
    write_start_frames(tmp_path, np.stack([t[0] for t, _ in shots]), [t[1]["description"] for t, _ in shots])
    recipe.redraw_start_set(tmp_path, 70)
    frames, descriptions = read_start_frames(tmp_path)
    np.testing.assert_array_equal(frames, np.stack([r[0] for _, r in shots]))
    assert descriptions == [r[1]["description"] for _, r in shots]
    assert not np.array_equal(frames, np.stack([t[0] for t, _ in shots]))  # the balls moved to the floor
    with pytest.raises(ValueError, match="not the room of seed 71"):
        recipe.redraw_start_set(tmp_path, 71)
