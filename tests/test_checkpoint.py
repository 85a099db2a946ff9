"""Checkpoints: exact safetensors round trip, mismatch errors, no pickle, name resolution, atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from neuralsim import __version__
from neuralsim.config import WorldModelConfig
from neuralsim.model import WorldModel



@pytest.fixture
def model() -> WorldModel:
    torch.manual_seed(0)
    m = WorldModel(WorldModelConfig.from_preset("tiny", provenance={"steps": 3}))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    m.set_latent_normalization(0.5, 0.1)
    return m.eval()


def _rollout(m: WorldModel) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    frames = np.random.default_rng(0).integers(0, 256, (2, 1, 32, 32, 3), dtype=np.uint8)
    state = m.init_state(2, frames=frames, prompt="a red ball", generator=g)
    latent, _ = m.step(state, np.zeros((2, 4), np.float32), generator=g)
    return latent


def test_round_trip_is_exact(model, tmp_path):
    out = model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]  # no temp files left
    payload = json.loads((out / "config.json").read_text())
    assert payload["_class_name"] == "WorldModel" and payload["_neuralsim_version"] == __version__
    assert payload["latent_scale"] == 0.5 and payload["provenance"] == {"steps": 3}
    loaded = WorldModel.from_pretrained(out)
    assert loaded.config == model.config
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(_rollout(model), _rollout(loaded))
    model.save_pretrained(out)  # overwriting an existing checkpoint works
    assert WorldModel.from_pretrained(str(out / "model.safetensors")).num_parameters() == model.num_parameters()


def test_tensor_config_mismatch_names_the_tensor(model, tmp_path):
    out = model.save_pretrained(tmp_path / "ckpt")
    payload = json.loads((out / "config.json").read_text())
    payload["latent_channels"] = 6
    (out / "config.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=r"autoencoder\.encoder\.conv_out\.weight.*\(8, 16, 1, 1\).*\(6, 16, 1, 1\)"):
        WorldModel.from_pretrained(out)


def test_from_weights_builds_the_same_model_and_names_a_bad_tensor(model):
    """`from_weights` (what `from_pretrained` and the decoding process build with) from a config and a state dict."""
    tensors = model.state_dict()
    built = WorldModel.from_weights(model.config, tensors)
    assert not built.training and built.config == model.config
    assert all(torch.equal(built.state_dict()[k], tensors[k]) for k in tensors)
    assert torch.equal(_rollout(built), _rollout(model))  # RoPE tables rebuilt after the meta construction
    missing = {k: v for k, v in tensors.items() if k != "null_text"}
    with pytest.raises(ValueError, match=r"the weights: no tensor 'null_text' \(expected shape \(\d+,\)\), which the config requires"):
        WorldModel.from_weights(model.config, missing, source="the weights")
    with pytest.raises(ValueError, match=r"the state dict: tensors that the config does not define, first: 'extra'"):
        WorldModel.from_weights(model.config, {**tensors, "extra": torch.zeros(1)})


def test_unknown_config_key_and_wrong_class(model, tmp_path):
    out = model.save_pretrained(tmp_path / "ckpt")
    payload = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**payload, "bogus": 1}))
    with pytest.raises(ValueError, match="bogus"):
        WorldModel.from_pretrained(out)
    (out / "config.json").write_text(json.dumps({**payload, "_class_name": "Other"}))
    with pytest.raises(ValueError, match="Other"):
        WorldModel.from_pretrained(out)


def test_never_unpickles(model, tmp_path):
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ValueError, match="never unpickles"):
        WorldModel.from_pretrained(pt)
    d = tmp_path / "old"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(model.config.to_dict()))
    (d / "model.pt").write_bytes(b"\x80\x04")
    with pytest.raises(ValueError, match="never unpickles"):
        WorldModel.from_pretrained(d)


def test_missing_files_and_names(model, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        WorldModel.from_pretrained("no-such-model")
    with pytest.raises(ValueError, match="sana_wm"):
        WorldModel.from_pretrained("sana-wm-2.6b")
    out = model.save_pretrained(tmp_path / "ckpt")
    (out / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        WorldModel.from_pretrained(out)
    # a shipped name resolves to neuralsim/assets/<name>/
    import neuralsim.checkpoints

    monkeypatch.setattr(neuralsim.checkpoints, "ASSETS_DIR", tmp_path / "assets")
    model.save_pretrained(tmp_path / "assets" / "mini")
    assert WorldModel.from_pretrained("mini").config == model.config


def test_one_owner_writes_and_reads_every_checkpoint_file(model, tmp_path, monkeypatch):
    """Issue 22 #3: ``neuralsim.checkpoints`` owns the files. ``save_pretrained`` and the start set go through its
    one atomic writer (each file fsynced, then renamed into place: ``save_pretrained`` once skipped the fsync), the
    weights carry exactly one metadata key (equal weights, equal bytes), and every reader is its function."""
    from safetensors import safe_open

    from neuralsim import checkpoints, config, rollout, sana_wm, session

    committed = []
    commit = checkpoints.StagedFile.commit
    monkeypatch.setattr(checkpoints.StagedFile, "commit", lambda self: (committed.append(self.path.name), commit(self)))
    out = model.save_pretrained(tmp_path / "ckpt")
    frames = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    checkpoints.write_start_frames(out, frames, ["a", "b"])
    assert committed == [checkpoints.WEIGHTS_NAME, checkpoints.CONFIG_NAME, checkpoints.START_FRAMES_NAME]
    with safe_open(str(out / checkpoints.WEIGHTS_NAME), framework="pt") as f:
        assert f.metadata() == checkpoints.WEIGHTS_METADATA == {"format": "pt"}
    assert checkpoints.read_config(out) == model.config
    got, descriptions = checkpoints.read_start_frames(out)
    assert np.array_equal(got, frames) and descriptions == ["a", "b"]
    assert rollout.load_start_frames is checkpoints.read_start_frames  # the public name, re-exported
    assert session.OFFICIAL_MODEL_NAME is config.OFFICIAL_MODEL_NAME is checkpoints.OFFICIAL_MODEL_NAME is sana_wm.NAME
    with pytest.raises(ValueError, match="one string per frame"):
        checkpoints.write_start_frames(out, frames, ["only one"])
    with pytest.raises(ValueError, match=r"uint8 \[N, H, W, 3\]"):
        checkpoints.write_start_frames(out, frames.astype(np.float32), ["a", "b"])
