"""Property-based layer over the parsers of untrusted input (issue 24): the key DSL, config.json, policy.json, the
dataset manifest and reset options. Any input gives either a valid result or one clear error (``ValueError`` /
``TypeError``, never an ``IndexError``, ``KeyError``, ``OverflowError``, ``MemoryError`` or a hang), within bounded
time: every example has a deadline, and the example counts keep the whole file to a few seconds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from neuralsim import actions as A  # noqa: E402

CLEAR = (ValueError, TypeError)  # DatasetError, InputError and TrainingError are ValueErrors
FAST = settings(max_examples=200, deadline=500, suppress_health_check=[HealthCheck.function_scoped_fixture])
SLOW = settings(max_examples=40, deadline=3000, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


# ------------------------------------------------------------------------------------------------ key DSL

dsl_alphabet = st.sampled_from(list("wasdijklWJxn-,，0123456789 \t²٣") + ["none", "-1", "-0", "-99999999999"])


@FAST
@given(st.lists(dsl_alphabet, max_size=30).map("".join))
def test_key_dsl_any_string(text):
    try:
        frames = A.parse_action_string(text)
    except CLEAR as exc:
        assert str(exc)  # one message
        return
    assert 1 <= len(frames) <= A.MAX_ACTION_FRAMES and all(f <= A.ALLOWED_KEYS for f in frames)


@FAST
@given(st.lists(st.tuples(st.sets(st.sampled_from("wasdijkl"), max_size=4), st.integers(1, 10**12)), min_size=1,
                max_size=5))
def test_key_dsl_well_formed_strings_parse_or_hit_the_bound(segments):
    text = ",".join(f"{''.join(sorted(keys)) or 'none'}-{n}" for keys, n in segments)
    total = sum(n for _, n in segments)
    if total > A.MAX_ACTION_FRAMES:
        with pytest.raises(ValueError, match="MAX_ACTION_FRAMES"):
            A.parse_action_string(text)
    else:
        assert [set(f) for f in A.parse_action_string(text)] == [set(k) for k, n in segments for _ in range(n)]


# ------------------------------------------------------------------------------------------------ config.json

@pytest.fixture(scope="module")
def tiny_config() -> dict:
    from neuralsim.config import WorldModelConfig

    return WorldModelConfig.from_preset("tiny").to_dict()


@FAST
@given(field=st.sampled_from(sorted(__import__("neuralsim.config", fromlist=["x"]).WorldModelConfig.__dataclass_fields__)),
       value=json_values)
def test_config_any_value_of_any_field(tiny_config, field, value):
    """One field of the tiny preset replaced by any JSON value: a config, or an error naming that field."""
    from neuralsim.config import WorldModelConfig

    try:
        config = WorldModelConfig.from_dict({**tiny_config, field: value})
    except CLEAR as exc:
        assert field in str(exc) or "WorldModelConfig" in str(exc) or "action" in str(exc), str(exc)
        return
    assert config.to_dict()[field] is not None or value is None


@SLOW
@given(changes=st.dictionaries(st.sampled_from(["depth", "width", "num_heads", "text_layers", "denoise_steps",
                                                "image_size", "latent_channels", "ffn_ratio", "camera_fovy_deg"]),
                               json_values, min_size=1, max_size=3))
def test_checkpoint_config_json_loads_or_fails_clearly(tiny_checkpoint, tmp_path_factory, changes):
    from neuralsim.model import WorldModel

    ckpt = tmp_path_factory.mktemp("ckpt") / "c"
    shutil.copytree(tiny_checkpoint, ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**config, **changes}))
    try:
        WorldModel.from_pretrained(ckpt)
    except CLEAR as exc:
        assert "config.json" in str(exc) or "model.safetensors" in str(exc), str(exc)


# ------------------------------------------------------------------------------------------------ policy.json

space_specs = st.fixed_dictionaries({"type": st.sampled_from(["box", "discrete", "tuple", 3])}, optional={
    "shape": st.lists(st.integers(-2, 10**7), max_size=5) | json_values,
    "n": st.integers(-3, 10**13) | json_values, "start": json_values,
    "dtype": st.sampled_from(["float32", "uint8", "object", "complex64", "U4"]) | json_values,
    "low": st.floats() | st.lists(st.floats(), max_size=6) | json_values,
    "high": st.floats() | st.lists(st.floats(), max_size=6) | json_values})


@FAST
@given(space_specs)
def test_space_from_json_any_spec(spec):
    from neuralsim.policy import MAX_SPACE_ELEMENTS, space_from_json

    try:
        space = space_from_json(spec, "observation_space")
    except CLEAR as exc:
        assert "observation_space" in str(exc)
        return
    assert int(np.prod(getattr(space, "shape", ()) or (1,))) <= MAX_SPACE_ELEMENTS


@pytest.fixture(scope="module")
def saved_policy(tmp_path_factory) -> Path:
    import gymnasium as gym
    from stable_baselines3 import PPO

    from neuralsim.policy import save_policy

    algo = PPO("MlpPolicy", gym.make("CartPole-v1"), n_steps=32, batch_size=16, seed=0, policy_kwargs={"net_arch": [8]})
    return save_policy(algo, tmp_path_factory.mktemp("policy") / "p")


@SLOW
@given(observation_space=space_specs | json_values, action_space=space_specs | json_values,
       policy_kwargs=st.dictionaries(st.sampled_from(["net_arch", "activation_fn", "ortho_init", "features_extractor_class",
                                                      "features_extractor_kwargs", "optimizer_class", "x"]),
                                     json_values | st.lists(st.integers(-1, 10**6), max_size=3), max_size=3))
def test_policy_json_loads_or_fails_clearly(saved_policy, tmp_path_factory, observation_space, action_space,
                                            policy_kwargs):
    from neuralsim.policy import load_policy

    path = tmp_path_factory.mktemp("pol") / "p"
    shutil.copytree(saved_policy, path)
    config = json.loads((path / "policy.json").read_text())
    config.update(observation_space=observation_space, action_space=action_space, policy_kwargs=policy_kwargs)
    (path / "policy.json").write_text(json.dumps(config))
    try:
        load_policy(path)
    except CLEAR as exc:
        assert "policy.json" in str(exc) or "model.safetensors" in str(exc), str(exc)


# ------------------------------------------------------------------------------------------------ manifest

@SLOW
@given(changes=st.dictionaries(st.sampled_from(["format", "version", "image_size", "action_spec", "frames_per_step",
                                                "shards", "episodes", "steps", "resize", "poses", "env_kwargs"]),
                                json_values, min_size=1, max_size=3)
               | st.fixed_dictionaries({"shard_entry": st.dictionaries(
                   st.sampled_from(["file", "episodes", "steps", "frames", "sha256", "bytes"]),
                   json_values | st.sampled_from(["../x", "/etc/passwd", "shard-000001.safetensors", "."]),
                   min_size=1, max_size=3)}))
def test_manifest_opens_or_fails_clearly(tmp_path_factory, changes):
    from neuralsim.data import Dataset, DatasetError, ShardWriter

    root = tmp_path_factory.mktemp("ds") / "d"
    spec = A.space_to_spec(__import__("gymnasium").spaces.Discrete(2))
    with ShardWriter(root, {"image_size": [8, 8], "action_spec": spec, "frames_per_step": 1}) as w:
        w.add_episode(np.zeros((3, 8, 8, 3), np.uint8), np.zeros(2, np.int64), np.zeros(2, np.float32),
                      np.zeros(2, bool), np.array([False, True]), "")
    manifest = json.loads((root / "manifest.json").read_text())
    if "shard_entry" in changes:  # the fields of one listed shard (file name, counts, sha256, bytes)
        manifest["shards"][0].update(changes.pop("shard_entry"))
    (root / "manifest.json").write_text(json.dumps({**manifest, **changes}))
    try:
        Dataset(root).verify()
    except DatasetError as exc:
        assert "manifest.json" in str(exc) or "shard" in str(exc), str(exc)


# ------------------------------------------------------------------------------------------------ reset options

@pytest.fixture(scope="module")
def env(tiny_checkpoint):
    from neuralsim.envs.world_model_env import WorldModelEnv

    return WorldModelEnv(str(tiny_checkpoint))


@SLOW
@given(options=st.dictionaries(st.sampled_from(["image", "prompt", "resize", "start_index", "x"]),
                               json_values | st.just(np.zeros((32, 32, 3), np.uint8)), max_size=3))
def test_reset_options_reset_or_fail_clearly(env, options):
    ref = env.reset(seed=0)[0]
    try:
        obs, _ = env.reset(seed=1, options=options)
    except CLEAR as exc:
        assert "options" in str(exc), str(exc)
        assert np.array_equal(env.reset(seed=0)[0], ref)  # still usable
        return
    assert env.observation_space.contains(obs)
