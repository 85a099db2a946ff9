"""Files are data (issue 24): a checkpoint, config.json, policy.json or key string never chooses code, and a small
input never buys unbounded work. Each test reproduces one failure of the outside round (numbers in the names)."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import listing

EVIL_MODULE = "neuralsim_evil_provenance"


def _copy_with_config(src: Path, dst: Path, **changes) -> Path:
    """A copy of checkpoint ``src`` whose config.json has ``changes`` applied (``None`` removes a field)."""
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            config.pop(k, None)
        else:
            config[k] = v
    (dst / "config.json").write_text(json.dumps(config))
    return dst


@pytest.fixture
def evil_module(tmp_path, monkeypatch):
    """A module on sys.path (as the working directory is under ``python -m``) that leaves a marker when imported."""
    marker = tmp_path / "imported.marker"
    (tmp_path / f"{EVIL_MODULE}.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker
    sys.modules.pop(EVIL_MODULE, None)


@pytest.mark.parametrize("env_id", [f"{EVIL_MODULE}:CartPole-v1", "this:Zen-v0", "NoSuchEnv-v9"])
def test_1_checkpoint_env_id_never_imports_a_module(tiny_checkpoint, tmp_path, evil_module, env_id):
    """#1: `play` made the env of config.json's provenance.env_id; 'module:Id' made gymnasium import `module`."""
    from neuralsim.session import DreamSession
    from neuralsim.play import RealEnv

    ckpt = _copy_with_config(tiny_checkpoint, tmp_path / "ckpt", provenance={"env_id": env_id, "env_kwargs": {}})
    was_imported = "this" in sys.modules
    real, why = RealEnv.for_model(DreamSession(str(ckpt)))
    assert real is None
    assert ("never chooses a module" in why) if ":" in env_id else ("not a registered Gymnasium id" in why)
    assert not evil_module.exists() and EVIL_MODULE not in sys.modules
    assert ("this" in sys.modules) == was_imported  # `import this` prints the Zen of Python


def test_1_transfer_reads_the_checkpoint_env_as_data(tiny_checkpoint, tmp_path, evil_module):
    """#1: agents.transfer.real_env_spec hands a checkpoint's env id to gym.make too."""
    from neuralsim.agents.transfer import real_env_spec

    ckpt = _copy_with_config(tiny_checkpoint, tmp_path / "ckpt",
                             provenance={"env_id": f"{EVIL_MODULE}:CartPole-v1"})
    with pytest.raises(ValueError, match=r"provenance\.env_id=.*never chooses a module"):
        real_env_spec(str(ckpt))
    assert not evil_module.exists() and EVIL_MODULE not in sys.modules
    good = _copy_with_config(tiny_checkpoint, tmp_path / "good", provenance={"env_id": "CartPole-v1",
                                                                             "env_kwargs": {"render_mode": "rgb_array"}})
    assert real_env_spec(str(good)) == ("CartPole-v1", {"render_mode": "rgb_array"})


def test_7_key_dsl_bomb_in_step_keys(tiny_checkpoint):
    """#7: `env.step_keys("w-100000000")` built one object per frame before stepping; now one clear error."""
    from neuralsim.envs.world_model_env import WorldModelEnv

    env = WorldModelEnv(str(tiny_checkpoint))
    ref = env.reset(seed=0)[0]
    with pytest.raises(ValueError, match=r"more than MAX_ACTION_FRAMES=100000 frames"):
        env.step_keys("w-100000000")
    env.reset(seed=0)
    assert np.array_equal(env.reset(seed=0)[0], ref)
    assert len(env.step_keys("w-4")[-1]) == 4  # still usable
    env.close()


def _poison_decoder(src: Path, dst: Path) -> Path:
    """A copy of checkpoint ``src`` with one NaN in the last decoder weight (written straight into the safetensors)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(str(dst / "model.safetensors"))
    name = [k for k in tensors if k.startswith("autoencoder.decoder") and k.endswith("weight")][-1]
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(dst / "model.safetensors"))
    return dst


def test_10_nan_decoder_weight_is_an_error_not_black_frames(tiny_checkpoint, tmp_path):
    """#10: a NaN decoder weight decoded to all-black frames (clamp hides NaN) and `rollout` exited 0."""
    import torch

    from neuralsim.model import WorldModel

    model = WorldModel.from_pretrained(_poison_decoder(tiny_checkpoint, tmp_path / "nan"))
    C, h, w = model.latent_shape
    with pytest.raises(FloatingPointError, match="non-finite pixels from finite latents"):
        model.decode(torch.zeros(1, 1, C, h, w))
    clean = WorldModel.from_pretrained(tiny_checkpoint)
    with pytest.raises(FloatingPointError, match="non-finite latents"):
        clean.decode(torch.full((1, 1, C, h, w), float("nan")))
    assert clean.decode(torch.zeros(1, 1, C, h, w)).dtype == torch.uint8


