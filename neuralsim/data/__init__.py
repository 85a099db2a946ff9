"""Datasets of pixel rollouts: the format, collection from any Gymnasium env, resume.

* :mod:`neuralsim.data.dataset`: the format: :class:`ShardWriter`, :class:`Dataset` (episodes, training windows),
  the manifest, :class:`DatasetError`.
* :mod:`neuralsim.data.collection`: :func:`collect` (worker processes, resume), :class:`FrameRecorder`, the generic
  collection policies and :func:`make_policy`, which asks an env for its own (``collection_policies()``).
* :func:`resize_frame` / :data:`RESIZE_MODES` live in :mod:`neuralsim.images`; re-exported here.

Every name below is importable from ``neuralsim.data`` as before the split.
"""

from __future__ import annotations

from neuralsim.data.collection import (
    DEFAULT_IMAGE_SIZE,
    POLICIES,
    POLICY_HOOK,
    CollectionPolicy,
    FrameRecorder,
    MixedPolicy,
    RandomPolicy,
    SavedPolicyActor,
    StickyRandomPolicy,
    collect,
    env_policies,
    env_spec,
    frames_with_labels,
    make_policy,
    policy_names,
    validate_collect,
)
from neuralsim.data.dataset import (
    FORMAT,
    LOCK,
    MANIFEST,
    VERSION,
    Dataset,
    DatasetError,
    ShardWriter,
    safetensors_bytes,
)
from neuralsim.images import RESIZE_MODES, resize_frame

__all__ = [
    "DEFAULT_IMAGE_SIZE", "FORMAT", "LOCK", "MANIFEST", "POLICIES", "POLICY_HOOK", "RESIZE_MODES", "VERSION",
    "CollectionPolicy", "Dataset", "DatasetError", "FrameRecorder", "MixedPolicy", "RandomPolicy", "SavedPolicyActor", "ShardWriter",
    "StickyRandomPolicy", "collect", "env_policies", "env_spec", "frames_with_labels", "make_policy", "policy_names", "resize_frame",
    "safetensors_bytes", "validate_collect",
]
