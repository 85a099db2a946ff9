"""No unsafe deserialization anywhere in the shipped code: a static scan (AST, not grep) of every .py file.

Pickle-based loaders run arbitrary code from the file they read. neuralsim loads tensors with
safetensors and configs with JSON only. Forbidden in ``neuralsim/``, ``envs/``, ``agents/``,
``benchmarks/`` and ``examples/``:

- importing ``pickle``, ``cPickle``, ``_pickle``, ``cloudpickle``, ``dill``, ``joblib``, ``shelve``, ``marshal``;
- calling ``pickle.load(s)`` / ``Unpickler`` (under any import alias), ``joblib.load``, ``dill.load(s)``,
  ``cloudpickle.load(s)``, ``pandas.read_pickle`` (``pd.read_pickle``), ``shelve.open``, ``marshal.load(s)``;
- ``torch.load(...)`` without ``weights_only=True``;
- ``np.load(..., allow_pickle=True)`` (or any non-literal-False ``allow_pickle``).

Text in docstrings and comments is not code and is not flagged.
"""

from __future__ import annotations

import ast

import pytest

from conftest import ROOT, called_names, source_files

SCANNED = ("neuralsim", "envs", "agents", "benchmarks", "examples")
FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "joblib", "shelve", "marshal"}
LOADERS = {"load", "loads", "Unpickler", "open"}


def _true_literal(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_calls(source: str, filename: str = "<string>") -> list[str]:
    """Every unsafe import or call in ``source``, as ``"file:line: what"``."""
    tree = ast.parse(source, filename=filename)
    findings: list[str] = []

    def flag(node: ast.AST, what: str) -> None:
        findings.append(f"{filename}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in FORBIDDEN_MODULES:
                    flag(node, f"import {a.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            top = node.module.split(".")[0]
            if top in FORBIDDEN_MODULES:
                flag(node, f"from {node.module} import {', '.join(a.name for a in node.names)}")
            if node.module == "pandas" and any(a.name == "read_pickle" for a in node.names):
                flag(node, "from pandas import read_pickle")
    for node, full in called_names(tree):  # import aliases resolved: ``pk.loads`` is ``pickle.loads``
        if full is None:
            continue
        name = ast.unparse(node.func)
        module, _, func = full.rpartition(".")
        keywords = {k.arg: k.value for k in node.keywords if k.arg}
        if module.split(".")[0] in FORBIDDEN_MODULES and func in LOADERS:
            flag(node, f"{name}(...) deserializes with pickle")
        elif full in ("pandas.read_pickle", "pd.read_pickle") or func == "read_pickle":
            flag(node, f"{name}(...) unpickles")
        elif full == "torch.load" and not _true_literal(keywords.get("weights_only")):
            flag(node, f"{name}(...) without weights_only=True")
        elif full in ("numpy.load", "np.load") and "allow_pickle" in keywords and not (
                isinstance(keywords["allow_pickle"], ast.Constant) and keywords["allow_pickle"].value is False):
            flag(node, f"{name}(..., allow_pickle=...) may unpickle")
    return findings


def test_the_scan_covers_the_code():
    files = source_files(*SCANNED)
    dirs = {p.relative_to(ROOT).parts[0] for p in files}
    assert {"neuralsim", "envs", "agents"} <= dirs
    assert ROOT / "neuralsim" / "model.py" in files and ROOT / "envs" / "world_model_env.py" in files


def test_no_unsafe_deserialization_in_shipped_code():
    findings = [f for p in source_files(*SCANNED) for f in unsafe_calls(p.read_text(encoding="utf-8"), str(p.relative_to(ROOT)))]
    assert not findings, "unsafe deserialization (use safetensors / JSON):\n" + "\n".join(findings)


@pytest.mark.parametrize("snippet", [
    "import pickle",
    "import pickle as pk\npk.loads(b'')",
    "from pickle import load\nload(f)",
    "from pickle import Unpickler as U\nU(f).load()",
    "import _pickle",
    "import cloudpickle",
    "import dill",
    "import joblib\njoblib.load('m.joblib')",
    "from joblib import load",
    "import shelve",
    "import marshal",
    "import torch\ntorch.load('w.pt')",
    "import torch\ntorch.load('w.pt', weights_only=False)",
    "import torch as T\nT.load('w.pt', map_location='cpu')",
    "from torch import load\nload('w.pt')",
    "import numpy as np\nnp.load('a.npy', allow_pickle=True)",
    "import numpy\nnumpy.load('a.npz', allow_pickle=flag)",
    "import pandas as pd\npd.read_pickle('x.pkl')",
])
def test_the_scanner_catches_unsafe_code(snippet):
    assert unsafe_calls(snippet), snippet


@pytest.mark.parametrize("snippet", [
    '"""We never use pickle.load or torch.load here."""',
    "# import pickle",
    "import torch\ntorch.load('w.pt', weights_only=True)",
    "import numpy as np\nnp.load('a.npy')",
    "import numpy as np\nnp.load('a.npy', allow_pickle=False)",
    "from safetensors.torch import load_file\nload_file('m.safetensors')",
    "import json\njson.load(f)",
    "PICKLE_SUFFIXES = ('.pt', '.pkl')",
])
def test_the_scanner_passes_safe_code(snippet):
    assert not unsafe_calls(snippet), snippet
