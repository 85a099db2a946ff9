"""neuralsim.agents.pretrain: a latent policy's extractor taught where the dream's target is (the dream's own target
tracker labels its frames) before PPO, and ``LatentCellCNN``, the extractor it teaches."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import neuralsim  # noqa: F401
from neuralsim.agents.pretrain import dream_target_labels, has_target_tracker, pretrain_latent_extractor
from neuralsim.policy import LatentCellCNN


def latent_space(shape=(16, 8, 8)) -> gym.spaces.Box:
    return gym.spaces.Box(-1e4, 1e4, shape, np.float32)


def test_dream_labels_are_the_dreams_latents_and_its_trackers_estimate():
    from neuralsim.envs.world_model_env import latent_obs
    from neuralsim.session import DreamSession

    session = DreamSession("default", dtype="float32")
    latents, visible, column = dream_target_labels(session, 100, num_envs=8, episode_steps=10, seed=5)
    assert latents.shape == (100, *session.latent_shape) and latents.dtype == torch.float32
    assert visible.dtype == torch.bool and column.shape == (100,) and bool(torch.isfinite(column).all())
    assert float(column.abs().max()) <= 1.5
    assert 0 < float(visible.float().mean()) < 1  # the starts show the target; turning away loses it
    again = dream_target_labels(session, 100, num_envs=8, episode_steps=10, seed=5)
    assert all(torch.equal(a, b) for a, b in zip((latents, visible, column), again))  # the seed alone decides
    assert not torch.equal(latents, dream_target_labels(session, 100, num_envs=8, episode_steps=10, seed=6)[0])
    # an episode's first frame is its start: the latent observation the agent is shown, labelled by the tracker's
    # estimate of that start
    state, _, _ = session.start(8, session.generator(5), rng=np.random.default_rng(5))
    assert torch.equal(latents[:8], torch.from_numpy(latent_obs(state.latent)))
    assert torch.equal(visible[:8], session.model.reward_model.in_view(state.reward_memory[:, :2].float()))


def test_dream_labels_from_the_dreams_frames_encoded():
    """latent_source="frames": the latents are what WorldModelEnv(latent_source="frames") shows (the decoded frames
    encoded again); a start frame is encoded by both sources alike."""
    from neuralsim.session import DreamSession

    session = DreamSession("default", dtype="float32")
    flags = session.judge_frames, session.draw_views
    dynamics = dream_target_labels(session, 24, num_envs=8, episode_steps=3, seed=5)
    frames = dream_target_labels(session, 24, num_envs=8, episode_steps=3, seed=5, latent_source="frames")
    assert frames[0].shape == dynamics[0].shape and frames[1].dtype == torch.bool
    assert torch.equal(frames[0][:8], dynamics[0][:8]) and not torch.equal(frames[0][8:], dynamics[0][8:])
    again = dream_target_labels(session, 24, num_envs=8, episode_steps=3, seed=5, latent_source="frames")
    assert all(torch.equal(a, b) for a, b in zip(frames, again))
    assert (session.judge_frames, session.draw_views) == flags  # the caller's session handed back as it came
    with pytest.raises(ValueError, match="latent_source must be one of 'dynamics', 'frames', got 'rgb'"):
        dream_target_labels(session, 8, latent_source="rgb")


def test_labels_need_a_target_tracker_and_good_arguments(tiny_checkpoint):
    assert has_target_tracker("default") and not has_target_tracker(str(tiny_checkpoint))
    assert not has_target_tracker("no-such-model")
    with pytest.raises(ValueError, match="target tracker"):
        dream_target_labels(str(tiny_checkpoint), 8)
    for kwargs, name in (({"frames": 0}, "frames"), ({"num_envs": 1.5}, "num_envs"), ({"walk": 2.0}, "walk"),
                         ({"keys": "wj"}, "keys"), ({"keys": ["w", "x"]}, "keys"), ({"episode_steps": True}, "episode_steps")):
        with pytest.raises(ValueError, match=name):
            dream_target_labels("default", **{"frames": 8, **kwargs})


def test_pretraining_teaches_an_extractor_a_tiny_problem():
    """Synthetic latents whose 'target' is one bright cell: the extractor learns to say whether it is there and at
    which column, and two runs from the same weights and seed end on the same weights."""
    g = torch.Generator().manual_seed(0)
    n = 1200
    latents = torch.randn(n, 4, 6, 6, generator=g) * 0.1
    visible = torch.rand(n, generator=g) < 0.6
    col = torch.randint(0, 6, (n,), generator=g)
    rows = torch.arange(n)[visible]
    latents[rows, 0, 2, col[visible]] = 3.0
    column = (col.float() + 0.5) / 3 - 1
    torch.manual_seed(0)
    extractor = LatentCellCNN(latent_space((4, 6, 6)), features_dim=32)
    start = {k: v.clone() for k, v in extractor.state_dict().items()}
    figures = pretrain_latent_extractor(extractor, data=(latents, visible, column), epochs=6, lr=2e-3, seed=1)
    assert set(figures) == {"frames", "epochs", "visible_share", "visible_accuracy", "column_error", "label_s", "train_s"}
    assert figures["frames"] == n and figures["visible_accuracy"] > 0.95 and figures["column_error"] < 0.3
    twin = LatentCellCNN(latent_space((4, 6, 6)), features_dim=32)
    twin.load_state_dict(start)
    twin_figures = pretrain_latent_extractor(twin, data=(latents, visible, column), epochs=6, lr=2e-3, seed=1)
    timings = ("label_s", "train_s")
    assert {k: v for k, v in twin_figures.items() if k not in timings} == {k: v for k, v in figures.items() if k not in timings}
    assert all(torch.equal(a, b) for a, b in zip(extractor.state_dict().values(), twin.state_dict().values()))
    assert not all(torch.equal(start[k], v) for k, v in extractor.state_dict().items())


def test_pretraining_refuses_bad_arguments():
    extractor = LatentCellCNN(latent_space((4, 6, 6)), features_dim=8)
    data = (torch.zeros(20, 4, 6, 6), torch.zeros(20, dtype=torch.bool), torch.zeros(20))
    for kwargs, name in (({"epochs": 0}, "epochs"), ({"batch_size": -1}, "batch_size"), ({"lr": 0}, "lr")):
        with pytest.raises(ValueError, match=name):
            pretrain_latent_extractor(extractor, data=data, **kwargs)
    with pytest.raises(ValueError, match="extractor"):
        pretrain_latent_extractor(torch.nn.Linear(2, 2), data=data)
    with pytest.raises(ValueError, match="at least 10"):
        pretrain_latent_extractor(extractor, data=tuple(t[:5] for t in data))


def test_latent_cell_cnn_policy_saves_and_loads_by_name(tiny_checkpoint, tmp_path):
    from stable_baselines3 import PPO

    from neuralsim.agents.sb3 import latent_policy_kwargs, make_sb3_env
    from neuralsim.policy import load_policy, save_policy

    with pytest.raises(ValueError, match="extractor must be one of"):
        latent_policy_kwargs(extractor="resnet")
    with pytest.raises(ValueError, match=r"observation_space must be a Box of latent frames"):
        LatentCellCNN(gym.spaces.Box(-1, 1, (8,), np.float32))
    venv = make_sb3_env(model=str(tiny_checkpoint), num_envs=2, seed=0, obs_type="latent", max_episode_steps=10)
    algo = PPO("MlpPolicy", venv, policy_kwargs=latent_policy_kwargs(features_dim=16, extractor="cells"), n_steps=16,
               batch_size=32, n_epochs=1, seed=0, device="cpu")
    algo.learn(32)
    obs = venv.reset()
    venv.close()
    assert isinstance(algo.policy.features_extractor, LatentCellCNN)
    path = save_policy(algo, tmp_path / "cells")
    assert json.loads((path / "policy.json").read_text())["policy_kwargs"]["features_extractor_class"] == "LatentCellCNN"
    policy = load_policy(path)
    assert isinstance(policy.policy.features_extractor, LatentCellCNN)
    with torch.no_grad():  # the saved weights and network round-trip exactly
        before = algo.policy.get_distribution(algo.policy.obs_to_tensor(obs)[0]).distribution.mean
        after = policy.policy.get_distribution(policy.policy.obs_to_tensor(obs)[0]).distribution.mean
    assert torch.equal(before, after)


def test_transfer_config_resolves_and_checks_the_latent_extractor(tiny_checkpoint):
    from neuralsim.agents.transfer import TransferConfig, latent_extractor_of, training_key

    assert latent_extractor_of(TransferConfig(obs="latent")) == "pretrained"  # the shipped model has a tracker
    assert latent_extractor_of(TransferConfig(obs="latent", model=str(tiny_checkpoint))) == "cnn"
    assert latent_extractor_of(TransferConfig(obs="latent", latent_extractor="cells")) == "cells"
    with pytest.raises(ValueError, match="--latent-extractor must be one of"):
        TransferConfig(latent_extractor="resnet").validate(cli=True)
    with pytest.raises(ValueError, match="pretrain_frames"):
        TransferConfig(pretrain_frames=0).validate()
    key = training_key("dream", TransferConfig(obs="latent"), 0)
    assert key["latent_extractor"] == "pretrained" and key["pretrain"] == ["real", 20_000, 8]
    with pytest.raises(ValueError, match="--pretrain-on must be 'real' or 'dream'"):
        TransferConfig(pretrain_on="video").validate(cli=True)
    assert "latent_extractor" not in training_key("dream", TransferConfig(), 0)  # rgb: no latent extractor


def test_env_labels_are_the_envs_frames_encoded_and_measured_by_the_tracker():
    pytest.importorskip("mujoco")
    from neuralsim.agents.pretrain import env_target_labels
    from neuralsim.envs.latent import FrameEncoder
    from neuralsim.session import DreamSession

    session = DreamSession("default", dtype="float32")
    latents, visible, column = env_target_labels(session, "NeuralSimRoom-v0", 30, episode_steps=10, seed=2)
    assert latents.shape == (30, *session.latent_shape) and visible.shape == column.shape == (30,)
    assert visible.dtype == torch.bool and bool(torch.isfinite(column).all()) and float(column.abs().max()) <= 1.5
    again = env_target_labels(session, "NeuralSimRoom-v0", 30, episode_steps=10, seed=2)
    assert all(torch.equal(a, b) for a, b in zip((latents, visible, column), again))  # the seed alone decides
    # the first frame: the env's reset frame through the encoder, labelled by the tracker's measurement of it
    env = gym.make("NeuralSimRoom-v0")
    frame, _ = env.reset(seed=2)
    latent = torch.from_numpy(FrameEncoder(session.model, dtype="float32")(frame[None]))
    torch.testing.assert_close(latents[:1], latent, atol=1e-5, rtol=1e-5)  # (one frame or 30 in a batch: rounding)
    tracker = session.model.reward_model.eval()
    with torch.no_grad():
        position, weight = tracker.measure(latents[:1])
    assert bool(visible[0]) == bool((weight > 0.5) & tracker.in_view(position))
    # an env instance is used as given and left open
    same = env_target_labels(session, env, 30, episode_steps=10, seed=2)
    assert torch.equal(same[0], latents)
    env.reset(seed=0)
    env.close()
    with pytest.raises(ValueError, match="walk"):
        env_target_labels(session, "NeuralSimRoom-v0", 30, walk=-0.1)


def test_eval_transfer_obs_latent_teaches_the_extractor_of_a_model_with_a_tracker(tmp_path, capsys):
    """The shipped model has a target tracker: both worlds' agents get LatentCellCNN, taught alike before PPO."""
    pytest.importorskip("mujoco")
    from neuralsim.cli import main

    argv = ["eval", "transfer", "--quick", "--obs", "latent", "--workdir", str(tmp_path / "work"), "--timesteps", "128",
            "--episodes", "1", "--max-episode-steps", "10"]
    assert main(argv) == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert results["config"]["latent_extractor"] == "auto" and results["config"]["pretrain_on"] == "real"
    rows = {r["method"]: r for r in results["rows"]}
    taught = []
    for world, method in (("dream", "PPO in dream"), ("real", "PPO in real")):
        assert rows[method]["pretrain_s"]["mean"] > 0
        config = json.loads((tmp_path / "work" / f"{world}-seed0" / "final" / "policy.json").read_text())
        assert config["policy_kwargs"]["features_extractor_class"] == "LatentCellCNN"
        record = json.loads((tmp_path / "work" / f"{world}-seed0" / "run.json").read_text())
        assert record["key"]["latent_extractor"] == "pretrained" and record["key"]["pretrain"] == ["real", 256, 1]
        taught.append(record["run"]["pretraining"])
    timings = ("label_s", "train_s")
    assert [{k: v for k, v in t.items() if k not in timings} for t in taught][0] == \
        {k: v for k, v in taught[1].items() if k not in timings}  # the same teaching in both worlds
