"""RLlib on the dream: one PPO training iteration on SanaWM-v0 through register_rllib_env() ([rllib] extra)."""

from __future__ import annotations

import math
import os
import shutil
import tempfile

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.rllib]


def test_register_rllib_env_without_ray_says_how_to_install(monkeypatch):
    import builtins

    from neuralsim.agents import rllib

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ImportError, match=r'pip install "neuralsim\[rllib\]"'):
        rllib.register_rllib_env()


def test_rllib_ppo_trains_one_iteration_in_the_dream():
    ray = pytest.importorskip("ray", reason="needs the [rllib] extra (ray[rllib])")
    pytest.importorskip("ray.rllib")
    from ray.rllib.algorithms.ppo import PPOConfig

    from neuralsim.agents.rllib import register_rllib_env

    name = register_rllib_env()
    assert name == "SanaWM-v0"
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp" if os.path.isdir("/tmp") else None)  # AF_UNIX paths <= 107 bytes
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False, _temp_dir=temp)
    try:
        config = (
            PPOConfig()
            .environment(name, env_config={"model": "default", "max_episode_steps": 16})
            .env_runners(num_env_runners=0, rollout_fragment_length=32)
            .learners(num_learners=0)
            .training(train_batch_size=32, minibatch_size=16, num_epochs=1)
            .debugging(seed=0)
        )
        algo = config.build_algo() if hasattr(config, "build_algo") else config.build()
        result = algo.train()
        algo.stop()
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    steps = result.get("num_env_steps_sampled_lifetime") or result.get("env_runners", {}).get("num_env_steps_sampled_lifetime")
    assert steps and steps >= 32, sorted(result)
    losses = result.get("learners", {}).get("default_policy", {})
    assert losses and all(math.isfinite(float(v)) for k, v in losses.items() if "loss" in k and isinstance(v, (int, float))), losses
