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
