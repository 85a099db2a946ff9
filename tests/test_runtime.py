"""Process defaults: the torch thread policy of the CLI and the envs, a quiet SDL on a headless machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from neuralsim import runtime


def _run(code: str, env: dict[str, str | None]) -> subprocess.CompletedProcess:
    full = dict(os.environ)
    for key, value in env.items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=full)


def test_default_num_threads_is_half_the_cpus_between_1_and_4(monkeypatch):
    for cpus, expected in ((1, 1), (2, 1), (4, 2), (8, 4), (64, 4)):
        monkeypatch.setattr(runtime, "_usable_cpus", lambda cpus=cpus: cpus)
        assert runtime.default_num_threads() == expected


@pytest.mark.parametrize(
    "args, env, expected",
    [
        ([], {"OMP_NUM_THREADS": None, "NEURALSIM_NUM_THREADS": None}, "policy"),
        ([], {"OMP_NUM_THREADS": "2", "NEURALSIM_NUM_THREADS": None}, 2),  # the user's choice stands
        (["--threads", "1"], {"OMP_NUM_THREADS": "2", "NEURALSIM_NUM_THREADS": None}, 1),
        ([], {"OMP_NUM_THREADS": "1", "NEURALSIM_NUM_THREADS": "2"}, 2),
    ],  # (OpenMP caps a count above the machine's cores, so these stay <= 2)
)
def test_cli_thread_policy(args, env, expected):
    result = _run(f"from neuralsim.cli import main; main(['info', '--json', *{args!r}])", env)
    assert result.returncode == 0, result.stderr
    want = runtime.default_num_threads() if expected == "policy" else expected
    assert json.loads(result.stdout)["cpu_threads"] == want


def test_bad_thread_settings_are_cli_errors():
    result = _run("from neuralsim.cli import main; main(['info', '--threads', '0'])", {})
    assert result.returncode == 2 and "--threads must be a positive integer" in result.stderr
    result = _run("from neuralsim.cli import main; main(['info'])", {"NEURALSIM_NUM_THREADS": "many"})
    assert result.returncode == 2 and "NEURALSIM_NUM_THREADS must be a positive integer" in result.stderr
    assert "Traceback" not in result.stderr


def test_env_thread_policy(tiny_checkpoint):
    code = (f"import torch, neuralsim; from neuralsim.envs import WorldModelEnv\n"
            f"before = torch.get_num_threads()\n"
            f"WorldModelEnv({str(tiny_checkpoint)!r}); auto = torch.get_num_threads()\n"
            f"WorldModelEnv({str(tiny_checkpoint)!r}, num_threads=2); two = torch.get_num_threads()\n"
            f"WorldModelEnv({str(tiny_checkpoint)!r}, num_threads=None); kept = torch.get_num_threads()\n"
            f"print(before, auto, two, kept)")
    result = _run(code, {"OMP_NUM_THREADS": None, "NEURALSIM_NUM_THREADS": None})
    assert result.returncode == 0, result.stderr
    before, auto, two, kept = map(int, result.stdout.split())
    assert auto == min(before, runtime.default_num_threads()) and two == 2 and kept == 2
    result = _run(code, {"OMP_NUM_THREADS": "2", "NEURALSIM_NUM_THREADS": None})
    assert result.stdout.split()[:2] == ["2", "2"]  # OMP_NUM_THREADS set: "auto" leaves torch alone
    with pytest.raises(ValueError, match="num_threads must be a positive int, 'auto' or None"):
        runtime.apply_thread_policy(0)


def test_headless_sdl_is_quiet():
    pytest.importorskip("pygame")
    code = ("from neuralsim.runtime import quiet_headless_sdl; quiet_headless_sdl()\n"
            "import pygame; pygame.init(); pygame.quit()")
    result = _run(code, {"XDG_RUNTIME_DIR": None, "SDL_AUDIODRIVER": None, "PYGAME_HIDE_SUPPORT_PROMPT": None})
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout == ""  # no "XDG_RUNTIME_DIR is invalid", no ALSA, no banner
