"""`--resume` means what it says (issue 24 #2-#5): a resumed run reaches the uninterrupted run's weights at every
kill point, never overwrites the exported EMA model, refuses options that differ from the run it continues, and
deletes only the temporaries neuralsim itself made."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import listing, make_dataset, model_weights, train_config
from neuralsim.train import StopTraining, TrainingError, train


@pytest.fixture(scope="module")
def straight(dataset, tmp_path_factory) -> Path:
    """An uninterrupted `train all` run (autoencoder 4 steps, dynamics 4 steps)."""
    return train(train_config(dataset, tmp_path_factory.mktemp("straight") / "run"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = model_weights(a), model_weights(b)
    assert wa.keys() == wb.keys()
    changed = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not changed, f"{len(changed)} of {len(wa)} tensors differ, first {changed[0]}"


def test_2_killed_between_the_stages_resumes_to_the_same_weights(dataset, straight, tmp_path, monkeypatch):
    """#2: killed after the autoencoder's last checkpoint, before the first dynamics checkpoint: the resumed run
    skipped the finished stage without taking its EMA weights, so the latent scale (and every weight after) differed."""
    import neuralsim.train as T

    def killed(*args, **kwargs):  # the first thing the dynamics stage does, before any dynamics checkpoint
        raise KeyboardInterrupt("killed")

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(T, "latent_statistics", killed)
        with pytest.raises(KeyboardInterrupt):
            train(train_config(dataset, out))
    assert json.loads((out / "checkpoints" / "latest.json").read_text()) == {
        "stage": "autoencoder", "step": 4, "path": "autoencoder-0000004"}
    resumed = train(train_config(dataset, out, resume=True))
    scale = json.loads((straight / "config.json").read_text())["latent_scale"]
    assert json.loads((resumed / "config.json").read_text())["latent_scale"] == scale
    assert_same_weights(straight, resumed)


def test_3_resume_of_a_finished_run_keeps_the_exported_ema_model(dataset, straight, tmp_path):
    """#3: `train ... --resume` on a finished run overwrote the exported EMA model with raw weights."""
    out = tmp_path / "run"
    shutil.copytree(straight, out)
    train(train_config(dataset, out, resume=True))
    assert_same_weights(straight, out)


@pytest.mark.parametrize("change, flag", [
    ({"preset": "default"}, "--preset 'default' (the run has 'tiny')"),
    ({"config_overrides": {"width": 64}}, "--set {'width': 64} (the run has {})"),
    ({"seed": 4}, "--seed 4 (the run has 3)"),
    ({"batch_size": 2}, "--batch-size 2 (the run has 4)"),
    ({"lr": 0.01}, "--lr 0.01 (the run has 0.001)"),
    ({"data": "OTHER"}, "--data '"),
], ids=["preset", "set", "seed", "batch-size", "lr", "data"])
def test_4_resume_refuses_options_that_differ(dataset, tmp_path, change, flag):
    """#4: --resume ignored a changed command line and recorded it as if it applied."""
    out = tmp_path / "run"
    with pytest.raises(StopTraining):
        train(train_config(dataset, out, stop_after=2))
    data = make_dataset(tmp_path / "other", seed=1) if change.pop("data", None) else dataset
    before = listing(out)
    with pytest.raises(TrainingError, match=r"--resume: .*" + flag.replace("(", r"\(").replace(")", r"\)")
                       .replace("{", r"\{").replace("}", r"\}") + r".*give the same ones, or train into a new --out"):
        train(train_config(data, out, resume=True, **change))
    assert listing(out) == before


def test_4_resume_applies_what_changes_no_weight(dataset, straight, tmp_path):
    """--stop-after, --checkpoint-every, logging and progress may change on resume; the result is the same."""
    out = tmp_path / "run"
    with pytest.raises(StopTraining):
        train(train_config(dataset, out, stop_after=2))
    resumed = train(train_config(dataset, out, resume=True, log_every=3, sample_every=0, checkpoint_every=4))
    assert_same_weights(straight, resumed)
    assert json.loads((resumed / "config.json").read_text())["provenance"]["train_config"]["log_every"] == 3


def test_5_train_resume_deletes_only_its_own_temporaries(dataset, tmp_path):
    """#5: `train --resume` removed a user's `.tmp/` directory inside --out."""
    out = tmp_path / "run"
    with pytest.raises(StopTraining):
        train(train_config(dataset, out, stop_after=2))
    users = [out / ".tmp" / "notes.txt", out / ".tmp-mine" / "a.txt", out / "analysis.tmp.csv",
             out / ".model.safetensors.backup.tmp", out / "checkpoints" / ".tmp", out / "checkpoints" / "x.tmp"]
    for path in users:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("mine")
    ours = [out / ".tmp-export-123", out / ".config.json.abc_1234.tmp",
            out / "checkpoints" / ".tmp-dynamics-0000002-77", out / "checkpoints" / ".latest.json.zz9xq0_a.tmp"]
    for path in ours:
        (path.mkdir() if "tmp-" in path.name else path.write_text("partial"))
    train(train_config(dataset, out, resume=True))
    assert all(p.read_text() == "mine" for p in users)
    assert not any(p.exists() for p in ours)
