"""Files are data (issue 24): a checkpoint, config.json, policy.json or key string never chooses code, and a small
input never buys unbounded work. Each test reproduces one failure of the outside round (numbers in the names)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import listing

EVIL_MODULE = "neuralsim_evil_provenance"


def _copy_with_config(src: Path, dst: Path, **changes) -> Path:
    """A copy of checkpoint ``src`` whose config.json has ``changes`` applied (``None`` removes a field)."""
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            config.pop(k, None)
        else:
            config[k] = v
    (dst / "config.json").write_text(json.dumps(config))
    return dst


@pytest.fixture
def evil_module(tmp_path, monkeypatch):
    """A module on sys.path (as the working directory is under ``python -m``) that leaves a marker when imported."""
    marker = tmp_path / "imported.marker"
    (tmp_path / f"{EVIL_MODULE}.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker
    sys.modules.pop(EVIL_MODULE, None)


@pytest.mark.parametrize("env_id", [f"{EVIL_MODULE}:CartPole-v1", "this:Zen-v0", "NoSuchEnv-v9"])
def test_1_checkpoint_env_id_never_imports_a_module(tiny_checkpoint, tmp_path, evil_module, env_id):
    """#1: `play` made the env of config.json's provenance.env_id; 'module:Id' made gymnasium import `module`."""
    from neuralsim.envs.world_model_env import DreamCore
    from neuralsim.play import RealEnv

    ckpt = _copy_with_config(tiny_checkpoint, tmp_path / "ckpt", provenance={"env_id": env_id, "env_kwargs": {}})
    was_imported = "this" in sys.modules
    real, why = RealEnv.for_model(DreamCore(str(ckpt)))
    assert real is None
    assert ("never chooses a module" in why) if ":" in env_id else ("not a registered Gymnasium id" in why)
    assert not evil_module.exists() and EVIL_MODULE not in sys.modules
    assert ("this" in sys.modules) == was_imported  # `import this` prints the Zen of Python


def test_1_transfer_reads_the_checkpoint_env_as_data(tiny_checkpoint, tmp_path, evil_module):
    """#1: agents.transfer.real_env_spec hands a checkpoint's env id to gym.make too."""
    from neuralsim.agents.transfer import real_env_spec

    ckpt = _copy_with_config(tiny_checkpoint, tmp_path / "ckpt",
                             provenance={"env_id": f"{EVIL_MODULE}:CartPole-v1"})
    with pytest.raises(ValueError, match=r"provenance\.env_id=.*never chooses a module"):
        real_env_spec(str(ckpt))
    assert not evil_module.exists() and EVIL_MODULE not in sys.modules
    good = _copy_with_config(tiny_checkpoint, tmp_path / "good", provenance={"env_id": "CartPole-v1",
                                                                             "env_kwargs": {"render_mode": "rgb_array"}})
    assert real_env_spec(str(good)) == ("CartPole-v1", {"render_mode": "rgb_array"})


def test_7_key_dsl_bomb_in_step_keys(tiny_checkpoint):
    """#7: `env.step_keys("w-100000000")` built one object per frame before stepping; now one clear error."""
    from neuralsim.envs.world_model_env import WorldModelEnv

    env = WorldModelEnv(str(tiny_checkpoint))
    ref = env.reset(seed=0)[0]
    with pytest.raises(ValueError, match=r"more than MAX_ACTION_FRAMES=100000 frames"):
        env.step_keys("w-100000000")
    env.reset(seed=0)
    assert np.array_equal(env.reset(seed=0)[0], ref)
    assert len(env.step_keys("w-4")[-1]) == 4  # still usable
    env.close()


def _poison_decoder(src: Path, dst: Path) -> Path:
    """A copy of checkpoint ``src`` with one NaN in the last decoder weight (written straight into the safetensors)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(str(dst / "model.safetensors"))
    name = [k for k in tensors if k.startswith("autoencoder.decoder") and k.endswith("weight")][-1]
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(dst / "model.safetensors"))
    return dst


def test_10_nan_decoder_weight_is_an_error_not_black_frames(tiny_checkpoint, tmp_path):
    """#10: a NaN decoder weight decoded to all-black frames (clamp hides NaN) and `rollout` exited 0."""
    import torch

    from neuralsim.model import WorldModel

    model = WorldModel.from_pretrained(_poison_decoder(tiny_checkpoint, tmp_path / "nan"))
    C, h, w = model.latent_shape
    with pytest.raises(FloatingPointError, match="non-finite pixels from finite latents"):
        model.decode(torch.zeros(1, 1, C, h, w))
    clean = WorldModel.from_pretrained(tiny_checkpoint)
    with pytest.raises(FloatingPointError, match="non-finite latents"):
        clean.decode(torch.full((1, 1, C, h, w), float("nan")))
    assert clean.decode(torch.zeros(1, 1, C, h, w)).dtype == torch.uint8


