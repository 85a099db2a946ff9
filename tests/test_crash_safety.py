"""Crash safety of the CLI: SIGKILL ``neuralsim collect`` / ``neuralsim train`` mid-run, then ``--resume``.

After the kill: every file a reader can see is complete (listed shards verify; ``checkpoints/latest.json``
points to a complete checkpoint that loads). After the resume: no completed episode or step is lost,
no temp file is left, and the result is bit-identical to an uninterrupted run.

(tests/test_data.py kills ``python -m neuralsim collect`` and resumes it in-process; these run the command end to end.)
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
from safetensors.torch import load_file

from conftest import make_dataset
from neuralsim.data import Dataset
from neuralsim.model import WorldModel

ROOT = Path(__file__).resolve().parent.parent
ONE_THREAD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}


def _neuralsim(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "neuralsim", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ONE_THREAD_ENV, cwd=str(ROOT), **kw)


def _run(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "neuralsim", *args], capture_output=True, text=True, timeout=600,
                          env=ONE_THREAD_ENV, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 120.0) -> None:
    """Poll ``ready()`` every few ms; SIGKILL the process the moment it holds (it must still be running)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            if ready():
                break
        except (OSError, ValueError, KeyError):  # a file appearing right now: try again
            pass
        time.sleep(0.003)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()[1][-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def _temp_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".tmp" in p.name)


# ------------------------------------------------------------------------------------ collect


def _listed(out: Path) -> dict[str, str]:
    """Shards the manifest lists, each checked against its sha256 (a reader sees only these)."""
    manifest = json.loads((out / "manifest.json").read_text())
    shards = {}
    for s in manifest["shards"]:
        assert hashlib.sha256((out / s["file"]).read_bytes()).hexdigest() == s["sha256"], f"torn listed shard {s['file']}"
        shards[s["file"]] = s["sha256"]
    assert manifest["episodes"] == sum(s["episodes"] for s in manifest["shards"])
    return shards


@pytest.mark.mujoco
def test_sigkill_collect_then_resume(tmp_path):
    out, ref = tmp_path / "d", tmp_path / "ref"
    args = ["collect", "--env", "NeuralSimRoom-v0", "--episodes", "120", "--max-steps", "25", "--episodes-per-shard", "2",
            "--image-size", "32", "--seed", "5", "--no-progress"]
    proc = _neuralsim(*args, "--out", str(out))
    _kill_when(proc, lambda: len(json.loads((out / "manifest.json").read_text())["shards"]) >= 3)

    kept = _listed(out)  # every listed shard is complete; a reader sees a consistent, shorter dataset
    killed_at = json.loads((out / "manifest.json").read_text())["episodes"]
    assert 6 <= killed_at < 120
    assert Dataset(out).verify()["episodes"] == killed_at

    summary = json.loads(_run(*args, "--out", str(out), "--resume").stdout.strip().splitlines()[-1])
    assert summary["resumed_from"] == killed_at and summary["collected"] == 120 - killed_at
    final = _listed(out)
    assert all(final[f] == sha for f, sha in kept.items())  # no completed episode lost or rewritten
    assert Dataset(out).verify()["episodes"] == 120 and not _temp_files(out)
    _run(*args, "--out", str(ref))
    assert json.loads((out / "manifest.json").read_text())["shards"] == json.loads((ref / "manifest.json").read_text())["shards"]


# ------------------------------------------------------------------------------------ train


def _check_visible_files(out: Path) -> dict:
    """Everything a user or ``--resume`` can see is whole: JSON parses, safetensors load, CSV rows are complete,
    ``latest.json`` points to a complete checkpoint. Returns the pointer."""
    for path in out.rglob("*"):
        if any(part.startswith(".") for part in path.relative_to(out).parts) or not path.is_file():
            continue  # temp files/dirs are hidden and never pointed to
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            load_file(str(path))
        elif path.suffix == ".csv":
            rows = list(csv.reader(path.read_text().splitlines()))
            assert all(len(r) == len(rows[0]) for r in rows), f"torn row in {path}"
    pointer = json.loads((out / "checkpoints" / "latest.json").read_text())
    ckpt = out / "checkpoints" / pointer["path"]
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert (state["stage"], state["step"]) == (pointer["stage"], pointer["step"])
    WorldModel.from_pretrained(ckpt / "model")
    for name in ("ema.safetensors", "optimizer.safetensors"):
        load_file(str(ckpt / name))
    WorldModel.from_pretrained(out)  # the exported model is loadable at every moment too
    return pointer


