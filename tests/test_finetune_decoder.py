"""examples/finetune_decoder.py: the decoder fine-tune on a frozen encoder, its growth (--decoder-blocks) and merge."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, load_script, make_tiny_model, model_weights

SCRIPT = ROOT / "examples" / "finetune_decoder.py"


def test_grown_decoder_decodes_as_before_until_it_trains():
    script = load_script("examples/finetune_decoder.py", "finetune_decoder_test")
    model = make_tiny_model(frames_per_latent=1)
    grown = script.grow_decoder(model, (1, 1, 1, 1))
    assert tuple(grown.config.ae_decoder_blocks) == (1, 1, 1, 1)
    assert grown.num_parameters() > model.num_parameters()
    latents = torch.randn(2, 1, *model.latent_shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(grown.decode(latents), model.decode(latents))  # the new blocks start as the identity
    enc, enc_grown = model.autoencoder.encoder.state_dict(), grown.autoencoder.encoder.state_dict()
    assert all(torch.equal(enc[k], enc_grown[k]) for k in enc)
    for bad in ("1,1,1", "0,1,1,1", "a,b,c,d"):  # one count per level, none below the model's
        with pytest.raises(SystemExit, match="--decoder-blocks"):
            script.parse_blocks(bad, (1, 1, 0, 0))


def test_the_grown_blocks_init_depends_on_the_seed_alone():
    """torch draws its start-up seed at random: a growth must not inherit it (the recipe's run is reproducible)."""
    script = load_script("examples/finetune_decoder.py", "finetune_decoder_test")
    model = make_tiny_model(frames_per_latent=1)
    torch.manual_seed(1)
    a = script.grow_decoder(model, (1, 1, 1, 1), seed=3).state_dict()
    torch.manual_seed(2)
    before = torch.random.get_rng_state()
    b = script.grow_decoder(model, (1, 1, 1, 1), seed=3).state_dict()
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's stream is left as it was
    c = script.grow_decoder(model, (1, 1, 1, 1), seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    new = [k for k in a if ".conv1." in k and k not in model.state_dict()]
    assert new and any(not torch.equal(a[k], c[k]) for k in new)


def test_grow_train_and_merge_into_a_dynamics_checkpoint(tmp_path, dataset):
    base = tmp_path / "base"
    make_tiny_model(frames_per_latent=1).save_pretrained(base)
    out, merged = tmp_path / "decoder", tmp_path / "merged"
    run = [sys.executable, str(SCRIPT), "--model", str(base), "--data", str(dataset), "--steps", "2", "--batch-size", "2",
           "--decoder-blocks", "1,1,1,1", "--out", str(out)]
    subprocess.run(run, check=True, capture_output=True, text=True)
    config = json.loads((out / "config.json").read_text())
    assert config["ae_decoder_blocks"] == [1, 1, 1, 1]
    record = config["provenance"]["decoder_finetune"]
    assert record["steps"] == 2 and record["decoder_blocks"] == [1, 1, 1, 1] and record["from"] == str(base)
    subprocess.run([sys.executable, str(SCRIPT), "--model", str(out), "--merge", str(base), "--merge-only",
                    "--out", str(merged)], check=True, capture_output=True, text=True)
    trained, result, before = model_weights(out), model_weights(merged), model_weights(base)
    decoder = [k for k in trained if k.startswith("autoencoder.decoder.")]
    assert all(torch.equal(result[k], trained[k]) for k in decoder)  # the grown, trained decoder
    assert all(torch.equal(result[k], before[k]) for k in before if not k.startswith("autoencoder.decoder."))
    assert json.loads((merged / "config.json").read_text())["provenance"]["decoder_finetune"] == record
    bad = subprocess.run(run[:-2] + ["--decoder-blocks", "1,1", "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert bad.returncode != 0 and "--decoder-blocks must be 4 comma-separated ints" in bad.stderr


def test_pixel_weight_reweights_the_autoencoder_loss():
    model = make_tiny_model(frames_per_latent=1)
    frames = torch.randint(0, 256, (2, 1, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    base, _ = model.autoencoder_loss(frames, generator=torch.Generator().manual_seed(1), edge_weight=0.0)
    ones, _ = model.autoencoder_loss(frames, generator=torch.Generator().manual_seed(1), edge_weight=0.0,
                                     pixel_weight=torch.full((2, 1, 32, 32), 3.0))
    assert torch.allclose(base, ones)  # weights are normalised to mean 1: a constant weight changes nothing
    corner = torch.ones(2, 1, 32, 32)
    corner[..., :4, :4] = 50.0
    weighted, _ = model.autoencoder_loss(frames, generator=torch.Generator().manual_seed(1), edge_weight=0.0,
                                         pixel_weight=corner)
    assert not torch.allclose(base, weighted)
    with pytest.raises(ValueError, match=r"pixel_weight must be \[B, T, H, W\]"):
        model.autoencoder_loss(frames, pixel_weight=torch.ones(2, 32, 32))
    # frames packed k at a time (the first alone, repeated): the weights are packed the same way
    packed_model = make_tiny_model(frames_per_latent=2)
    window = torch.randint(0, 256, (2, 3, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    base, _ = packed_model.autoencoder_loss(window, generator=torch.Generator().manual_seed(1), edge_weight=0.0)
    ones, _ = packed_model.autoencoder_loss(window, generator=torch.Generator().manual_seed(1), edge_weight=0.0,
                                            pixel_weight=torch.full((2, 3, 32, 32), 2.0))
    assert torch.allclose(base, ones)
    last = torch.ones(2, 3, 32, 32)
    last[:, 2] = 50.0  # the last frame of the only packed group weighs more
    weighted, _ = packed_model.autoencoder_loss(window, generator=torch.Generator().manual_seed(1), edge_weight=0.0,
                                                pixel_weight=last)
    assert not torch.allclose(base, weighted)


@pytest.mark.mujoco
def test_object_weight_trains_on_the_envs_frames_and_masks(tmp_path):
    from neuralsim.data import collect

    script = load_script("examples/finetune_decoder.py", "finetune_decoder_objects")
    data = tmp_path / "room"
    collect("NeuralSimRoom-v0", data, episodes=1, max_steps=8, image_size=32, progress=False)
    frames, masks = script.collect_object_frames(str(data), 20, first_seed=7)
    assert frames.shape == (20, 32, 32, 3) and frames.dtype.name == "uint8"
    assert masks.shape == (20, 32, 32) and masks.dtype == bool and masks.any()  # the room's objects are in view
    again, _ = script.collect_object_frames(str(data), 20, first_seed=7)
    assert (again == frames).all()  # seeded: the same frames every run
    base = tmp_path / "base"
    make_tiny_model(frames_per_latent=1).save_pretrained(base)
    run = [sys.executable, str(SCRIPT), "--model", str(base), "--data", str(data), "--steps", "2", "--batch-size", "2",
           "--object-weight", "4", "--object-frames", "16", "--out", str(tmp_path / "out")]
    subprocess.run(run, check=True, capture_output=True, text=True)
    record = json.loads((tmp_path / "out" / "config.json").read_text())["provenance"]["decoder_finetune"]
    assert record["object_weight"] == 4.0 and record["object_frames"] == 16
    bad = subprocess.run(run[:-2] + ["--object-weight", "-1", "--out", str(tmp_path / "x")], capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "--object-weight must be a finite number >= 0" in bad.stderr


def test_object_weight_needs_an_env_with_object_masks(tmp_path, dataset):
    base = tmp_path / "base"
    make_tiny_model(frames_per_latent=1).save_pretrained(base)
    bad = subprocess.run([sys.executable, str(SCRIPT), "--model", str(base), "--data", str(dataset), "--steps", "1",
                          "--object-weight", "4", "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert bad.returncode != 0 and "--object-weight: data's env 'synthetic' cannot be made here" in bad.stderr
