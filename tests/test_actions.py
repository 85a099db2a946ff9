"""The key DSL, camera poses and Plücker rays of neuralsim.actions, held against diffusers' SANA-WM cam_utils."""

from __future__ import annotations

import numpy as np
import pytest

from neuralsim import actions as A

VALID = [
    "w-80,jw-40",
    "none-8",
    "NONE-2,w-1",
    " W - 3 ,  a-2 ",
    "wasd-1",
    "ijkl-2",
    "w-3，s-2",  # full-width comma
    "WJ-5",
    "w-007",
    "wwww-2",
    "-5",  # empty key set: idle (cam_utils accepts it too)
    "w-\uff13",  # full-width digit 3: str.isdigit and int() both accept it
    "i-100,l-3",  # pitch beyond the limit
    "d-2\n,\tk-4",
]
INVALID = ["", "   ", "w", "w-0", "w-", "-", "w-3,", ",w-3", "w--3", "w-3.5", "w-+3", "x-3", "nonew-2", "w-3,,s-2", "w-\u00b2", "w_3", "w-3-", "wz-1"]


@pytest.fixture(scope="module")
def cam_utils():
    return pytest.importorskip("diffusers.pipelines.sana_wm.cam_utils")


def _accepts(fn, s):
    try:
        return True, fn(s)
    except ValueError as err:
        return False, str(err)


@pytest.mark.parametrize("s", VALID)
def test_parse_valid(s):
    frames = A.parse_action_string(s)
    assert frames and all(isinstance(f, frozenset) and f <= A.ALLOWED_KEYS for f in frames)


@pytest.mark.parametrize("s", INVALID)
def test_parse_invalid_raises_valueerror_naming_segment(s):
    # "w-²": str.isdigit accepts '²' and int() then fails; rejected as in cam_utils, with a message naming the segment.
    with pytest.raises(ValueError, match="not a decimal integer" if "\u00b2" in s else "action|segment"):
        A.parse_action_string(s)


def test_parse_non_string_is_typeerror():
    with pytest.raises(TypeError, match="action must be a key-DSL string"):
        A.parse_action_string(["w-3"])  # type: ignore[arg-type]


def test_parse_semantics():
    assert A.parse_action_string("w-2,jw-1") == [frozenset("w"), frozenset("w"), frozenset("jw")]
    assert A.parse_action_string("none-2") == [frozenset(), frozenset()]
    np.testing.assert_array_equal(A.action_string_to_vectors("wl-1,ak-1,sdij-1"), [[1, 0, 1, 0], [0, -1, 0, -1], [-1, 1, -1, 1]])
    assert A.vectors_to_action_string(A.action_string_to_vectors("w-3,wl-2,none-1")) == "w-3,wl-2,none-1"
    np.testing.assert_array_equal(A.action_string_to_discrete("w-1,wl-1,none-1"), [1, 10, 0])
    with pytest.raises(ValueError, match="no Discrete action"):
        A.action_string_to_discrete("wd-1")


@pytest.mark.parametrize("s", VALID + INVALID)
def test_same_strings_accepted_and_rejected_as_diffusers(cam_utils, s):
    ours_ok, ours = _accepts(A.parse_action_string, s)
    theirs_ok, theirs = _accepts(cam_utils._parse_action_string, s)
    assert ours_ok == theirs_ok, (s, ours, theirs)
    if ours_ok:
        assert [set(f) for f in ours] == [set(f) for f in theirs]


def test_fuzz_against_diffusers(cam_utils):
    rng = np.random.default_rng(0)
    keys = list("wasdijklWJ") + ["none", "", "x", "-", " "]
    durations = ["1", "12", "0", "", "-1", "3.5", "\uff17", " 4", "x"]
    joins = [",", ",", ",", "，", ",,", " , ", ""]
    accepted = 0
    for _ in range(1500):
        s = ""
        for j in range(int(rng.integers(1, 4))):
            s += (rng.choice(joins) if j else "") + "".join(rng.choice(keys, size=int(rng.integers(0, 3)))) + "-" * int(rng.random() < 0.9)
            s += rng.choice(durations)
        if rng.random() < 0.1:  # random corruption
            i = int(rng.integers(len(s) + 1))
            s = s[:i] + str(rng.choice(list("-,x9 "))) + s[i:]
        ours_ok, ours = _accepts(A.parse_action_string, s)
        theirs_ok, theirs = _accepts(cam_utils._parse_action_string, s)
        assert ours_ok == theirs_ok, s
        if ours_ok:
            accepted += 1
            assert [set(f) for f in ours] == [set(f) for f in theirs], s
    assert 200 < accepted < 1300  # the fuzz reaches both branches


