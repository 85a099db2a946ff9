"""Test-session settings shared by every test file."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import torch  # noqa: E402

# One intra-op thread: the tests are many small ops, and on a 2-core machine OpenMP threads that
# spin while subprocesses (collect workers, torchrun) run slow everything down ~10x.
torch.set_num_threads(1)


# ------------------------------------------------------------------------------------ shared fixtures

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

TINY_FRAMES_PER_STEP = 2  # frames per latent frame (env step) of the tiny test checkpoint


def make_tiny_model(termination_bias: float = -6.0, **overrides):
    """The "tiny" preset (32x32, seeded init) with 2 frames per step; the termination head is made confident
    (an untrained head sits at 0.5, which would end every other episode), and the zero-initialised output layer
    gets small random weights, so the dream depends on the sampling noise as a trained one does (at init an
    ``x0_residual`` model copies the last frame whatever the seed)."""
    from neuralsim.config import WorldModelConfig
    from neuralsim.model import WorldModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = WorldModel(WorldModelConfig.from_preset("tiny", **{"frames_per_latent": TINY_FRAMES_PER_STEP, **overrides}))
        torch.nn.init.normal_(model.dynamics.final_layer.linear.weight, std=0.05)
    with torch.no_grad():
        last = model.termination_head.net[-1]
        last.weight.zero_()
        last.bias.fill_(termination_bias)
    return model.eval()


def save_tiny_checkpoint(path: Path, model=None, **overrides) -> Path:
    """``config.json`` + ``model.safetensors`` + a 3-frame ``start_frames.safetensors`` with descriptions."""
    from safetensors.numpy import save_file

    model = make_tiny_model(**overrides) if model is None else model
    model.save_pretrained(path)
    h, w = model.config.image_size
    frames = np.random.default_rng(0).integers(0, 256, (3, h, w, 3), dtype=np.uint8)
    save_file({"frames": frames}, str(Path(path) / "start_frames.safetensors"),
              metadata={"descriptions": json.dumps(["a red ball near the blue wall", "a green box", "a yellow room"])})
    return Path(path)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny checkpoint directory shared by the whole session (treat it as read-only; copy it to modify)."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-checkpoint") / "tiny")


def listing(root: Path) -> list[str]:
    """Every path under ``root`` (relative, sorted): compare before/after to see that nothing was written."""
    root = Path(root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []
