"""The install shape: import names, console script, CLI help and errors, version string, package layout."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import neuralsim

ROOT = Path(__file__).resolve().parent.parent
SUBCOMMANDS = ("info", "collect", "train", "rollout", "play", "bench", "eval")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neuralsim", *args], capture_output=True, text=True, timeout=120)


def test_version_string():
    assert re.fullmatch(r"\d+\.\d+\.\d+", neuralsim.__version__)
    assert run_cli("--version").stdout.strip() == f"neuralsim {neuralsim.__version__}"


# Run by a fresh `python -I` from outside the repository: under `python -m pytest` the repository root is on this
# process's sys.path, where the plain envs/ and agents/ directories (and neuralsim.egg-info) are found.
INSTALLED_NAMES = """
import importlib.metadata, importlib.util, json
import neuralsim.agents, neuralsim.envs
dist = importlib.metadata.distribution("neuralsim")
print(json.dumps({
    "top_level": dist.read_text("top_level.txt").split(),
    "files": [str(f) for f in dist.files or ()],
    "neuralsim.envs": neuralsim.envs.__file__,
    "neuralsim.agents": neuralsim.agents.__file__,
    "envs": getattr(importlib.util.find_spec("envs"), "origin", None),
    "agents": getattr(importlib.util.find_spec("agents"), "origin", None),
}))
"""


def test_import_names(tmp_path):
    """The installed distribution maps envs/ and agents/ to neuralsim.envs and neuralsim.agents and ships no
    top-level `envs` or `agents` package, whatever the sys.path of the process that runs the tests."""
    assert neuralsim.WorldModel.__name__ == "WorldModel"
    assert neuralsim.WorldModelConfig.__name__ == "WorldModelConfig"
    out = subprocess.run([sys.executable, "-I", "-c", INSTALLED_NAMES], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["top_level"] == ["neuralsim"]
    assert not [f for f in found["files"] if f.split("/")[0] in ("envs", "agents")]  # (a non-editable install lists them)
    for name in ("envs", "agents"):
        package = Path(found[f"neuralsim.{name}"]).resolve().parent
        assert package.name == name
        plain = found[name]  # another distribution's `envs` may exist; ours must not be importable under that name
        assert plain is None or Path(plain).resolve().parent != package, f"{package} is importable as plain `{name}`"


def test_import_registers_envs_without_side_effects():
    out = subprocess.run([sys.executable, "-c", "import gymnasium as gym, neuralsim; "
                          "print(sorted(k for k in gym.registry if k in ('SanaWM-v0', 'NeuralSimRoom-v0')))"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['NeuralSimRoom-v0', 'SanaWM-v0']"
    assert out.stderr == ""


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_subcommand_help(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert f"usage: neuralsim {command}" in result.stdout
    assert len(result.stdout.splitlines()) > 3


def test_top_level_help_does_not_import_torch():
    # Subcommand modules load only when their subcommand runs, so `neuralsim --help` stays instant.
    code = ("import sys\nfrom neuralsim.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_console_script_installed():
    script = Path(sys.executable).parent / "neuralsim"
    assert script.exists(), "the `neuralsim` console script is not installed next to python"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and all(c in result.stdout for c in SUBCOMMANDS)


def test_unknown_subcommand_and_option_fail_clearly():
    bad = run_cli("fly")
    assert bad.returncode == 2 and "invalid choice: 'fly'" in bad.stderr
    bad = run_cli("info", "--frobnicate")
    assert bad.returncode == 2 and "unrecognized arguments: --frobnicate" in bad.stderr


def test_info_prints_real_facts():
    import torch

    result = run_cli("info", "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["neuralsim"] == neuralsim.__version__
    assert facts["torch"] == torch.__version__
    assert facts["device"] in ("cpu", "cuda")
    assert isinstance(facts["bf16_native"], bool)
    assert "sana-wm-2.6b" in facts["models"]


@pytest.mark.slow
def test_wheel_contains_only_the_neuralsim_package(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), str(ROOT)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    wheel = next(tmp_path.glob("neuralsim-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"neuralsim", f"neuralsim-{neuralsim.__version__}.dist-info"}, tops
    assert "neuralsim/envs/registration.py" in names and "neuralsim/agents/__init__.py" in names
    assert "neuralsim/cli/__init__.py" in names  # a subpackage: setup.cfg lists it
    assert "neuralsim/data/collection.py" in names and "neuralsim/envs/room_policies.py" in names  # neuralsim.data too
    # the shipped model (package_data), without a setuptools warning about its folder not being a package
    assert {f"neuralsim/assets/default/{f}" for f in ("config.json", "model.safetensors", "start_frames.safetensors")} \
        <= set(names)
    assert "would be ignored" not in result.stderr + result.stdout