@pytest.mark.slow
def test_sigkill_train_twice_then_resume(tmp_path):
    data = make_dataset(tmp_path / "data")
    out, ref = tmp_path / "run", tmp_path / "ref"
    args = ["train", "all", "--data", str(data), "--preset", "tiny", "--steps", "30", "--ae-steps", "30",
            "--batch-size", "4", "--window", "4", "--checkpoint-every", "5", "--sample-every", "0", "--no-progress",
            "--seed", "3"]
    checkpoints = out / "checkpoints"

    # Kill 1: in the middle of writing a checkpoint (a temp dir exists after a first complete one).
    proc = _neuralsim(*args, "--out", str(out))
    _kill_when(proc, lambda: (checkpoints / "latest.json").is_file()
               and any(p.name.startswith(".tmp-") for p in checkpoints.iterdir()))
    first = _check_visible_files(out)
    assert first["stage"] == "autoencoder" and first["step"] < 30

    # Kill 2: resumed, then killed again during the dynamics stage.
    proc = _neuralsim(*args, "--out", str(out), "--resume")
    _kill_when(proc, lambda: json.loads((checkpoints / "latest.json").read_text())["stage"] == "dynamics")
    second = _check_visible_files(out)
    assert second["stage"] == "dynamics" and second["step"] < 30

    # Resume to the end: continues from the last complete checkpoint and reaches the configured steps.
    done = _run(*args, "--out", str(out), "--resume")
    assert f"resuming dynamics from step {second['step']}" in done.stdout
    final = _check_visible_files(out)
    assert (final["stage"], final["step"]) == ("dynamics", 30)
    state = json.loads((checkpoints / final["path"] / "trainer_state.json").read_text())
    assert state["completed"] is True
    assert not _temp_files(out), _temp_files(out)  # the killed runs' temp dirs are cleaned up on resume

    # No step lost or repeated: bit-identical to an uninterrupted run.
    _run(*args, "--out", str(ref))
    a, b = load_file(str(out / "model.safetensors")), load_file(str(ref / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert json.loads((out / "config.json").read_text())["latent_scale"] == json.loads((ref / "config.json").read_text())["latent_scale"]


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    found, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, p in parents.items() if p in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG is Linux-only")
def test_sigkill_collect_with_workers_leaves_no_process_behind(tmp_path):
    """Issue 24 #6: SIGKILL of `collect --workers 2` left both workers and the resource tracker alive, deadlocked
    on a pipe that held the parent's stdout/stderr (a caller waiting on the output hung)."""
    proc = _neuralsim("collect", "--env", "CartPole-v1", "--episodes", "400", "--workers", "2", "--image-size", "16",
                      "--max-steps", "200", "--out", str(tmp_path / "d"), "--no-progress")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(_children(proc.pid)) < 3:  # 2 workers + tracker
        time.sleep(0.05)
    time.sleep(1.0)  # the workers are stepping episodes
    descendants = _children(proc.pid)
    assert proc.poll() is None and len(descendants) >= 2, "collect ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    try:
        proc.communicate(timeout=60)  # returns only when every holder of the output pipes is gone
    except subprocess.TimeoutExpired:
        for pid in descendants:
            os.kill(pid, signal.SIGKILL)
        pytest.fail("the parent's stdout/stderr stayed open after SIGKILL: its worker processes are still alive")
    deadline = time.time() + 30
    while time.time() < deadline and any(_alive(p) for p in descendants):
        time.sleep(0.1)
    assert not [p for p in descendants if _alive(p)]