def test_10_rollout_of_a_nan_decoder_fails_and_writes_nothing(tiny_checkpoint, tmp_path, capsys):
    from neuralsim.cli import main

    ckpt = _poison_decoder(tiny_checkpoint, tmp_path / "nan")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["rollout", "--model", str(ckpt), "--actions", "w-4", "--out", str(out / "dream.gif")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "rollout: error: --model" in err and "non-finite pixels" in err and "Traceback" not in err
    assert listing(out) == []


@pytest.mark.parametrize("changes, match", [
    ({"depth": 20000}, r"depth=20000 is invalid: expected at most 256"),
    ({"depth": 200}, r"asks for \d+ blocks \(depth=200.*holds only \d+ tensors"),
    ({"denoise_steps": 1e9}, r"denoise_steps=1000000000.0 is invalid: expected an int"),
    ({"denoise_steps": 10**9}, r"denoise_steps=1000000000 is invalid: expected at most 1000"),
    ({"image_size": [2048, 2048]}, r"image_size=.* at most MAX_TOKENS_PER_FRAME=4096"),
    ({"text_layers": 10**6}, r"text_layers=1000000 is invalid: expected at most 64"),
    ({"action_spec": {"type": "discrete", "n": 10**12}}, r"action_spec describes 1000000000000 .*MAX_ACTION_ELEMENTS"),
], ids=["depth-20000", "depth-200", "denoise-1e9", "denoise-int", "image-4M-tokens", "text-layers", "discrete-1e12"])
def test_8_config_bombs_are_refused_before_building(tiny_checkpoint, tmp_path, changes, match):
    """#8: config.json `"depth": 20000` built the module (125 s, 2.7 GB) before the weights were looked at;
    `"denoise_steps": 1e9` allocated 4 GB at the first step, then ran a billion Euler steps."""
    import time
    import tracemalloc

    from neuralsim.model import WorldModel

    ckpt = _copy_with_config(tiny_checkpoint, tmp_path / "ckpt", **changes)
    tracemalloc.start()
    t = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=match) as info:
            WorldModel.from_pretrained(ckpt)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(ckpt / "config.json") in str(info.value)
    assert time.perf_counter() - t < 5.0 and peak < 50 * 2**20


def test_8_denoise_steps_and_rollout_steps_are_bounded(tiny_checkpoint, tmp_path, capsys):
    """#8: the step count a caller asks for is bounded like the one a config asks for."""
    from neuralsim.cli import main
    from neuralsim.envs.world_model_env import WorldModelEnv

    with pytest.raises(ValueError, match=r"denoise_steps must be an int in \[1, 1000\]"):
        WorldModelEnv(str(tiny_checkpoint), denoise_steps=10**9)
    for args, message in ((["--denoise-steps", "1000000000"], "--denoise-steps must be at most 1000"),
                          (["--steps", "1000000000"], "--steps must be at most 100000")):
        with pytest.raises(SystemExit) as exit_info:
            main(["rollout", "--model", str(tiny_checkpoint), *args, "--out", str(tmp_path / "d.gif")])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert listing(tmp_path) == []


def test_11_config_missing_camera_fields_is_refused(tiny_checkpoint, tmp_path):
    """#11: a config.json without the camera fields loaded with the dataclass defaults (0.05 / 1.2 / 45 instead of
    the trained 0.08 / 4.0 / 70) and dreamt different frames."""
    from neuralsim.model import WorldModel

    ckpt = _copy_with_config(tiny_checkpoint, tmp_path / "ckpt", camera_translation_speed=None,
                             camera_rotation_speed_deg=None, camera_fovy_deg=None)
    with pytest.raises(ValueError, match=r"config\.json lacks field\(s\) \['camera_fovy_deg', 'camera_translation_speed', "
                                         r"'camera_rotation_speed_deg'\], which shape what the model does"):
        WorldModel.from_pretrained(ckpt)
    WorldModel.from_pretrained(tiny_checkpoint)  # save_pretrained writes every field
    WorldModel.from_pretrained("default")  # the shipped model too (it predates some newer, optional fields)