def test_10_rollout_of_a_nan_decoder_fails_and_writes_nothing(tiny_checkpoint, tmp_path, capsys):
    from neuralsim.cli import main

    ckpt = _poison_decoder(tiny_checkpoint, tmp_path / "nan")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["rollout", "--model", str(ckpt), "--actions", "w-4", "--out", str(out / "dream.gif")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "rollout: error: --model" in err and "non-finite pixels" in err and "Traceback" not in err
    assert listing(out) == []


@pytest.mark.parametrize("changes, match", [
    ({"depth": 20000}, r"depth=20000 is invalid: expected at most 256"),
    ({"depth": 200}, r"asks for \d+ blocks \(depth=200.*holds only \d+ tensors"),
    ({"denoise_steps": 1e9}, r"denoise_steps=1000000000.0 is invalid: expected an int"),
    ({"denoise_steps": 10**9}, r"denoise_steps=1000000000 is invalid: expected at most 1000"),
    ({"image_size": [2048, 2048]}, r"image_size=.* at most MAX_TOKENS_PER_FRAME=4096"),
    ({"text_layers": 10**6}, r"text_layers=1000000 is invalid: expected at most 64"),
    ({"action_spec": {"type": "discrete", "n": 10**12}}, r"action_spec describes 1000000000000 .*MAX_ACTION_ELEMENTS"),
], ids=["depth-20000", "depth-200", "denoise-1e9", "denoise-int", "image-4M-tokens", "text-layers", "discrete-1e12"])
def test_8_config_bombs_are_refused_before_building(tiny_checkpoint, tmp_path, changes, match):
    """#8: config.json `"depth": 20000` built the module (125 s, 2.7 GB) before the weights were looked at;
    `"denoise_steps": 1e9` allocated 4 GB at the first step, then ran a billion Euler steps."""
    import time
    import tracemalloc

    from neuralsim.model import WorldModel

    ckpt = _copy_with_config(tiny_checkpoint, tmp_path / "ckpt", **changes)
    tracemalloc.start()
    t = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=match) as info:
            WorldModel.from_pretrained(ckpt)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(ckpt / "config.json") in str(info.value)
    assert time.perf_counter() - t < 5.0 and peak < 50 * 2**20


def test_8_denoise_steps_and_rollout_steps_are_bounded(tiny_checkpoint, tmp_path, capsys):
    """#8: the step count a caller asks for is bounded like the one a config asks for."""
    from neuralsim.cli import main
    from neuralsim.envs.world_model_env import WorldModelEnv

    with pytest.raises(ValueError, match=r"denoise_steps must be an int in \[1, 1000\]"):
        WorldModelEnv(str(tiny_checkpoint), denoise_steps=10**9)
    for args, message in ((["--denoise-steps", "1000000000"], "--denoise-steps must be at most 1000"),
                          (["--steps", "1000000000"], "--steps must be at most 100000")):
        with pytest.raises(SystemExit) as exit_info:
            main(["rollout", "--model", str(tiny_checkpoint), *args, "--out", str(tmp_path / "d.gif")])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert listing(tmp_path) == []


def test_11_config_missing_camera_fields_is_refused(tiny_checkpoint, tmp_path):
    """#11: a config.json without the camera fields loaded with the dataclass defaults (0.05 / 1.2 / 45 instead of
    the trained 0.08 / 4.0 / 70) and dreamt different frames."""
    from neuralsim.model import WorldModel

    ckpt = _copy_with_config(tiny_checkpoint, tmp_path / "ckpt", camera_translation_speed=None,
                             camera_rotation_speed_deg=None, camera_fovy_deg=None)
    with pytest.raises(ValueError, match=r"config\.json lacks field\(s\) \['camera_fovy_deg', 'camera_translation_speed', "
                                         r"'camera_rotation_speed_deg'\], which shape what the model does"):
        WorldModel.from_pretrained(ckpt)
    WorldModel.from_pretrained(tiny_checkpoint)  # save_pretrained writes every field
    WorldModel.from_pretrained("default")  # the shipped model too (it predates some newer, optional fields)