@pytest.mark.parametrize(
    "s,kw",
    [
        ("w-80,jw-40", {}),
        ("wasd-3,ijkl-2,i-20,l-30,wd-10,sa-5", {}),
        ("i-100,w-5,k-200,jd-7", {}),  # pitch clamped at both limits
        ("wl-20,ik-3,ws-2,none-4", {"translation_speed": 0.3, "rotation_speed_deg": 7.5, "pitch_limit_deg": 30.0}),
    ],
)
def test_poses_match_diffusers(cam_utils, s, kw):
    ours = A.action_string_to_c2w(s, **kw)
    theirs = cam_utils.action_string_to_c2w(s, **kw)
    assert ours.shape == theirs.shape == (len(A.parse_action_string(s)) + 1, 4, 4)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_integrator_scales_with_action_magnitude():
    full = A.CameraIntegrator(translation_speed=0.1, rotation_speed_deg=4.0)
    half = A.CameraIntegrator(translation_speed=0.1, rotation_speed_deg=4.0)
    p_full = full.step([1, 0, 0, 0])
    p_half = half.step([0.5, 0, 0, 0])
    np.testing.assert_allclose(p_half[:3, 3], 0.5 * p_full[:3, 3])
    np.testing.assert_allclose(p_full[:3, 3], [0, 0, 0.1])  # +Z is forward (OpenCV)


def test_plucker_rays_match_diffusers(cam_utils):
    torch = pytest.importorskip("torch")
    poses = A.action_string_to_c2w("wl-5,ik-3,d-4", translation_speed=0.2, rotation_speed_deg=9.0)
    intrinsics = np.tile(np.array([[30.0, 28.0, 16.0, 11.5]]), (len(poses), 1))
    ours = A.plucker_rays(intrinsics, poses, 23, 32)
    theirs = cam_utils.compute_raymap(torch.from_numpy(intrinsics), torch.from_numpy(poses.astype(np.float64)), 23, 32, use_plucker=True)
    assert ours.shape == (len(poses), 23, 32, 6) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-5)


def test_camera_vector_form():
    pose = A.action_string_to_c2w("wl-3")[-1]
    vec = A.pose_to_camera_vector(pose, [50.0, 50.0, 32.0, 32.0])
    assert vec.shape == (20,) and vec.dtype == np.float32
    np.testing.assert_array_equal(vec[:16].reshape(4, 4), pose)


def test_space_specs_round_trip_and_validation():
    from gymnasium import spaces

    box = spaces.Box(-1.0, 1.0, (4,), np.float32)
    for space in (box, spaces.Discrete(11), spaces.Discrete(3, start=1)):
        spec = A.space_to_spec(space)
        assert A.spec_to_space(spec) == space
    spec = A.space_to_spec(box)
    assert A.validate_actions(np.zeros(4), spec).shape == (1, 4)
    with pytest.raises(ValueError, match="actions must have shape"):
        A.validate_actions(np.zeros(3), spec)
    with pytest.raises(ValueError, match="out of the action space"):
        A.validate_actions(np.full((2, 4), 2.0), spec)
    with pytest.raises(ValueError, match=r"in \[0, 11\)"):
        A.validate_actions([11], A.space_to_spec(spaces.Discrete(11)))
    with pytest.raises(ValueError, match="not supported"):
        A.space_to_spec(spaces.MultiBinary(3))


def test_one_space_schema_for_checkpoints_datasets_and_policies():
    """Issue 22 #6: one writer and one reader of stored spaces; ``policy.json`` only stores uniform bounds once."""
    from gymnasium import spaces

    from neuralsim import policy

    image = spaces.Box(0, 255, (8, 8, 3), np.uint8)
    compact = A.space_to_spec(image, compact=True)
    assert compact["low"] == 0.0 and compact["high"] == 255.0 and len(A.space_to_spec(image)["low"]) == 192
    assert A.spec_to_space(compact) == A.spec_to_space(A.space_to_spec(image)) == image
    assert policy.space_from_json is A.spec_to_space and policy.space_to_json(image) == compact
    box = A.space_to_spec(spaces.Box(-1.0, 1.0, (4,), np.float32), compact=True)
    assert A.validate_actions(np.full(4, 0.5), box).shape == (1, 4)
    with pytest.raises(ValueError, match="out of the action space"):
        A.validate_actions(np.full(4, 2.0), box)
    with pytest.raises(ValueError, match=r"action_spec\.shape must be"):
        A.spec_to_space({"type": "box", "shape": [-1], "low": 0, "high": 1})