# ------------------------------------------------------------------------------------ weak answers (issue 24)


def _tiny_dataset(root: Path) -> Path:
    import gymnasium as gym

    from neuralsim.actions import space_to_spec
    from neuralsim.data import ShardWriter

    with ShardWriter(root, {"image_size": [8, 8], "action_spec": space_to_spec(gym.spaces.Discrete(2)),
                            "frames_per_step": 1}) as w:
        w.add_episode(np.zeros((3, 8, 8, 3), np.uint8), np.zeros(2, np.int64), np.zeros(2, np.float32),
                      np.zeros(2, bool), np.array([False, True]), "")
    return root


MANIFEST_CASES = [
    ("shards-null", {"shards": None}, r"shards must be a list of shard entries, got None"),
    ("shards-entry-string", {"shards": ["shard-000000.safetensors"]}, r"shards\[0\] must be an object"),
    ("episodes-string", {"episodes": "1"}, r"episodes must be a non-negative integer, got '1'"),
    ("steps-float", {"steps": 2.0}, r"steps must be a non-negative integer, got 2\.0"),
    ("image-size-short", {"image_size": [8]}, r"image_size must be \[height, width\] of positive integers, got \[8\]"),
    ("image-size-bool", {"image_size": [True, 8]}, r"image_size must be \[height, width\]"),
    ("frames-per-step-null", {"frames_per_step": None}, r"frames_per_step must be a positive integer, got None"),
    ("version-true", {"version": True}, r"unsupported dataset version True"),
    ("action-spec-list", {"action_spec": [1, 2]}, r"action_spec must be an object"),
    ("action-spec-box-no-shape", {"action_spec": {"type": "box"}}, r"action_spec \{'type': 'box'\} is not a valid action space"),
    ("action-spec-bomb", {"action_spec": {"type": "discrete", "n": 10**12}}, r"at most MAX_ACTION_ELEMENTS"),
    ("resize-unknown", {"resize": "zoom"}, r"resize must be one of pad, crop, squash, got 'zoom'"),
    ("poses-string", {"poses": "false"}, r"poses must be true or false, got 'false'"),
    ("env-kwargs-list", {"env_kwargs": [1]}, r"env_kwargs must be an object or null"),
]


@pytest.mark.parametrize("case", MANIFEST_CASES, ids=[c[0] for c in MANIFEST_CASES])
def test_manifest_field_types_are_checked(tmp_path, case):
    """A manifest field of the wrong type gave a raw TypeError ('shards': null) naming neither file nor field."""
    from neuralsim.data import Dataset, DatasetError, ShardWriter

    _, changes, match = case
    root = _tiny_dataset(tmp_path / "d")
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**manifest, **changes}))
    before = listing(tmp_path)
    with pytest.raises(DatasetError, match=r"\S*manifest\.json: .*" + match):
        Dataset(root)
    with pytest.raises(DatasetError, match=match):  # collect --resume reads it the same way
        ShardWriter(root, {k: manifest[k] for k in ("image_size", "action_spec", "frames_per_step")}, resume=True)
    assert listing(tmp_path) == before


@pytest.mark.parametrize("where", ["parent", "absolute", "symlink"])
def test_manifest_shard_paths_stay_inside_the_dataset(tmp_path, where):
    """A manifest could list '../x', an absolute path, or a shard that is a symlink out of the directory."""
    from neuralsim.data import Dataset, DatasetError

    root = _tiny_dataset(tmp_path / "d")
    outside = tmp_path / "outside.safetensors"
    shutil.copy(root / "shard-000000.safetensors", outside)
    manifest = json.loads((root / "manifest.json").read_text())
    if where == "symlink":
        (root / "shard-000000.safetensors").unlink()
        (root / "shard-000000.safetensors").symlink_to(outside)
        match = r"shard \S+shard-000000\.safetensors listed in \S+manifest\.json leaves the dataset directory"
    else:
        manifest["shards"][0]["file"] = "../outside.safetensors" if where == "parent" else str(outside)
        (root / "manifest.json").write_text(json.dumps(manifest))
        match = r"manifest\.json: shards\[0\]\.file must be a shard file name inside the dataset directory"
    with pytest.raises(DatasetError, match=match):
        Dataset(root)


