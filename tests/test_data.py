"""Dataset format, writer/reader round trip, corruption detection, kill-and-resume, window iterator, collect CLI."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import neuralsim  # noqa: F401  (registers the envs)
from neuralsim import actions as A
from neuralsim.data import (
    Dataset,
    DatasetError,
    ShardWriter,
    collect,
    resize_frame,
)

BOX_SPEC = {"type": "box", "shape": [4], "low": [-1.0] * 4, "high": [1.0] * 4, "dtype": "float32"}
DISCRETE_SPEC = {"type": "discrete", "n": 3, "start": 0}


def collect_cli(argv: list[str]) -> int:
    """``neuralsim collect ARGV`` in this process: its exit code (2 on a user's error)."""
    from neuralsim.cli import main

    try:
        return main(["collect", *argv])
    except SystemExit as exc:
        return exc.code


def synthetic_episode(rng: np.random.Generator, n: int, K: int, spec: dict, size=(8, 6), poses=True) -> dict:
    frames = rng.integers(0, 256, size=(1 + n * K, *size, 3), dtype=np.uint8)
    if spec["type"] == "box":
        actions = rng.uniform(-1, 1, size=(n, 4)).astype(np.float32)
    else:
        actions = rng.integers(0, spec["n"], size=n)
    terminated = np.zeros(n, bool)
    terminated[-1] = rng.random() < 0.5
    return {
        "frames": frames,
        "actions": actions,
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminated": terminated,
        "truncated": ~terminated & (np.arange(n) == n - 1),
        "description": f"episode with {n} steps",
        "poses": rng.normal(size=(1 + n * K, 4, 4)).astype(np.float32) if poses else None,
    }


def write_synthetic(path: Path, lengths=(5, 3, 7, 2, 6), K=2, spec=BOX_SPEC, per_shard=2, poses=True, seed=0) -> list[dict]:
    rng = np.random.default_rng(seed)
    fields = {"env_id": "Synthetic-v0", "env_kwargs": {}, "image_size": [8, 6], "action_spec": spec, "frames_per_step": K,
              "policy": "random", "seed": seed}
    episodes = [synthetic_episode(rng, n, K, spec, poses=poses) for n in lengths]
    with ShardWriter(path, fields, episodes_per_shard=per_shard) as writer:
        for i, ep in enumerate(episodes):
            writer.add_episode(**ep, seed=100 + i)
    return episodes


# ---------------------------------------------------------------------------------------------- format


@pytest.mark.parametrize("spec", [BOX_SPEC, DISCRETE_SPEC])
def test_round_trip(tmp_path, spec):
    episodes = write_synthetic(tmp_path / "d", spec=spec)
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["format"] == "neuralsim-dataset" and manifest["version"] == 1
    assert manifest["episodes"] == 5 and manifest["steps"] == 23 and manifest["frames_per_step"] == 2
    assert [s["file"] for s in manifest["shards"]] == [f"shard-{i:06d}.safetensors" for i in range(3)]
    assert [s["episodes"] for s in manifest["shards"]] == [2, 2, 1]
    for s in manifest["shards"]:
        data = (tmp_path / "d" / s["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == s["sha256"] and len(data) == s["bytes"]
    ds = Dataset(tmp_path / "d")
    assert (ds.num_episodes, ds.num_steps, ds.image_size, ds.frames_per_step) == (5, 23, (8, 6), 2)
    assert ds.action_spec == spec and ds.descriptions == [e["description"] for e in episodes]
    assert ds.seeds == [100, 101, 102, 103, 104]
    for i, ep in enumerate(episodes):
        got = ds.episode(i)
        for key in ("frames", "actions", "rewards", "terminated", "truncated", "poses"):
            np.testing.assert_array_equal(got[key], ep[key])
        assert got["terminated"].dtype == bool
        assert got["actions"].dtype == (np.float32 if spec["type"] == "box" else np.int64)
    assert ds.verify()["episodes"] == 5
    with pytest.raises(IndexError):
        ds.episode(5)


def test_deterministic_safetensors_bytes_load_with_safetensors():
    from safetensors.numpy import load

    from neuralsim.data import safetensors_bytes

    rng = np.random.default_rng(0)
    tensors = {"b": rng.normal(size=(3, 5)).astype(np.float32), "a": rng.integers(0, 255, (2, 3, 3), dtype=np.uint8),
               "c": np.array([True, False]), "d": np.arange(7, dtype=np.int64)}
    data = safetensors_bytes(tensors, {"z": "1", "descriptions": "[]"})
    assert data == safetensors_bytes(dict(reversed(list(tensors.items()))), {"z": "1", "descriptions": "[]"})
    loaded = load(data)
    assert set(loaded) == set(tensors)
    for k, v in tensors.items():
        assert loaded[k].dtype == v.dtype
        np.testing.assert_array_equal(loaded[k], v)


def test_shard_tensors_are_the_documented_ones(tmp_path):
    from safetensors import safe_open

    write_synthetic(tmp_path / "d", lengths=(3, 4), per_shard=4)
    with safe_open(str(tmp_path / "d" / "shard-000000.safetensors"), "np") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        meta = f.metadata()
        assert f.get_tensor("frame_offsets").tolist() == [0, 7, 16]
        assert f.get_tensor("step_offsets").tolist() == [0, 3, 7]
    assert shapes == {"frames": (16, 8, 6, 3), "actions": (7, 4), "rewards": (7,), "terminated": (7,), "truncated": (7,),
                      "frame_offsets": (3,), "step_offsets": (3,), "poses": (16, 4, 4)}
    assert json.loads(meta["descriptions"]) == ["episode with 3 steps", "episode with 4 steps"]
    assert json.loads(meta["seeds"]) == [100, 101]


def test_writer_rejects_bad_episodes(tmp_path):
    rng = np.random.default_rng(0)
    fields = {"image_size": [8, 6], "action_spec": BOX_SPEC, "frames_per_step": 2}
    writer = ShardWriter(tmp_path / "d", fields)
    ep = synthetic_episode(rng, 3, 2, BOX_SPEC)
    with pytest.raises(ValueError, match=r"frames must be uint8 of shape \(7, 8, 6, 3\)"):
        writer.add_episode(**{**ep, "frames": ep["frames"][:-1]})
    with pytest.raises(ValueError, match="out of the action space"):
        writer.add_episode(**{**ep, "actions": ep["actions"] * 3})
    writer.add_episode(**ep)
    with pytest.raises(ValueError, match="poses must be given for every episode of a dataset"):
        writer.add_episode(**{**ep, "poses": None})
    across = ShardWriter(tmp_path / "f", fields, episodes_per_shard=1)
    across.add_episode(**ep)  # written as shard 0, with poses
    with pytest.raises(ValueError, match="this dataset has them"):
        across.add_episode(**{**ep, "poses": None})
    with pytest.raises(ValueError, match="manifest_fields must contain 'frames_per_step'"):
        ShardWriter(tmp_path / "e", {"image_size": [8, 6], "action_spec": BOX_SPEC})


def test_non_empty_dir_needs_resume(tmp_path):
    write_synthetic(tmp_path / "d")
    fields = {"image_size": [8, 6], "action_spec": BOX_SPEC, "frames_per_step": 2}
    with pytest.raises(ValueError, match="not empty.*resume"):
        ShardWriter(tmp_path / "d", fields)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="no manifest.json to resume from"):
        ShardWriter(tmp_path / "other", fields, resume=True)


# ---------------------------------------------------------------------------------------------- corruption


def test_flipped_byte_is_detected_naming_the_file(tmp_path):
    write_synthetic(tmp_path / "d")
    shard = tmp_path / "d" / "shard-000001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF  # inside the tensor data: same size, valid header
    shard.write_bytes(bytes(data))
    ds = Dataset(tmp_path / "d")  # sizes are fine, offsets too
    ds.episode(0)  # shard 0 is intact
    with pytest.raises(DatasetError, match="shard-000001.safetensors is corrupted"):
        ds.episode(2)
    with pytest.raises(DatasetError, match="shard-000001"):
        Dataset(tmp_path / "d").verify()
    with pytest.raises(DatasetError, match="shard-000001"):
        next(Dataset(tmp_path / "d").iter_windows(steps=1, batch_size=64, seed=0))


def test_torn_missing_and_bad_manifest(tmp_path):
    write_synthetic(tmp_path / "d")
    shard = tmp_path / "d" / "shard-000002.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(DatasetError, match="shard-000002.safetensors is torn"):
        Dataset(tmp_path / "d")
    shard.unlink()
    with pytest.raises(DatasetError, match="shard-000002.safetensors.*missing"):
        Dataset(tmp_path / "d")
    (tmp_path / "d" / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetError, match="manifest.json is not valid JSON"):
        Dataset(tmp_path / "d")
    with pytest.raises(DatasetError, match="not a neuralsim dataset"):
        Dataset(tmp_path)
    assert issubclass(DatasetError, ValueError)


# ---------------------------------------------------------------------------------------------- windows


def test_window_iterator_is_deterministic_and_resumable(tmp_path):
    write_synthetic(tmp_path / "d")
    ds = Dataset(tmp_path / "d")
    a = ds.iter_windows(steps=3, batch_size=6, seed=1)
    b = ds.iter_windows(steps=3, batch_size=6, seed=1)
    batches_a = [next(a) for _ in range(5)]
    batches_b = [next(b) for _ in range(5)]
    resumed = next(ds.iter_windows(steps=3, batch_size=6, seed=1, start_index=3))
    other = next(ds.iter_windows(steps=3, batch_size=6, seed=2))
    for x, y in zip(batches_a, batches_b):
        for key in ("frames", "actions", "rewards", "terminated", "poses", "episode", "start"):
            np.testing.assert_array_equal(x[key], y[key])
    for key in ("frames", "episode", "start"):
        np.testing.assert_array_equal(resumed[key], batches_a[3][key])
    assert not (np.array_equal(other["episode"], batches_a[0]["episode"]) and np.array_equal(other["start"], batches_a[0]["start"]))


def test_windows_are_slices_of_long_enough_episodes(tmp_path):
    episodes = write_synthetic(tmp_path / "d", spec=DISCRETE_SPEC)
    ds = Dataset(tmp_path / "d")
    it = ds.iter_windows(steps=4, batch_size=16, seed=0)
    seen = set()
    for _ in range(10):
        batch = next(it)
        assert batch["frames"].shape == (16, 1 + 4 * 2, 8, 6, 3) and batch["frames"].dtype == np.uint8
        assert batch["actions"].shape == (16, 4) and batch["actions"].dtype == np.int64
        assert batch["rewards"].shape == (16, 4) and batch["terminated"].dtype == bool
        assert batch["poses"].shape == (16, 9, 4, 4) and len(batch["descriptions"]) == 16
        for b, (e, t) in enumerate(zip(batch["episode"], batch["start"])):
            ep = episodes[e]
            assert len(ep["rewards"]) >= 4 and 0 <= t <= len(ep["rewards"]) - 4
            np.testing.assert_array_equal(batch["frames"][b], ep["frames"][t * 2 : t * 2 + 9])  # starts at a step boundary
            np.testing.assert_array_equal(batch["actions"][b], ep["actions"][t : t + 4])
            assert batch["descriptions"][b] == ep["description"]
            seen.add((int(e), int(t)))
    valid = {(e, t) for e, ep in enumerate(episodes) for t in range(len(ep["rewards"]) - 3)}
    assert seen == valid  # 160 uniform draws cover all 8 valid windows
    with pytest.raises(DatasetError, match="no episode .* has 8 steps"):
        next(ds.iter_windows(steps=8, batch_size=2, seed=0))
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        next(ds.iter_windows(steps=2, batch_size=0, seed=0))


def test_validate_for(tmp_path):
    write_synthetic(tmp_path / "d")
    ds = Dataset(tmp_path / "d")
    ds.validate_for((8, 6), BOX_SPEC)
    with pytest.raises(DatasetError, match=r"image_size \[8, 6\], the model expects \[64, 64\]"):
        ds.validate_for(64, BOX_SPEC)
    with pytest.raises(DatasetError, match="action_spec"):
        ds.validate_for((8, 6), DISCRETE_SPEC)
    with pytest.raises(DatasetError, match="action_spec"):
        ds.validate_for((8, 6), {**BOX_SPEC, "high": [2.0] * 4})


# ---------------------------------------------------------------------------------------------- collection


def test_resize_frame():
    img = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    out = resize_frame(img, (2, 3))
    expected = img.reshape(2, 2, 3, 2, 3).astype(np.float64).mean(axis=(1, 3))
    np.testing.assert_array_equal(out, np.rint(expected).astype(np.uint8))
    flat = np.full((400, 600, 3), 77, np.uint8)
    assert np.all(resize_frame(flat, (64, 64)) == 77)
    assert resize_frame(img, (4, 6)) is img


def test_resize_modes_keep_or_stretch_the_aspect():
    wide = np.full((20, 40, 3), 200, np.uint8)  # 1:2 frame into a square
    padded = resize_frame(wide, (8, 8), mode="pad")
    assert padded.shape == (8, 8, 3)
    assert np.all(padded[:2] == 0) and np.all(padded[-2:] == 0) and np.all(padded[2:6] == 200)  # black bars top/bottom
    assert np.all(resize_frame(wide, (8, 8), mode="crop") == 200)  # the centre square, nothing black
    assert np.all(resize_frame(wide, (8, 8), mode="squash") == 200)
    tall = np.full((40, 20, 3), 9, np.uint8)
    padded = resize_frame(tall, (8, 8), mode="pad")
    assert np.all(padded[:, :2] == 0) and np.all(padded[:, 2:6] == 9)  # bars left/right
    with pytest.raises(ValueError, match="mode must be one of pad, crop, squash"):
        resize_frame(wide, (8, 8), mode="stretch")


def test_collect_records_the_resize_policy_and_old_manifests_still_load(tmp_path):
    summary = collect("CartPole-v1", tmp_path / "cp", episodes=1, max_steps=3, progress=False)  # 400x600 frames
    assert summary["image_size"] == [64, 64] and summary["native_image_size"] == [400, 600] and summary["resize"] == "pad"
    ds = Dataset(tmp_path / "cp")
    assert ds.resize == "pad" and ds.manifest["resize"] == "pad"
    frame = ds.episode(0)["frames"][0]
    assert frame[:8].max() == 0 and frame[-8:].max() == 0 and frame[24:40].min() > 0  # aspect kept: black bars
    manifest = json.loads((tmp_path / "cp" / "manifest.json").read_text())
    del manifest["resize"], manifest["native_image_size"]  # a dataset written before the fields existed
    (tmp_path / "cp" / "manifest.json").write_text(json.dumps(manifest))
    assert Dataset(tmp_path / "cp").resize == "squash"
    again = collect("CartPole-v1", tmp_path / "cp", episodes=2, max_steps=3, progress=False, resize="squash", resume=True)
    assert again["episodes"] == 2  # an old collection resumes (its frames were squashed)


def test_collect_accepts_module_colon_id(tmp_path, capsys):
    # gym.make's "module:id": the module is imported (registering its envs), then the id is looked up.
    argv = ["--env", "gymnasium.envs.classic_control:CartPole-v1", "--episodes", "1", "--max-steps", "2",
            "--image-size", "32", "--env-kwargs", '{"sutton_barto_reward": true}', "--no-progress"]
    assert collect_cli([*argv, "--out", str(tmp_path / "d")]) == 0
    ds = Dataset(tmp_path / "d")
    assert ds.manifest["env_id"] == "gymnasium.envs.classic_control:CartPole-v1"
    assert ds.manifest["env_kwargs"]["sutton_barto_reward"] is True and ds.image_size == (32, 32)
    assert "stored at 32x32 (--resize pad" in capsys.readouterr().err  # the resize is said, not silent


@pytest.mark.parametrize(
    "env, needles",
    [
        ("NoSuchEnv-v9", ["is not a registered Gymnasium id", "gymnasium says: Environment `NoSuchEnv` doesn't exist",
                          "MODULE:ID"]),
        ("ALE/Breakout-v5", ["Namespace ALE not found", "--env ale_py:ALE/Breakout-v5"]),
        ("no_such_module_xyz:Foo-v0", ["cannot import module 'no_such_module_xyz'"]),
        ("gymnasium:NoSuchEnv-v9", ["importing 'gymnasium' did not register 'NoSuchEnv-v9'"]),
    ],
)
def test_unknown_env_gets_gymnasiums_error_and_a_hint(tmp_path, capsys, monkeypatch, env, needles):
    import gymnasium as gym

    for key in [k for k in gym.registry if k.startswith("ALE/")]:  # as before ale_py is imported (another test may)
        monkeypatch.delitem(gym.registry, key)
    assert collect_cli(["--env", env, "--episodes", "1", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("neuralsim collect: error: --env") and err.count("\n") == 1, err  # one line, no traceback
    assert all(n in err for n in needles), err
    assert not (tmp_path / "d").exists()


def test_env_kwargs_gym_make_refuses_are_one_line(tmp_path, capsys):
    argv = ["--env", "CartPole-v1", "--episodes", "1", "--env-kwargs", '{"no_such_kwarg": 1}', "--out", str(tmp_path / "d")]
    assert collect_cli(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("neuralsim collect: error: gym.make('CartPole-v1', **--env-kwargs) failed") and "no_such_kwarg" in err


def test_cartpole_end_to_end(tmp_path):
    summary = collect("CartPole-v1", tmp_path / "cp", episodes=3, policy="explore", frames_per_step=2, image_size=32,
                      max_steps=15, episodes_per_shard=2, progress=False)
    assert summary["episodes"] == 3 and summary["shards"] == 2 and summary["steps_per_s"] > 0
    ds = Dataset(tmp_path / "cp")
    ds.verify()
    assert ds.manifest["env_kwargs"] == {"render_mode": "rgb_array"} and ds.manifest["policy"] == "explore"
    assert ds.action_spec == {"type": "discrete", "n": 2, "start": 0} and ds.image_size == (32, 32)
    for i in range(3):
        ep = ds.episode(i)
        n = len(ep["rewards"])
        assert ep["frames"].shape == (1 + 2 * n, 32, 32, 3) and ep["description"] == "CartPole-v1"
        assert ep["terminated"][-1] or ep["truncated"][-1]
        assert ep["seed"] == i and ep["frames"].std() > 0
    assert next(ds.iter_windows(steps=2, batch_size=4, seed=0))["frames"].shape == (4, 5, 32, 32, 3)


@pytest.mark.mujoco
def test_room_collect_independent_of_workers(tmp_path):
    kw = dict(episodes=3, max_steps=12, frames_per_step=2, episodes_per_shard=2, progress=False)
    one = collect("NeuralSimRoom-v0", tmp_path / "one", **kw)
    two = collect("NeuralSimRoom-v0", tmp_path / "two", workers=2, **kw)
    assert one["steps"] == two["steps"]
    a, b = Dataset(tmp_path / "one"), Dataset(tmp_path / "two")
    assert a.manifest["shards"] == b.manifest["shards"]  # same bytes, same sha256
    assert a.has_poses and a.episode(0)["poses"].shape == (a.episode(0)["frames"].shape[0], 4, 4)
    assert "target:" in a.descriptions[0] and a.manifest["action_spec"] == A.space_to_spec(
        __import__("gymnasium").spaces.Box(-1.0, 1.0, (4,), np.float32))


@pytest.mark.mujoco
@pytest.mark.parametrize("policy,action_type", [("scripted", "discrete"), ("random", "continuous"), ("explore", "discrete")])
def test_room_policies(tmp_path, policy, action_type):
    collect("NeuralSimRoom-v0", tmp_path / "d", episodes=1, policy=policy, max_steps=150, progress=False,
            env_kwargs={"action_type": action_type})
    ep = Dataset(tmp_path / "d").episode(0)
    assert ep["actions"].dtype == (np.int64 if action_type == "discrete" else np.float32)
    if policy == "scripted":
        assert ep["terminated"][-1] and ep["rewards"].sum() > 10  # reached the target


@pytest.mark.mujoco
@pytest.mark.parametrize("action_type", ["discrete", "continuous"])
def test_the_room_turn_policy_turns_on_the_spot_one_way(tmp_path, action_type):
    collect("NeuralSimRoom-v0", tmp_path / "d", episodes=2, policy="turn", max_steps=45, progress=False,
            env_kwargs={"action_type": action_type}, seed=11)
    data = Dataset(tmp_path / "d")
    for e in range(2):
        poses = data.episode(e)["poses"].astype(np.float64)
        assert np.abs(poses[:, :3, 3] - poses[0, :3, 3]).max() < 1e-4  # one place
        forward = poses[:, :3, 2]
        step = np.degrees(np.diff(np.unwrap(np.arctan2(forward[:, 0], forward[:, 2]))))
        assert np.allclose(np.abs(step), 4.0, atol=1e-3) and len(set(np.sign(step))) == 1  # full speed, one way


def _walk_and_turn_episodes(path, policy: str, episodes: int, action_type: str) -> list[tuple[dict, np.ndarray]]:
    """``episodes`` room episodes of ``policy`` collected into ``path``, each with its actions as camera vectors;
    asserts every action is one of the walk-and-turn key sets (the transfer agents' keys)."""
    from neuralsim import actions as A

    collect("NeuralSimRoom-v0", path, episodes=episodes, policy=policy, max_steps=200, progress=False,
            env_kwargs={"action_type": action_type}, seed=3)
    data = Dataset(path)
    table = A.keysets_to_vectors()
    walk_and_turn = {tuple(v) for v in A.keysets_to_vectors(A.WALK_AND_TURN)}
    out = []
    for e in range(episodes):
        ep = data.episode(e)
        vectors = table[ep["actions"]] if action_type == "discrete" else ep["actions"]
        assert {tuple(v) for v in vectors} <= walk_and_turn  # only the agents' keys
        out.append((ep, vectors))
    return out


@pytest.mark.mujoco
@pytest.mark.parametrize("action_type", ["discrete", "continuous"])
def test_the_room_keys_policy_holds_walk_and_turn_keys_into_the_walls(tmp_path, action_type):
    stopped = 0
    for ep, vectors in _walk_and_turn_episodes(tmp_path / "d", "keys", 3, action_type):
        changes = int((np.abs(np.diff(vectors, axis=0)).sum(axis=1) > 0).sum())
        assert changes < len(vectors) / 10  # held a while (a new draw every 48 steps on average)
        place = ep["poses"][:, :3, 3].astype(np.float64)
        moved = np.linalg.norm(np.diff(place, axis=0), axis=1)  # step t's motion (poses: the first frame's, then each step's)
        stopped += int((moved[vectors[: len(moved), 0] > 0] < 1e-4).sum())
    assert stopped > 0  # somewhere a held w pressed against a wall and the camera stood
    from neuralsim.envs.room_policies import RoomKeysPolicy

    with pytest.raises(ValueError, match="mean_hold must be a number of steps >= 1"):
        RoomKeysPolicy(mean_hold=0.5)


@pytest.mark.mujoco
@pytest.mark.parametrize("action_type", ["discrete", "continuous"])
def test_the_room_seek_policy_reaches_the_target_on_walk_and_turn_keys(tmp_path, action_type):
    pressed, successes = set(), 0
    for ep, vectors in _walk_and_turn_episodes(tmp_path / "d", "seek", 6, action_type):
        pressed |= {tuple(v) for v in vectors}
        successes += bool(ep["terminated"][-1])
    assert successes >= 5  # it heads for the target (straying now and then)
    assert len(pressed) >= 4  # it turns both ways, walks straight and walks turning
    from neuralsim.envs.room_policies import RoomSeekPolicy

    with pytest.raises(ValueError, match="mean_seek must be a number of steps >= 1"):
        RoomSeekPolicy(mean_seek=0)
    with pytest.raises(ValueError, match="aim_deg and turn_deg must satisfy"):
        RoomSeekPolicy(turn_deg=5.0, aim_deg=10.0)


def test_unknown_or_unfit_policies(tmp_path):
    with pytest.raises(ValueError, match="policy must be one of random, sticky, explore, scripted"):
        collect("CartPole-v1", tmp_path / "a", episodes=1, policy="greedy", progress=False)
    with pytest.raises(ValueError, match="policy 'scripted' needs an env that offers one through collection_policies"):
        collect("CartPole-v1", tmp_path / "b", episodes=1, policy="scripted", progress=False)
    with pytest.raises(ValueError, match="policy 'turn' needs an env that offers one through collection_policies"):
        collect("CartPole-v1", tmp_path / "t", episodes=1, policy="turn", progress=False)
    with pytest.raises(ValueError, match="policy 'keys' needs an env that offers one through collection_policies"):
        collect("CartPole-v1", tmp_path / "k", episodes=1, policy="keys", progress=False)
    with pytest.raises(ValueError, match="policy 'seek' needs an env that offers one through collection_policies"):
        collect("CartPole-v1", tmp_path / "e", episodes=1, policy="seek", progress=False)
    sticky = collect("CartPole-v1", tmp_path / "s", episodes=1, max_steps=20, policy="sticky", progress=False)
    assert sticky["collected"] == 1  # any env: uniform actions held for a while
    saved = tmp_path / "policy.safetensors"
    saved.write_bytes(b"")
    with pytest.raises(ValueError, match="is not a saved policy directory"):
        collect("CartPole-v1", tmp_path / "c", episodes=1, policy=str(saved), progress=False)


def test_a_policy_mixture_draws_one_policy_per_episode_whatever_the_workers(tmp_path):
    """`--policy random,sticky`: each episode acts with one of them, drawn from its own (seed, index) generator."""
    from neuralsim.data import MixedPolicy, RandomPolicy, StickyRandomPolicy, make_policy, policy_names

    assert policy_names("explore, scripted,sticky") == ["explore", "scripted", "sticky"]
    assert policy_names("explore") == ["explore"]
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    mixed = make_policy("random,sticky", env)
    assert isinstance(mixed, MixedPolicy) and [type(p) for p in mixed.policies] == [RandomPolicy, StickyRandomPolicy]
    drawn = set()
    for index in range(20):
        mixed.reset(env, np.random.default_rng([0, index]))
        drawn.add(type(mixed.current))
        mixed.act(None, {})
    assert drawn == {RandomPolicy, StickyRandomPolicy}
    env.close()
    kw = dict(episodes=6, policy="random,sticky", max_steps=30, seed=3, progress=False)
    one = collect("CartPole-v1", tmp_path / "one", workers=1, **kw)
    two = collect("CartPole-v1", tmp_path / "two", workers=2, **kw)
    assert one["steps"] == two["steps"]
    a, b = Dataset(tmp_path / "one"), Dataset(tmp_path / "two")
    assert a.manifest["shards"] == b.manifest["shards"] and a.manifest["policy"] == "random,sticky"
    with pytest.raises(ValueError, match="or several of these joined by commas"):
        collect("CartPole-v1", tmp_path / "bad", episodes=1, policy="random,greedy", progress=False)
    with pytest.raises(ValueError, match="policy must be one of"):
        collect("CartPole-v1", tmp_path / "empty", episodes=1, policy="random,", progress=False)


def test_an_env_offers_its_own_collection_policies():
    """Issue 22 #5: make_policy asks env.unwrapped.collection_policies() (POLICY_HOOK); the core imports no env."""
    import gymnasium as gym

    from neuralsim.data import POLICY_HOOK, CollectionPolicy, StickyRandomPolicy, make_policy

    class Mine(CollectionPolicy):
        def act(self, obs, info):
            return self.env.action_space.sample()

    class Offers(gym.Env):
        observation_space = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)
        action_space = gym.spaces.Discrete(2)

        @classmethod
        def collection_policies(cls):
            return {"scripted": Mine}

    env = gym.wrappers.TimeLimit(Offers(), 5)  # asked of env.unwrapped, through wrappers
    assert POLICY_HOOK == "collection_policies"
    assert type(make_policy("scripted", env)) is Mine
    assert type(make_policy("explore", env)) is StickyRandomPolicy  # not offered: the generic fallback


def test_the_collection_hook_lives_below_the_envs_and_the_pipeline():
    """The hook's name and the policies' base class live in neuralsim.hooks (layer 1), which the room's policies and
    collect both import; neuralsim.data and neuralsim.data.collection re-export them."""
    import subprocess
    import sys

    from neuralsim import data, hooks
    from neuralsim.data import collection

    assert data.CollectionPolicy is collection.CollectionPolicy is hooks.CollectionPolicy
    assert data.POLICY_HOOK is collection.POLICY_HOOK is hooks.POLICY_HOOK
    code = ("import sys, neuralsim.hooks; loaded = [m for m in sys.modules if m.startswith('neuralsim.') and "
            "m not in ('neuralsim.hooks', 'neuralsim.envs', 'neuralsim.envs.registration')]; assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------- durability


def test_resume_cleans_leftovers_and_continues(tmp_path):
    out = tmp_path / "d"
    kw = dict(env_id="CartPole-v1", episodes=5, image_size=16, max_steps=6, episodes_per_shard=2, progress=False)
    collect(out=tmp_path / "ref", **kw)
    collect(out=out, **{**kw, "episodes": 4})
    # What a kill leaves: the next shard complete but never listed, and atomic_write's temporaries.
    (out / "shard-000002.safetensors").write_bytes((tmp_path / "ref" / "shard-000002.safetensors").read_bytes())
    (out / ".shard-000002.safetensors.ab12cd_9.tmp").write_bytes(b"torn")
    (out / ".manifest.json.zz0099xy.tmp").write_bytes(b"{")
    # The user's files in the dataset directory (issue 24 #5: they were deleted): never touched.
    users = {"shard-NOTES.md": "notes", "analysis.tmp.csv": "a,b", ".tmp": "x", "shard-000002.safetensors.tmp-123": "y"}
    for name, text in users.items():
        (out / name).write_text(text)
    with pytest.raises(ValueError, match="not empty"):
        collect(out=out, **kw)
    with pytest.raises(ValueError, match="collected with seed=0, got seed=1"):
        collect(out=out, seed=1, resume=True, **kw)
    summary = collect(out=out, resume=True, **kw)
    assert summary["resumed_from"] == 4 and summary["collected"] == 1
    assert sorted(p.name for p in out.iterdir() if ".tmp" in p.name) == sorted(n for n in users if ".tmp" in n)
    assert all((out / name).read_text() == text for name, text in users.items())
    assert Dataset(out).manifest["shards"] == Dataset(tmp_path / "ref").manifest["shards"]


def test_resume_refuses_a_foreign_file_with_a_shard_name(tmp_path):
    """Issue 24 #5: an unlisted `shard-*` that an interrupted collect cannot have written is not deleted."""
    out = tmp_path / "d"
    kw = dict(env_id="CartPole-v1", episodes=3, image_size=16, max_steps=6, episodes_per_shard=2, progress=False)
    collect(out=out, **{**kw, "episodes": 2})
    for name in ("shard-000001.safetensors", "shard-000005.safetensors"):  # not ours / not the pending index
        (out / name).write_bytes(b"the user's")
        with pytest.raises(ValueError, match=rf"resume: .*{name} is not listed in .*manifest.json and is not the shard"):
            collect(out=out, resume=True, **kw)
        assert (out / name).read_bytes() == b"the user's"
        (out / name).unlink()


@pytest.mark.mujoco
def test_sigkill_mid_collection_then_resume(tmp_path):
    out = tmp_path / "d"
    args = ["--env", "NeuralSimRoom-v0", "--episodes", "40", "--max-steps", "25", "--episodes-per-shard", "2", "--seed", "3"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen([sys.executable, "-m", "neuralsim", "collect", *args, "--out", str(out), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 60
    listed = 0
    while time.time() < deadline and proc.poll() is None:
        try:
            listed = len(json.loads((out / "manifest.json").read_text())["shards"])
        except (OSError, ValueError):  # not there yet (written atomically: never half a file)
            listed = 0
        if listed >= 3:
            break
        time.sleep(0.005)
    assert proc.poll() is None, f"collection ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["shards"]) >= 3 and manifest["episodes"] < 40
    for s in manifest["shards"]:  # every listed shard is complete
        assert hashlib.sha256((out / s["file"]).read_bytes()).hexdigest() == s["sha256"]
    kept = {s["file"]: s["sha256"] for s in manifest["shards"]}

    assert collect_cli([*args, "--out", str(out), "--resume", "--no-progress"]) == 0
    resumed = Dataset(out)
    assert resumed.num_episodes == 40 and not [p for p in out.iterdir() if ".tmp" in p.name]
    assert all(s["sha256"] == kept[s["file"]] for s in resumed.manifest["shards"] if s["file"] in kept)
    resumed.verify()
    reference = collect("NeuralSimRoom-v0", tmp_path / "ref", episodes=40, max_steps=25, episodes_per_shard=2, seed=3, progress=False)
    assert reference["episodes"] == 40
    assert resumed.manifest["shards"] == Dataset(tmp_path / "ref").manifest["shards"]  # bit-identical to an uninterrupted run


# ---------------------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize(
    "argv,option",
    [
        (["--episodes", "0"], "--episodes"),
        (["--episodes", "2", "--frames-per-step", "-1"], "--frames-per-step"),
        (["--episodes", "2", "--workers", "0"], "--workers"),
        (["--episodes", "2", "--max-steps", "0"], "--max-steps"),
        (["--episodes", "2", "--image-size", "64x"], "--image-size"),
        (["--episodes", "2", "--policy", "greedy"], "--policy"),
        (["--episodes", "2", "--seed", "-1"], "--seed"),
        (["--episodes", "2", "--env-kwargs", "{bad"], "--env-kwargs"),
        (["--episodes", "2", "--env-kwargs", "[1, 2]"], "--env-kwargs"),
    ],
)
def test_cli_errors_name_the_option(tmp_path, capsys, argv, option):
    assert collect_cli(["--env", "CartPole-v1", "--out", str(tmp_path / "d"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("neuralsim collect: error: ") and option in err
    assert not (tmp_path / "d").exists()  # nothing done


def test_cli_out_errors(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out, needle in ((blocker, "exists and is not a directory"), (blocker / "sub", "cannot be created")):
        assert collect_cli(["--env", "CartPole-v1", "--episodes", "1", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "--out" in err and needle in err
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    assert collect_cli(["--env", "CartPole-v1", "--episodes", "1", "--out", str(full)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert collect_cli(["--env", "NoSuchEnv-v9", "--episodes", "1", "--out", str(tmp_path / "n")]) == 2
    assert "--env 'NoSuchEnv-v9' is not a registered" in capsys.readouterr().err
