"""Test-session settings shared by every test file."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import torch  # noqa: E402

# One intra-op thread: the tests are many small ops, and on a 2-core machine OpenMP threads that
# spin while subprocesses (collect workers, torchrun) run slow everything down ~10x.
torch.set_num_threads(1)
