"""A catalogue of bad inputs across the public surface (listed in tests/README.md).

Every case checks the error type and that the message names the argument and the expected form. After
the error the object is still usable and behaves as if the bad call never happened (same observations,
same noise stream), and nothing on disk changed (no temp files, directory listings unchanged).

Surfaces: ``WorldModel.step/encode/init_state``, ``WorldModelEnv`` (step, reset options, reward_fn),
``WorldModelVectorEnv``, prompts, ``WorldModel.from_pretrained`` / ``WorldModelEnv(model=...)``,
``neuralsim.data.Dataset`` / ``neuralsim.train.train``, and ``python -m neuralsim collect|train|rollout``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from copy import deepcopy
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import neuralsim  # noqa: F401  (registers the envs)
from conftest import listing, make_dataset
from neuralsim.actions import space_to_spec
from neuralsim.config import WorldModelConfig
from neuralsim.data import Dataset, DatasetError, ShardWriter
from neuralsim.envs import WorldModelEnv, WorldModelVectorEnv
from neuralsim.model import WorldModel, WorldState
from neuralsim.train import TrainConfig, TrainingError, train

ROOT = Path(__file__).resolve().parent.parent
ONE_THREAD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
N = 3  # vector env size
GOOD = np.full(4, 0.5, np.float32)  # the good action after a bad call


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def model(tiny_checkpoint) -> WorldModel:
    return WorldModel.from_pretrained(tiny_checkpoint)


@pytest.fixture(scope="module")
def env(tiny_checkpoint):
    e = WorldModelEnv(str(tiny_checkpoint), max_episode_steps=None)
    yield e
    e.close()


@pytest.fixture(scope="module")
def venv(tiny_checkpoint):
    e = WorldModelVectorEnv(N, model=str(tiny_checkpoint), max_episode_steps=None)
    yield e
    e.close()


def _leaves(state: WorldState) -> list[torch.Tensor]:
    out = []
    for value in vars(state).values():
        stack = [value]
        while stack:
            v = stack.pop()
            if isinstance(v, torch.Tensor):
                out.append(v.clone())
            elif isinstance(v, dict):
                stack += list(v.values())
            elif isinstance(v, (list, tuple)):
                stack += list(v)
    return out


def _raises(call, error: type[BaseException], match: str) -> BaseException:
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, error)
    assert re.search(match, str(info.value)), f"{str(info.value)!r} does not match {match!r}"
    assert not isinstance(info.value, (RuntimeError, AttributeError, KeyError, IndexError)), type(info.value)
    return info.value


# ------------------------------------------------------------------------------------ WorldModel.step


MODEL_STEP_CASES = [
    # id, actions, step kwargs, error, match (names the argument and the expected form)
    ("A1-shape", np.zeros((2, 3), np.float32), {}, ValueError, r"actions must have shape \(2, 4\) of floats, got shape \(2, 3\)"),
    ("A2-batch", np.zeros((3, 4), np.float32), {}, ValueError, r"actions must have shape \(2, 4\) of floats, got shape \(3, 4\)"),
    ("A3-dtype", np.full((2, 4), "a"), {}, TypeError, r"actions must be a float array, got dtype <U1"),
    ("A4-nan", np.full((2, 4), np.nan, np.float32), {}, ValueError, r"actions contains NaN or inf; expected finite floats"),
    ("A5-inf", np.full((2, 4), -np.inf, np.float32), {}, ValueError, r"actions contains NaN or inf; expected finite floats"),
    ("A6-out-of-space", np.full((2, 4), 1.5, np.float32), {}, ValueError,
     r"actions out of the action space: expected values in \[-1\.0, 1\.0\], got \[1\.5, 1\.5\]"),
    ("A7-state", np.zeros((2, 4), np.float32), {"state": "not a state"}, TypeError,
     r"state must be a WorldState from init_state/step, got str"),
    ("A8-denoise-steps", np.zeros((2, 4), np.float32), {"denoise_steps": 0}, ValueError,
     r"denoise_steps must be an int >= 1, got 0"),
]


@pytest.mark.parametrize("case", MODEL_STEP_CASES, ids=[c[0] for c in MODEL_STEP_CASES])
def test_world_model_step_bad_actions(model, case):
    _, actions, kwargs, error, match = case
    g = torch.Generator().manual_seed(1)
    state = model.init_state(2, frames=np.zeros((2, 1, 32, 32, 3), np.uint8), generator=g)
    before, g_before = _leaves(state), g.get_state()
    kwargs = dict(kwargs)
    bad_state = kwargs.pop("state", state)
    _raises(lambda: model.step(bad_state, actions, generator=g, **kwargs), error, match)
    # Nothing moved: the state, and the noise stream (validation happens before any draw).
    assert all(torch.equal(a, b) for a, b in zip(before, _leaves(state)))
    assert torch.equal(g.get_state(), g_before)
    latent, _ = model.step(state, np.stack([GOOD, -GOOD]), generator=g)
    g_ref = torch.Generator().manual_seed(1)
    ref_state = model.init_state(2, frames=np.zeros((2, 1, 32, 32, 3), np.uint8), generator=g_ref)
    ref, _ = model.step(ref_state, np.stack([GOOD, -GOOD]), generator=g_ref)
    assert torch.equal(latent, ref)


# ------------------------------------------------------------------------------------ images on the model


def _frames(shape, dtype=np.uint8, value=0):
    return np.full(shape, value, dtype)


IMAGE_CASES = [
    # id, method, frames, error, match
    ("I1-size", "encode", _frames((1, 1, 16, 16, 3)), ValueError,
     r"frames must be uint8 \[B, T, 32, 32, 3\] with T = 1 \+ n\*2; got shape \(1, 1, 16, 16, 3\)"),
    ("I2-dtype", "encode", _frames((1, 1, 32, 32, 3), np.float32), TypeError,
     r"frames must be uint8 \[B, T, 32, 32, 3\].*; got dtype float32"),
    ("I3-channels", "encode", _frames((1, 1, 32, 32, 4)), ValueError, r"frames must be uint8 \[B, T, 32, 32, 3\].*got shape \(1, 1, 32, 32, 4\)"),
    ("I4-range", "encode", _frames((1, 1, 32, 32, 3), np.int64, 300), TypeError,
     r"frames must be uint8 \[B, T, 32, 32, 3\].*got dtype int64"),  # values 0..255 are enforced by the dtype
    ("I5-empty", "encode", _frames((0, 1, 32, 32, 3)), ValueError, r"frames must be uint8 \[B, T, 32, 32, 3\].*got shape \(0, 1, 32, 32, 3\)"),
    ("I6-channels-first", "init_state", _frames((1, 1, 3, 32, 32)), ValueError,
     r"frames must be uint8 \[B, T, 32, 32, 3\].*got shape \(1, 1, 3, 32, 32\)"),
    ("I7-clip-length", "init_state", _frames((1, 2, 32, 32, 3)), ValueError, r"with T = 1 \+ n\*2; got shape \(1, 2, 32, 32, 3\)"),
    ("I8-batch", "init_state", _frames((2, 1, 32, 32, 3)), ValueError, r"frames has batch 2 but batch_size=1"),
    ("I9-not-an-array", "init_state", [[0, 1, 2]], TypeError, r"frames must be a numpy array or torch tensor \(uint8 \[B, T, 32, 32, 3\]"),
]


@pytest.mark.parametrize("case", IMAGE_CASES, ids=[c[0] for c in IMAGE_CASES])
def test_world_model_bad_images(model, case):
    _, method, frames, error, match = case
    call = (lambda: model.encode(frames)) if method == "encode" else (lambda: model.init_state(1, frames=frames))
    _raises(call, error, match)
    good = model.encode(np.zeros((1, 1, 32, 32, 3), np.uint8))  # still usable
    assert good.shape == (1, 1, *model.latent_shape) and torch.isfinite(good).all()


# ------------------------------------------------------------------------------------ WorldModelEnv


ENV_STEP_CASES = [
    ("B1-shape", np.zeros(3, np.float32), ValueError, r"action must have shape \(4,\) \(the action space Box\(-1\.0, 1\.0, \(4,\), float32\)\), got shape \(3,\)"),
    ("B2-batched", np.zeros((1, 4), np.float32), ValueError, r"action must have shape \(4,\).*got shape \(1, 4\)"),
    ("B3-nan", np.array([0, np.nan, 0, 0], np.float32), ValueError, r"action contains NaN or inf; expected finite floats in \[low, high\]"),
    ("B4-inf", np.array([0, 0, np.inf, 0], np.float32), ValueError, r"action contains NaN or inf; expected finite floats"),
    ("B5-out-of-space", np.full(4, -1.01, np.float32), ValueError, r"action out of the action space: expected values in \[-1\.0, 1\.0\]"),
    ("B6-dtype", np.array(["a", "b", "c", "d"]), TypeError, r"action must be numeric \(the action space Box"),
    ("B7-key-string", "w-8", TypeError, r"action must be an element of the action space Box.*got a str.*step_keys"),
    ("B8-none", None, TypeError, r"action must be an element of the action space Box.*got None"),
]


def _env_reference(env) -> tuple[np.ndarray, float]:
    env.reset(seed=5)
    env.step(np.zeros(4, np.float32))
    obs, reward, *_ = env.step(GOOD)
    return obs, reward


@pytest.mark.parametrize("case", ENV_STEP_CASES, ids=[c[0] for c in ENV_STEP_CASES])
def test_env_step_bad_actions(env, case):
    _, action, error, match = case
    ref_obs, ref_reward = _env_reference(env)
    env.reset(seed=5)
    env.step(np.zeros(4, np.float32))
    _raises(lambda: env.step(action), error, match)
    obs, reward, *_, info = env.step(GOOD)
    assert np.array_equal(obs, ref_obs) and reward == ref_reward and info["step"] == 2


ENV_RESET_CASES = [
    ("I10-env-size", {"image": _frames((16, 16, 3))}, ValueError,
     r"options\['image'\] has size \(16, 16\) but the model expects \(32, 32\) \(H, W\); pass options=\{'resize': True\}"),
    ("I11-env-dtype-float01", {"image": _frames((32, 32, 3), np.float32, 0.5)}, TypeError,
     r"options\['image'\] must have dtype uint8 \(values 0\.\.255\), got float32; .*x \* 255"),
    ("I12-env-channels", {"image": _frames((32, 32, 1))}, ValueError, r"options\['image'\] must have 3 channels \(RGB, channels last: \(H, W, 3\)\)"),
    ("I13-env-empty", {"image": _frames((0, 32, 3))}, ValueError, r"options\['image'\] is empty: shape \(0, 32, 3\)"),
    ("I14-env-ndim", {"image": _frames((32, 32))}, ValueError, r"options\['image'\] must be a uint8 numpy array of shape \(H, W, 3\) = \(32, 32, 3\)"),
    ("P5-env-prompt-100kB", {"prompt": "x" * 100_000}, ValueError,
     r"options\['prompt'\] is 100000 bytes of UTF-8; the limit is MAX_PROMPT_BYTES=4096"),
    ("P6-env-prompt-bytes", {"prompt": b"\xff\xfe caf\xe9"}, TypeError, r"options\['prompt'\] must be a str, got bytes"),
    ("P7-env-prompt-empty", {"prompt": " \t\n"}, ValueError, r"options\['prompt'\] is empty or blank; expected a non-empty description"),
]


@pytest.mark.parametrize("case", ENV_RESET_CASES, ids=[c[0] for c in ENV_RESET_CASES])
def test_env_reset_bad_options(env, case):
    _, options, error, match = case
    ref_obs, ref_reward = _env_reference(env)
    env.reset(seed=5)
    env.step(np.zeros(4, np.float32))
    _raises(lambda: env.reset(options=options), error, match)
    obs, reward, *_, info = env.step(GOOD)  # the running episode is untouched
    assert np.array_equal(obs, ref_obs) and reward == ref_reward and info["step"] == 2
    assert np.array_equal(_env_reference(env)[0], ref_obs)  # and a seeded reset is as fresh as ever


@pytest.mark.parametrize("options", [{"image": _frames((16, 16, 3))}, {"prompt": ""}, {"bogus": 1}, "not a dict"],
                         ids=["image", "prompt", "unknown-key", "not-a-dict"])
@pytest.mark.parametrize("vector", [False, True], ids=["env", "vector"])
def test_rejected_seeded_reset_does_not_reseed(env, venv, vector, options):
    """reset(seed=S, options=bad) raises before reseeding: the next unseeded reset() continues the old stream."""
    e = venv if vector else env

    def unseeded_after(bad: bool) -> tuple[np.ndarray, dict]:
        e.reset(seed=5)
        if bad:
            with pytest.raises((TypeError, ValueError), match="options"):
                e.reset(seed=11, options=options)
        obs, _ = e.reset()
        return obs, deepcopy(e.np_random.bit_generator.state)

    ref_obs, ref_rng = unseeded_after(bad=False)
    obs, rng = unseeded_after(bad=True)
    assert rng == ref_rng and np.array_equal(obs, ref_obs)


def test_env_reward_fn_errors_leave_the_episode_intact(tiny_checkpoint, env):
    """R1/R2: a reward_fn that raises (R1) or returns a non-number (R2) commits nothing."""
    ref_obs, ref_reward = _env_reference(env)
    calls = {"n": 0, "mode": None}

    def reward_fn(obs, action, next_obs, info):
        calls["n"] += 1
        if calls["mode"] == "raise":
            raise RuntimeError("user bug")
        if calls["mode"] == "str":
            return "high"
        return info["predicted_reward"]

    user = WorldModelEnv(str(tiny_checkpoint), reward_fn=reward_fn, max_episode_steps=None)
    for mode, error, match in (("raise", RuntimeError, "user bug"),
                               ("str", TypeError, r"reward_fn must return a float, got str")):
        user.reset(seed=5)
        user.step(np.zeros(4, np.float32))
        calls["mode"] = mode
        with pytest.raises(error, match=match):
            user.step(GOOD)
        calls["mode"] = None
        obs, reward, *_, info = user.step(GOOD)
        assert np.array_equal(obs, ref_obs) and reward == ref_reward and info["step"] == 2


# ------------------------------------------------------------------------------------ WorldModelVectorEnv


VECTOR_CASES = [
    ("C1-batch", "step", np.zeros((N - 1, 4), np.float32), ValueError, r"actions must have shape \(3, 4\) of floats, got shape \(2, 4\)"),
    ("C2-single-action", "step", np.zeros(4, np.float32), ValueError, r"actions must have shape \(3, 4\) of floats, got shape \(4,\)"),
    ("C3-nan", "step", np.full((N, 4), np.nan, np.float32), ValueError, r"actions contains NaN or inf; expected finite floats"),
    ("C4-out-of-space", "step", np.full((N, 4), 3.0, np.float32), ValueError,
     r"actions out of the action space: expected values in \[-1\.0, 1\.0\], got \[3\.0, 3\.0\]"),
    ("C5-dtype", "step", np.full((N, 4), "x"), TypeError, r"actions must be numeric \(the action space Box"),
    ("I15-vector-image-count", "reset", {"image": _frames((2, 32, 32, 3))}, ValueError,
     r"options\['image'\] must be \(H, W, 3\) for every env being reset, or one per env: \(3, H, W, 3\)"),
    ("P8-vector-prompt-count", "reset", {"prompt": ["a", "b"]}, ValueError,
     r"options\['prompt'\] has 2 prompts but the batch has 3 rows; expected one str for all rows or one per row"),
]


def _vector_reference(venv) -> np.ndarray:
    venv.reset(seed=7)
    venv.step(np.zeros((N, 4), np.float32))
    return venv.step(np.tile(GOOD, (N, 1)))[0]


@pytest.mark.parametrize("case", VECTOR_CASES, ids=[c[0] for c in VECTOR_CASES])
def test_vector_env_bad_inputs(venv, case):
    _, method, value, error, match = case
    ref = _vector_reference(venv)
    venv.reset(seed=7)
    venv.step(np.zeros((N, 4), np.float32))
    call = (lambda: venv.step(value)) if method == "step" else (lambda: venv.reset(options=value))
    _raises(call, error, match)
    obs, *_, info = venv.step(np.tile(GOOD, (N, 1)))
    assert np.array_equal(obs, ref) and info["step"].tolist() == [2] * N


# ------------------------------------------------------------------------------------ prompts


PROMPT_CASES = [
    ("P1-empty", "", ValueError, r"prompt is empty or blank; expected a non-empty description \(or None for no prompt\)"),
    ("P2-100kB", "a red ball " * 9_091, ValueError, r"prompt is 100001 bytes of UTF-8; the limit is MAX_PROMPT_BYTES=4096"),
    ("P3-non-utf8-bytes", b"\xff\xfe red ball", TypeError, r"prompt must be a str, got bytes; decode it first"),
    ("P4-lone-surrogate", b"caf\xe9 ball".decode("utf-8", errors="surrogateescape"), ValueError,
     r"prompt is not valid UTF-8 text: '\\udce9' at index 3 is a lone surrogate; decode the bytes with errors='replace'"),
    ("P9-not-a-str", 42, TypeError, r"prompt must be a str or a list of str, got int"),
]


@pytest.mark.parametrize("case", PROMPT_CASES, ids=[c[0] for c in PROMPT_CASES])
def test_bad_prompts(model, case):
    _, prompt, error, match = case
    _raises(lambda: model.init_state(1, prompt=prompt, denoise_steps=1), error, match)
    state = model.init_state(1, prompt="a red ball", denoise_steps=1, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(state.latent).all()


def test_control_characters_in_prompts_become_spaces(model):
    """P10 (documented behaviour, not an error): Unicode control characters (NUL, ESC, newlines, tabs) are
    replaced by spaces, so the prompt means the same as its printable text; over-long prompts in tokens
    (but under MAX_PROMPT_BYTES) are truncated to text_max_tokens."""
    noisy = model.init_state(1, prompt="a\x00red\x1b[31m\nball\tnear\rthe wall", denoise_steps=1,
                             generator=torch.Generator().manual_seed(0))
    clean = model.init_state(1, prompt="a red [31m ball near the wall", denoise_steps=1,
                             generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy.text_tokens, clean.text_tokens) and torch.equal(noisy.latent, clean.latent)
    long = model.init_state(1, prompt="ball " * 800, denoise_steps=1)  # 4000 bytes: accepted, truncated in tokens
    assert long.text_mask.sum() == model.config.text_max_tokens


# ------------------------------------------------------------------------------------ checkpoints


def _rewrite_header(file: Path, change) -> None:
    """Rewrite the JSON header of a safetensors file with ``change(header)``; tensor bytes stay as they are."""
    data = file.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    change(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    file.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])


def _first_2d(header: dict) -> str:
    return next(k for k, v in header.items() if k != "__metadata__" and len(v["shape"]) == 2 and v["shape"][0] != v["shape"][1])


def _break(path: Path, how: str) -> Path:
    weights, config = path / "model.safetensors", path / "config.json"
    if how == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "header-inconsistent":  # the header claims more bytes than the file holds
        _rewrite_header(weights, lambda h: h[_first_2d(h)].__setitem__("shape", [s * 2 for s in h[_first_2d(h)]["shape"]]))
    elif how == "header-transposed":  # self-consistent file, but the shape is not what the config builds
        _rewrite_header(weights, lambda h: h[_first_2d(h)].__setitem__("shape", h[_first_2d(h)]["shape"][::-1]))
    elif how == "config-mismatch":
        cfg = json.loads(config.read_text())
        cfg["width"] *= 2
        config.write_text(json.dumps(cfg))
    elif how == "config-json":
        config.write_text('{"width": 32,')
    elif how == "config-field":
        config.write_text(json.dumps({**json.loads(config.read_text()), "widht": 64}))
    elif how == "no-weights":
        weights.unlink()
    elif how == "pickle-only":
        weights.unlink()
        (path / "pytorch_model.bin").write_bytes(b"\x80\x02}q\x00.")
    else:
        raise AssertionError(how)
    return path


CHECKPOINT_CASES = [
    ("K1-missing-dir", "missing", FileNotFoundError, r"{arg}='[^']*nope': no checkpoint directory and no shipped model of that name"),
    ("K2-no-weights", "no-weights", FileNotFoundError, r"{arg}='[^']*': .* has no model\.safetensors; expected config\.json \+ model\.safetensors"),
    ("K3-truncated", "truncated", ValueError, r"model\.safetensors is not a valid safetensors file \(.*\); it may be torn"),
    ("K4-header-inconsistent", "header-inconsistent", ValueError, r"model\.safetensors is not a valid safetensors file"),
    ("K5-header-transposed", "header-transposed", ValueError, r"model\.safetensors: tensor '[\w.]+' has shape \(\d+, \d+\), but config\.json implies"),
    ("K6-config-tensor-mismatch", "config-mismatch", ValueError, r"model\.safetensors: tensor '[\w.]+' has shape .*, but config\.json implies"),
    ("K7-config-invalid-json", "config-json", ValueError, r"config\.json is not valid JSON \(.*\); expected the config\.json written by save_pretrained"),
    ("K8-config-unknown-field", "config-field", ValueError, r"config\.json: unknown WorldModelConfig field\(s\) \['widht'\]; known fields"),
    ("K9-pickle-only-dir", "pickle-only", ValueError, r"{arg}='[^']*': .* has \['pytorch_model\.bin'\] but no model\.safetensors; neuralsim never unpickles"),
]


@pytest.mark.parametrize("surface", ["from_pretrained", "env"])
@pytest.mark.parametrize("case", CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_bad_checkpoints(tiny_checkpoint, tmp_path, case, surface):
    _, how, error, match = case
    if how == "missing":
        path = tmp_path / "nope"
    else:
        path = _break(Path(shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")), how)
    before = listing(tmp_path)
    arg = "path_or_name" if surface == "from_pretrained" else "model"
    call = (lambda: WorldModel.from_pretrained(path)) if surface == "from_pretrained" else (lambda: WorldModelEnv(str(path)))
    _raises(call, error, match.format(arg=arg))
    assert listing(tmp_path) == before  # loading never writes
    assert WorldModel.from_pretrained(tiny_checkpoint).config.image_size == (32, 32)  # the good one still loads


# A protocol-0 pickle that creates a file when unpickled: if anything ever unpickles it, the marker appears.
def _booby_trapped_pickle(marker: Path) -> bytes:
    return f"cbuiltins\nopen\n(V{marker}\nVw\ntR.".encode()


@pytest.mark.parametrize("suffix", [".pt", ".pkl", ".bin", ".ckpt"])
def test_pickle_files_are_refused_unread(tmp_path, suffix):
    """K10: a pickle offered instead of a checkpoint dir is refused by name, never opened."""
    marker = tmp_path / "UNPICKLED"
    file = tmp_path / f"weights{suffix}"
    file.write_bytes(_booby_trapped_pickle(marker))
    _raises(lambda: WorldModel.from_pretrained(file), ValueError,
            rf"path_or_name='[^']*weights\{suffix}' is a pickle-format file; neuralsim never unpickles files.*"
            r"Expected a checkpoint directory with config\.json \+ model\.safetensors")
    _raises(lambda: WorldModelEnv(str(file)), ValueError, rf"model='[^']*weights\{suffix}' is a pickle-format file")
    assert not marker.exists()


def test_unknown_preset():
    """K11: an unknown preset name lists the available ones (config, and the env's random-weights mode)."""
    _raises(lambda: WorldModelConfig.from_preset("huge"), ValueError, r"unknown preset 'huge'; available: \['default', .*'tiny'\]")
    _raises(lambda: WorldModelEnv("huge", random_weights=True), ValueError,
            r"model='huge' with random_weights=True must be a preset name, one of \[.*'tiny'\]")
    _raises(lambda: WorldModelEnv("huge"), ValueError, r"model='huge' is neither a checkpoint directory nor a known model name; known models")


# ------------------------------------------------------------------------------------ datasets


def _discrete_dataset(path: Path) -> Path:
    spec = space_to_spec(gym.spaces.Discrete(3))
    rng = np.random.default_rng(0)
    with ShardWriter(path, {"env_id": "synthetic", "image_size": [32, 32], "action_spec": spec, "frames_per_step": 1}) as w:
        for _ in range(2):
            truncated = np.zeros(8, bool)
            truncated[-1] = True
            w.add_episode(rng.integers(0, 256, (9, 32, 32, 3), dtype=np.uint8), rng.integers(0, 3, 8),
                          np.zeros(8, np.float32), np.zeros(8, bool), truncated, "noise")
    return path


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("datasets")
    good = make_dataset(root / "good")
    out = {"good": good}
    out["torn"] = Path(shutil.copytree(good, root / "torn"))
    shard = out["torn"] / "shard-000001.safetensors"
    shard.write_bytes(shard.read_bytes()[:200])
    out["missing-shard"] = Path(shutil.copytree(good, root / "missing"))
    (out["missing-shard"] / "shard-000000.safetensors").unlink()
    out["image-size"] = make_dataset(root / "size", size=24)  # shards of 24x24 frames, manifest says 32x32
    manifest = json.loads((out["image-size"] / "manifest.json").read_text())
    manifest["image_size"] = [32, 32]
    (out["image-size"] / "manifest.json").write_text(json.dumps(manifest))
    out["discrete"] = _discrete_dataset(root / "discrete")
    return out


DATASET_CASES = [
    ("D1-torn-shard", "torn", DatasetError, r"shard \S*shard-000001\.safetensors is torn or corrupted: 200 bytes, the manifest says \d+"),
    ("D2-missing-shard", "missing-shard", DatasetError, r"shard \S*shard-000000\.safetensors listed in \S*manifest\.json is missing"),
    ("D3-image-size", "image-size", DatasetError,
     r"shard \S*shard-000000\.safetensors: 'frames' has shape \(\d+, 24, 24, 3\), but \S*manifest\.json implies \(\d+, 32, 32, 3\)"),
]


@pytest.mark.parametrize("case", DATASET_CASES, ids=[c[0] for c in DATASET_CASES])
def test_dataset_bad_files(datasets, case):
    _, name, error, match = case
    before = listing(datasets[name])
    _raises(lambda: Dataset(datasets[name]), error, match)
    assert listing(datasets[name]) == before


def test_dataset_action_space_mismatch(datasets):
    """D4: validate_for names both action spaces."""
    ds = Dataset(datasets["discrete"])
    box = space_to_spec(gym.spaces.Box(-1, 1, (4,), np.float32))
    _raises(lambda: ds.validate_for(32, box), DatasetError,
            r"dataset \S+ has action_spec \{'type': 'discrete', 'n': 3, 'start': 0\}, the model expects \{'type': 'box'")
    _raises(lambda: ds.validate_for(64, ds.action_spec), DatasetError, r"has image_size \[32, 32\], the model expects \[64, 64\]")


TRAIN_CASES = [
    ("D5-train-torn-shard", "torn", {}, r"--data '\S+torn': shard \S*shard-000001\.safetensors is torn or corrupted"),
    ("D6-train-missing-shard", "missing-shard", {}, r"--data '\S+missing': shard \S*shard-000000\.safetensors listed in .* is missing"),
    ("D7-train-image-size", "image-size", {}, r"--data '\S+size': shard \S+: 'frames' has shape \(\d+, 24, 24, 3\), but"),
    ("D8-train-action-space", "discrete", {"stage": "dynamics", "init": "CKPT"},
     r"--init '\S+' does not fit --data '\S+discrete': dataset \S+ has action_spec \{'type': 'discrete'.*the model expects \{'type': 'box'"),
    ("D9-train-window", "good", {"window": 50}, r"--window 50 is longer than every episode of --data '\S+good' \(the longest has 12 steps\); "
                                                r"expected --window <= 12"),
    ("D10-train-init-pickle", "good", {"stage": "dynamics", "init": "PICKLE"}, r"--init='\S+\.pt' is a pickle-format file"),
]


@pytest.mark.parametrize("case", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_train_bad_datasets(datasets, tiny_checkpoint, tmp_path, case):
    _, name, change, match = case
    if change.get("init") == "CKPT":
        change = {**change, "init": str(tiny_checkpoint)}
    elif change.get("init") == "PICKLE":
        (tmp_path / "w.pt").write_bytes(_booby_trapped_pickle(tmp_path / "UNPICKLED"))
        change = {**change, "init": str(tmp_path / "w.pt")}
    before = listing(tmp_path)
    cfg = TrainConfig(**{**dict(stage="all", data=str(datasets[name]), out=str(tmp_path / "run"), preset="tiny", steps=2,
                                batch_size=2, window=2, checkpoint_every=2, sample_every=0, progress=False), **change})
    _raises(lambda: train(cfg), TrainingError, match)
    assert listing(tmp_path) == before  # refused before any work: no --out, no checkpoint, no temp file


# ------------------------------------------------------------------------------------ CLI (subprocesses)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neuralsim", *args], capture_output=True, text=True, timeout=180,
                          env=ONE_THREAD_ENV, cwd=str(ROOT))


CLI_CASES = [
    # id, argv (placeholders: {tmp} the test dir, {file} a regular file, {ckpt} the tiny checkpoint,
    # {torn} a torn copy of it, {data} a good dataset, {torndata} a torn one), option named, message
    ("X1-collect-negative-episodes", ["collect", "--env", "CartPole-v1", "--episodes", "-3", "--out", "{tmp}/d"], "--episodes",
     r"--episodes must be a positive integer, got -3"),
    ("X2-collect-unwritable-out", ["collect", "--env", "CartPole-v1", "--episodes", "1", "--out", "{file}/d"], "--out",
     r"--out '\S+/d' cannot be created: '\S+' is not a directory"),
    ("X3-train-negative-steps", ["train", "all", "--data", "{data}", "--out", "{tmp}/run", "--steps", "-1"], "--steps",
     r"--steps must be an integer in \[1, 10000000\], got -1"),
    ("X4-train-missing-data", ["train", "all", "--data", "{tmp}/nothing", "--out", "{tmp}/run"], "--data",
     r"--data '\S+nothing' is not a dataset: no manifest\.json"),
    ("X5-train-torn-data", ["train", "all", "--data", "{torndata}", "--out", "{tmp}/run"], "--data",
     r"--data '\S+': shard \S+ is torn or corrupted"),
    ("X6-train-unwritable-out", ["train", "all", "--data", "{data}", "--out", "{file}/run", "--preset", "tiny"], "--out",
     r"--out '\S+/run' cannot be created: '\S+' is not a directory; expected a writable directory"),
    ("X7-train-pickle-init", ["train", "dynamics", "--data", "{data}", "--out", "{tmp}/run", "--init", "{tmp}/w.pt"], "--init",
     r"--init='\S+w\.pt' is a pickle-format file; neuralsim never unpickles"),
    ("X8-rollout-negative-steps", ["rollout", "--model", "{ckpt}", "--out", "{tmp}/a.gif", "--steps", "-2"], "--steps",
     r"--steps must be a positive integer, got -2"),
    ("X9-rollout-torn-model", ["rollout", "--model", "{torn}", "--out", "{tmp}/dream"], "--model",
     r"--model '\S+': \S+model\.safetensors is not a valid safetensors file"),
    ("X10-rollout-unwritable-out", ["rollout", "--model", "{ckpt}", "--out", "{file}/a.gif", "--steps", "1"], "--out",
     r"--out '\S+/file' exists and is not a directory; expected a directory path"),
    ("X11-rollout-missing-image", ["rollout", "--model", "{ckpt}", "--image", "{tmp}/none.png", "--out", "{tmp}/dream"], "--image",
     r"--image '\S+none\.png' could not be read as an image"),
    # issue 24's weak answers: each was a traceback, most left a half-made --out
    ("X12-train-unknown-preset", ["train", "all", "--data", "{data}", "--out", "{tmp}/run/deep", "--preset", "huge"], "--preset",
     r"--preset 'huge': unknown preset 'huge'; available: \['default', 'paper-2\.6b', 'tiny'\]"),
    ("X13-train-misspelled-set", ["train", "all", "--data", "{data}", "--out", "{tmp}/run", "--preset", "tiny", "--set", "widht=64"],
     "--set", r"--set widht=64: unknown WorldModelConfig field\(s\) \['widht'\]; known fields"),
    ("X14-train-negative-seed", ["train", "all", "--data", "{data}", "--out", "{tmp}/run", "--preset", "tiny", "--seed", "-1"],
     "--seed", r"--seed must be an integer in \[0, 4294967295\], got -1"),
    ("X15-rollout-negative-seed", ["rollout", "--model", "{ckpt}", "--out", "{tmp}/dream", "--steps", "1", "--seed", "-1"],
     "--seed", r"--seed must be an integer in \[0, 4294967295\], got -1"),
    ("X16-train-oversized-batch", ["train", "all", "--data", "{data}", "--out", "{tmp}/run", "--preset", "tiny",
                                   "--batch-size", "9000000"], "--batch-size",
     r"--batch-size 9000000 is too large: one batch of \d+ frames of 32x32 needs [\d.]+ GiB as float32 pixels alone, more "
     r"than half of this machine's [\d.]+ GiB; expected --batch-size <= \d+"),
    ("X17-train-mismatched-init", ["train", "dynamics", "--data", "{data}", "--out", "{tmp}/run", "--init", "{badinit}"], "--init",
     r"--init '\S+badinit': \S+model\.safetensors: tensor '\S+' has shape \(\d+, \d+\), but config\.json implies"),
    ("X18-collect-env-kwargs-rejected", ["collect", "--env", "CartPole-v1", "--episodes", "1", "--out", "{tmp}/d",
                                         "--env-kwargs", '{{"bogus": 1}}'], "--env-kwargs",
     r"gym\.make\('CartPole-v1', \*\*--env-kwargs\) failed: .*unexpected keyword argument 'bogus'"),
    ("X19-info-unknown-preset", ["info", "--preset", "huge"], "--preset", r"--preset 'huge': unknown preset 'huge'; available"),
]


FAST_CLI = ("X1", "X5", "X9", "X11", "X12", "X16")  # one subprocess costs ~2-4 s here (importing torch): the rest run with -m slow


@pytest.mark.parametrize("case", [c if c[0].split("-")[0] in FAST_CLI else pytest.param(c, marks=pytest.mark.slow)
                                  for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_bad_arguments(datasets, tiny_checkpoint, tmp_path, case):
    _, argv, option, match = case
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    (tmp_path / "w.pt").write_bytes(_booby_trapped_pickle(tmp_path / "UNPICKLED"))
    torn = _break(Path(shutil.copytree(tiny_checkpoint, tmp_path / "torn")), "truncated")
    badinit = Path(shutil.copytree(tiny_checkpoint, tmp_path / "badinit"))  # config.json width doubled: weights mismatch
    config = json.loads((badinit / "config.json").read_text())
    (badinit / "config.json").write_text(json.dumps({**config, "width": 2 * config["width"]}))
    names = {"tmp": tmp_path, "file": blocker, "ckpt": tiny_checkpoint, "torn": torn, "data": datasets["good"],
             "torndata": datasets["torn"], "badinit": badinit}
    before = listing(tmp_path)
    proc = _cli(*(a.format(**names) for a in argv))
    command = argv[0]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert f"neuralsim {command}: error: " in proc.stderr and option in proc.stderr, proc.stderr
    assert re.search(match, proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr
    assert listing(tmp_path) == before  # nothing created, nothing half-written
    assert not (tmp_path / "UNPICKLED").exists()


def test_cli_rollout_still_works_after_the_checks(tiny_checkpoint, tmp_path, capsys):
    """Control for the CLI cases: the same command with good arguments writes its output (in-process, fast)."""
    from neuralsim.cli import main

    assert main(["rollout", "--model", str(tiny_checkpoint), "--out", str(tmp_path / "a.gif"), "--steps", "2",
                 "--denoise-steps", "1"]) == 0
    assert (tmp_path / "a.gif").stat().st_size > 0 and not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 2


@pytest.mark.parametrize("out", ["dream", "a.gif"])
def test_cli_full_disk_is_one_error_line(tiny_checkpoint, tmp_path, capsys, monkeypatch, out):
    """X20: a full disk (ENOSPC while writing) was a traceback; now one line naming the file, nothing half-made."""
    import errno

    from neuralsim.cli import main

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what fsync/write say on a full disk: no file name

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(SystemExit) as exit_info:
        main(["rollout", "--model", str(tiny_checkpoint), "--out", str(tmp_path / out), "--steps", "2", "--denoise-steps", "1"])
    err = capsys.readouterr().err
    written = "manifest.json" if out == "dream" else "a.gif"
    assert exit_info.value.code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert re.search(rf"neuralsim rollout: error: no space left on the device while writing '\S+/{re.escape(written)}' "
                     r"\(No space left on device\); free some space or write elsewhere", err), err
    assert listing(tmp_path) == []  # no temp file, no empty --out, no lock file


# ------------------------------------------------------------------------------------ the catalogue is documented


def test_readme_lists_every_case():
    readme = (ROOT / "tests" / "README.md").read_text()
    ids = [c[0] for group in (MODEL_STEP_CASES, IMAGE_CASES, ENV_STEP_CASES, ENV_RESET_CASES, VECTOR_CASES, PROMPT_CASES,
                              CHECKPOINT_CASES, DATASET_CASES, TRAIN_CASES, CLI_CASES) for c in group]
    ids += ["R1", "R2", "P10", "K10", "K11", "D4", "X20"]
    assert len(ids) == len(set(ids)) >= 30
    missing = [i for i in ids if f"| {i.split('-')[0]} |" not in readme]
    assert not missing, f"tests/README.md lacks catalogue rows for {missing}"