@pytest.mark.parametrize("s", ["w-100000000", "w-60000,s-60000", "w-" + "9" * 5000, "w-1," * 3 + "none-99999"])
def test_key_dsl_bomb_is_refused_before_expanding(s):
    """Issue 24 #7: 'w-100000000' expanded to one object per frame (~35 GB or a bare MemoryError)."""
    import time

    t = time.perf_counter()
    with pytest.raises(ValueError, match=r"more than MAX_ACTION_FRAMES=100000 frames .*split the rollout"):
        A.parse_action_string(s)
    assert time.perf_counter() - t < 0.5
    assert len(A.parse_action_string(f"w-{A.MAX_ACTION_FRAMES - 1},s-1")) == A.MAX_ACTION_FRAMES  # the bound itself is fine


def test_one_key_dsl_to_step_actions_converter():
    """Issue 22 #6: the key DSL -> per-step actions lives in neuralsim.actions; rollout and the env call it."""
    from gymnasium import spaces

    from neuralsim import rollout

    box, discrete = A.space_to_spec(spaces.Box(-1, 1, (4,), np.float32)), A.space_to_spec(spaces.Discrete(11))
    np.testing.assert_array_equal(A.action_string_to_actions("w-4,l-4", box, 2),
                                  [[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0]])
    assert A.action_string_to_actions("wj-2,none-2", discrete, 2).tolist() == [9, 0]
    with pytest.raises(ValueError, match="needs a camera world"):
        A.action_string_to_actions("w-1", A.space_to_spec(spaces.Box(-1, 1, (3,), np.float32)))
    assert rollout.actions_from_string is A.action_string_to_actions


def test_the_camera_math_is_written_once():
    """Issue 22 #6: neuralsim.camera holds the poses and rays; the model, the one-camera integrator and the key DSL's
    poses all step the same batched function; neuralsim.actions stays free of torch (the room imports it)."""
    import subprocess
    import sys

    import torch

    from neuralsim import camera, model

    assert A.CameraIntegrator is camera.CameraIntegrator and A.plucker_rays is camera.plucker_rays
    assert model.camera_step is camera.camera_step and model.plucker_rays_torch is camera.plucker_rays_torch
    assert model.rotation_warp_grid is camera.rotation_warp_grid and model.camera_intrinsics is camera.camera_intrinsics
    actions = np.random.default_rng(0).uniform(-1, 1, (30, 4))
    cam, c2w, pitch = camera.CameraIntegrator(0.1, 5.0), torch.eye(4, dtype=torch.float64)[None], torch.zeros(1, dtype=torch.float64)
    for a in actions:
        c2w, pitch = camera.camera_step(c2w, pitch, torch.from_numpy(a)[None], translation_speed=0.1, rotation_speed_deg=5.0)
        assert np.array_equal(cam.step(a), c2w[0].numpy()) and cam.pitch == float(pitch[0])  # bit for bit
    code = "import sys, neuralsim.actions; assert 'torch' not in sys.modules, 'neuralsim.actions imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_one_key_set_to_camera_action_table():
    """Issue 22: the Discrete index -> camera action table is built in neuralsim.actions only; the room, its policies,
    the official backend and the key-set wrappers read it there."""
    table = A.keysets_to_vectors()
    assert table.shape == (len(A.DISCRETE_KEYSETS), A.CAMERA_ACTION_DIM) and table.dtype == np.float32
    assert all(np.array_equal(row, A.keys_to_vector(k)) for row, k in zip(table, A.DISCRETE_KEYSETS))
    table[0] = 7  # a new array each call: a caller's edit reaches no one else
    assert not A.keysets_to_vectors()[0].any()
    assert np.array_equal(A.discrete_to_vectors(np.array([3, 0, 10])), A.keysets_to_vectors()[[3, 0, 10]])
    assert np.array_equal(A.discrete_to_vectors(np.array([5, 6]), start=5), A.keysets_to_vectors()[[0, 1]])
    assert np.array_equal(A.keysets_to_vectors(["wl", frozenset("s")]), [A.keys_to_vector("wl"), A.keys_to_vector("s")])
    index = A.keyset_index()
    assert [index[frozenset(k)] for k in A.DISCRETE_KEYSETS] == list(range(len(A.DISCRETE_KEYSETS)))
    assert A.keyset_index(("w", "lw")) == {frozenset("w"): 0, frozenset("wl"): 1}
    assert np.array_equal(A.action_string_to_discrete("wl-2,none-1"), [index[frozenset("wl")]] * 2 + [0])