def test_two_writers_on_one_directory_are_refused(tmp_path):
    """No lock: two `collect` runs on one directory interleaved their shards and manifests."""
    import gymnasium as gym

    from neuralsim.actions import space_to_spec
    from neuralsim.data import DatasetError, ShardWriter

    fields = {"image_size": [8, 8], "action_spec": space_to_spec(gym.spaces.Discrete(2)), "frames_per_step": 1}
    first = ShardWriter(tmp_path / "d", fields)
    for resume in (True, False):
        with pytest.raises((DatasetError, ValueError), match=r"being written by another process|not empty"):
            ShardWriter(tmp_path / "d", fields, resume=resume)
    with pytest.raises(DatasetError, match=r"\S+/d is being written by another process \(it holds \S+\.neuralsim\.lock\)"):
        ShardWriter(tmp_path / "d", fields, resume=True)
    first.close()  # the lock goes with the writer
    ShardWriter(tmp_path / "d", fields, resume=True).close()


def test_the_collect_lock_dies_with_a_killed_process(tmp_path):
    """The lock is an flock: a SIGKILLed writer leaves nothing that blocks --resume."""
    import subprocess

    code = ("import os, signal, gymnasium as gym; from neuralsim.data import ShardWriter; "
            "from neuralsim.actions import space_to_spec; "
            f"w = ShardWriter({str(tmp_path / 'd')!r}, {{'image_size': [8, 8], 'action_spec': "
            "space_to_spec(gym.spaces.Discrete(2)), 'frames_per_step': 1}); os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert (tmp_path / "d" / ".neuralsim.lock").exists()
    import gymnasium as gym

    from neuralsim.actions import space_to_spec
    from neuralsim.data import ShardWriter

    ShardWriter(tmp_path / "d", {"image_size": [8, 8], "action_spec": space_to_spec(gym.spaces.Discrete(2)),
                                 "frames_per_step": 1}, resume=True).close()


def _tamper_start_frames(ckpt: Path, how: str) -> None:
    from safetensors.numpy import load_file, save_file

    file = ckpt / "start_frames.safetensors"
    frames = load_file(file)["frames"]
    n = len(frames)
    if how == "dtype":
        save_file({"frames": frames.astype(np.float32)}, file, metadata={"descriptions": json.dumps([""] * n)})
    elif how == "shape":
        save_file({"frames": np.ascontiguousarray(frames[..., 0])}, file, metadata={"descriptions": json.dumps([""] * n)})
    elif how == "key":
        save_file({"images": frames}, file)
    elif how == "descriptions-json":
        save_file({"frames": frames}, file, metadata={"descriptions": "[not json"})
    elif how == "descriptions-type":
        save_file({"frames": frames}, file, metadata={"descriptions": json.dumps({"a": 1})})
    elif how == "descriptions-length":
        save_file({"frames": frames}, file, metadata={"descriptions": json.dumps(["one"] * (n + 1))})
    elif how == "torn":
        file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


START_FRAME_CASES = [
    ("dtype", r"start_frames\.safetensors: 'frames' must be uint8 \[N, H, W, 3\], got F32 \[\d+, 32, 32, 3\]"),
    ("shape", r"start_frames\.safetensors: 'frames' must be uint8 \[N, H, W, 3\], got U8 \[\d+, 32, 32\]"),
    ("key", r"start_frames\.safetensors has no 'frames' tensor \(it holds \['images'\]\)"),
    ("descriptions-json", r"start_frames\.safetensors: metadata 'descriptions' is not valid JSON"),
    ("descriptions-type", r"start_frames\.safetensors: metadata 'descriptions' must be a JSON list of \d+ strings"),
    ("descriptions-length", r"start_frames\.safetensors: metadata 'descriptions' must be a JSON list of \d+ strings"),
    ("torn", r"start_frames\.safetensors is not a valid safetensors file \(.*\); it may be torn"),
]


@pytest.mark.parametrize("how, match", START_FRAME_CASES, ids=[c[0] for c in START_FRAME_CASES])
def test_tampered_start_frames_name_the_file_and_field(tiny_checkpoint, tmp_path, capsys, how, match):
    """A tampered start_frames.safetensors gave raw safetensors/JSON/numpy errors naming neither file nor field."""
    from neuralsim.cli import main
    from neuralsim.envs import WorldModelEnv

    ckpt = Path(shutil.copytree(tiny_checkpoint, tmp_path / "ckpt"))
    _tamper_start_frames(ckpt, how)
    with pytest.raises(ValueError, match=match):
        WorldModelEnv(str(ckpt))
    with pytest.raises(SystemExit) as exit_info:
        main(["rollout", "--model", str(ckpt), "--out", str(tmp_path / "a.gif"), "--steps", "1", "--denoise-steps", "1"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and re.search("neuralsim rollout: error: .*" + match, err), err
    assert "Traceback" not in err and not (tmp_path / "a.gif").exists()


def test_bench_runs_the_packages_own_benchmark(tmp_path, monkeypatch):
    """`neuralsim bench NAME` ran ./benchmarks/NAME.py of the current directory before the package's own."""
    import subprocess

    import neuralsim
    from neuralsim import cli

    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "throughput.py").write_text("raise SystemExit('the working directory chose the code')\n")
    monkeypatch.chdir(tmp_path)
    ran = []
    monkeypatch.setattr(subprocess, "call", lambda cmd, **kw: ran.append(cmd) or 0)
    assert cli.main(["bench", "throughput", "--quick"]) == 0
    package_bench = Path(neuralsim.__file__).resolve().parent.parent / "benchmarks" / "throughput.py"
    assert ran == [[sys.executable, str(package_bench), "--quick"]]


def test_exported_files_are_as_readable_as_config_json(tiny_checkpoint, tmp_path):
    """Exported weights were 0600 (safetensors' save_file) while config.json was 0644: every file train, the atomic
    writers and the dataset writer leave gets 0666 & ~umask."""
    import os

    import gymnasium as gym

    from neuralsim.actions import space_to_spec
    from neuralsim.checkpoints import atomic_save_safetensors, atomic_write_json
    from neuralsim.data import ShardWriter
    from neuralsim.model import WorldModel
    from neuralsim.train import EMA, export_model

    old = os.umask(0o022)
    try:
        model = WorldModel.from_pretrained(tiny_checkpoint)
        out = tmp_path / "export"
        out.mkdir()
        export_model(model, EMA(dict(model.named_parameters()), 0.99), out)  # what `train` leaves: the EMA weights
        atomic_save_safetensors(tmp_path / "t.safetensors", {"x": __import__("torch").zeros(2)})
        atomic_write_json(tmp_path / "t.json", {})
        _tiny_dataset(tmp_path / "data")
        files = [out / "model.safetensors", out / "config.json", tmp_path / "t.safetensors", tmp_path / "t.json",
                 tmp_path / "data" / "manifest.json", tmp_path / "data" / "shard-000000.safetensors"]
        modes = {str(f.relative_to(tmp_path)): oct(f.stat().st_mode & 0o777) for f in files}
        assert set(modes.values()) == {"0o644"}, modes
    finally:
        os.umask(old)


def test_save_pretrained_weights_are_as_readable_as_config_json(tiny_checkpoint, tmp_path):
    import os

    from neuralsim.model import WorldModel

    old = os.umask(0o022)
    try:
        saved = WorldModel.from_pretrained(tiny_checkpoint).save_pretrained(tmp_path / "saved")
        assert oct((saved / "model.safetensors").stat().st_mode & 0o777) == oct((saved / "config.json").stat().st_mode & 0o777) == "0o644"
    finally:
        os.umask(old)


def test_8_denoise_steps_passed_to_the_model_are_bounded(tiny_checkpoint):
    """#8: a billion Euler steps asked of WorldModel.step directly is refused before any work."""
    import numpy as np
    import torch

    from neuralsim.limits import MAX_DENOISE_STEPS
    from neuralsim.model import WorldModel

    model = WorldModel.from_pretrained(tiny_checkpoint)
    g = torch.Generator().manual_seed(0)
    state = model.init_state(1, frames=np.zeros((1, 1, 32, 32, 3), np.uint8), generator=g)
    with pytest.raises(ValueError, match=f"denoise_steps must be at most {MAX_DENOISE_STEPS}"):
        model.step(state, np.zeros((1, 4), np.float32), generator=g, denoise_steps=10**9)
