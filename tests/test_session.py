"""``neuralsim.session``: one dream session over both model families (issue 22 #1, #2).

The native tiny model and the tiny random official SANA-WM serve the same session: start from an image, a prompt
or the start set, step with actions or the key DSL, decode, heads, seeding, partial-reset merges, and errors that
name the argument. ``neuralsim rollout`` and ``neuralsim play`` serve the official model through it.
"""

from __future__ import annotations

import contextlib
import json
from unittest import mock

import numpy as np
import pytest
import torch

from conftest import TINY_FRAMES_PER_STEP, make_tiny_model, tiny_sana_components
from neuralsim.decoding import DecodeProcess
from neuralsim.model import WorldModel, WorldState
from neuralsim.session import DreamModel, DreamSession, DreamState, StartInputs

K = TINY_FRAMES_PER_STEP
SANA_H, SANA_W = 64, 96


@pytest.fixture(scope="module")
def session(tiny_checkpoint) -> DreamSession:
    return DreamSession(str(tiny_checkpoint), dtype="float32")


def _image(seed: int = 0, size: tuple[int, int] = (32, 32), batch: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, 1, *size, 3), dtype=np.uint8)


def _run(session: DreamSession, seed: int, actions: np.ndarray, **start) -> tuple[np.ndarray, np.ndarray]:
    g = session.generator(seed)
    state, _, _ = session.start(1, g, **start)
    frames, rewards = [], []
    for a in actions:
        out = session.step(state, a[None], g)
        state = out.state
        frames.append(out.frames)
        rewards.append(out.reward)
    return np.concatenate(frames, 1), np.concatenate(rewards)


# ------------------------------------------------------------------------------------------------ native


def test_native_model_implements_the_protocol(session, tiny_checkpoint):
    assert isinstance(session.model, WorldModel) and isinstance(session.model, DreamModel)
    assert session.model_name == str(tiny_checkpoint) and session.checkpoint_dir == tiny_checkpoint
    assert session.frames_per_step == K and session.image_size == (32, 32) and len(session.start_frames) == 3
    assert session.latent_shape == session.model.latent_shape and session.action_space.shape == (4,)
    g = session.generator(0)
    state, rgb, info = session.start(1, g, image=_image())
    assert isinstance(state, DreamState) and state.latent.shape == (1, *session.latent_shape)
    assert np.array_equal(rgb, _image()[:, 0]) and info["start_index"].tolist() == [-1] and info["prompt"] == [""]


def test_native_start_step_decode_heads(session):
    g = session.generator(0)
    state, rgb, info = session.start(2, g, image=_image(batch=2), prompt=["a red ball", "a green box"])
    assert rgb.shape == (2, 32, 32, 3) and info["prompt"] == ["a red ball", "a green box"]
    out = session.step(state, np.zeros((2, 4), np.float32), g)
    assert out.frames.shape == (2, K, 32, 32, 3) and out.frames.dtype == np.uint8
    assert out.latent.shape == (2, *session.latent_shape)
    assert out.reward.dtype == np.float32 and out.reward.shape == (2,) and out.termination_prob.shape == (2,)
    reward, term = session.model.predict_reward_termination(out.state)
    assert np.array_equal(out.reward, reward.numpy()) and np.array_equal(out.termination_prob, term.numpy())
    assert np.array_equal(session.decode(out.latent[:, None], first_frame=False, context=out.state), out.frames)
    quiet = session.step(state, np.zeros((2, 4), np.float32), session.generator(0), decode=False)
    assert quiet.frames is None and quiet.latent.shape == out.latent.shape


def test_native_key_dsl_equals_its_actions(session):
    actions = session.keys_to_actions("w-4,l-2")
    assert actions.shape == (3, 4) and actions[0].tolist() == [1, 0, 0, 0] and actions[2].tolist() == [0, 0, 1, 0]
    a, _ = _run(session, 3, actions, image=_image())
    b, _ = _run(session, 3, np.array([[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0]], np.float32), image=_image())
    assert a.shape == (1, 3 * K, 32, 32, 3) and np.array_equal(a, b)


def test_native_same_seed_same_dream(session):
    actions = session.keys_to_actions("w-2,jw-2")
    a, ra = _run(session, 7, actions, image=_image(1))
    b, rb = _run(session, 7, actions, image=_image(1))
    c, _ = _run(session, 8, actions, image=_image(1))
    assert np.array_equal(a, b) and np.array_equal(ra, rb) and not np.array_equal(a, c)


def test_native_starts_from_the_start_set_and_from_a_prompt(session):
    state, rgb, info = session.start(4, session.generator(0), rng=np.random.default_rng(0))
    index = np.random.default_rng(0).integers(0, 3, size=4)
    assert np.array_equal(info["start_index"], index) and np.array_equal(rgb, session.start_frames[index])
    assert info["prompt"] == [session.start_descriptions[i] for i in index]
    state, rgb, info = session.start(1, session.generator(0), prompt="a red ball")  # generated first frame
    again = session.start(1, session.generator(0), prompt="a red ball")[1]
    assert rgb.shape == (1, 32, 32, 3) and np.array_equal(rgb, again) and info["start_index"][0] == -1


def test_native_context_clip_and_latents(session):
    clip = np.random.default_rng(2).integers(0, 256, (1 + 2 * K, 32, 32, 3), dtype=np.uint8)
    actions = np.zeros((2, 4), np.float32)
    a, _, _ = session.start(1, session.generator(0), image=clip, actions=actions)
    b = session.model.init_state(1, frames=clip[None], actions=actions[None], generator=session.generator(0))
    assert torch.equal(a.latent, b.latent) and torch.equal(a.reward, b.reward)
    latents = session.model.encode(clip[None, :1])
    c, rgb, _ = session.start(1, session.generator(0), latents=latents)
    d, _, _ = session.start(1, session.generator(0), image=clip[:1])
    assert rgb is None and torch.equal(c.latent, d.latent)


def test_partial_reset_merges_only_the_masked_rows(session):
    state, _, _ = session.start(3, session.generator(0), image=_image(0, batch=3))
    fresh, _, _ = session.start(1, session.generator(1), image=_image(9))
    mask = np.array([False, True, False])
    merged = session.merge(state, mask, fresh)
    assert isinstance(merged, WorldState) and merged.batch_size == 3
    assert torch.equal(merged.latent[1], fresh.latent[0])
    assert torch.equal(merged.latent[[0, 2]], state.latent[[0, 2]])
    assert torch.equal(merged.cache[0]["S"][[0, 2]], state.cache[0]["S"][[0, 2]])
    assert session.merge(state, np.ones(3, bool), state) is state  # a full reset is the fresh state


def _stepped(session: DreamSession, state, actions: np.ndarray, g: torch.Generator) -> tuple:
    """``actions [B, T, ...]`` stepped one at a time: frames, rewards, terminations, latents and the last state."""
    frames, rewards, terms, latents = [], [], [], []
    for t in range(actions.shape[1]):
        out = session.step(state, actions[:, t], g)
        state = out.state
        frames.append(out.frames), rewards.append(out.reward), terms.append(out.termination_prob)
        latents.append(out.latent)
    return np.concatenate(frames, 1), np.stack(rewards, 1), np.stack(terms, 1), torch.stack(latents, 1), state


def _child_ready_after(calls: int):
    """``overlap="process"``'s child counts as not ready for the first ``calls`` questions, then is waited for
    (unpatched, it is ready when it is: 2-4 s, more than a test's rollout)."""
    real, asked = DecodeProcess.ready, []

    def ready(self, timeout: float = 0.0) -> bool:
        asked.append(1)
        return False if len(asked) <= calls else real(self, timeout=120)

    return mock.patch.object(DecodeProcess, "ready", ready)


def _assert_rollout_is_stepping(session: DreamSession, state, actions: np.ndarray, seed: int,
                                overlaps: tuple = (True, False, "process")) -> None:
    """Each overlap gives what stepping gives; ``"process"`` four ways: every step shown in the child, none (never
    ready), shared (one step sent ahead, the rest shown here from the end), and as it comes."""
    frames, rewards, terms, latents, last = _stepped(session, state, actions, session.generator(seed))
    ways = ((0, 10**6), (10**9, 4), (1, 1), (None, 4))  # (questions before the child is ready, session._CHILD_QUEUE)
    runs = [(o, *w) for o in overlaps for w in (ways if o == "process" else ((None, 4),))]
    for overlap, not_ready, queued in runs:
        g = session.generator(seed)
        with _child_ready_after(not_ready) if not_ready is not None else contextlib.nullcontext(), \
                mock.patch("neuralsim.session._CHILD_QUEUE", queued):
            out = session.rollout(state, actions, g, overlap=overlap)
        assert np.array_equal(out.frames, frames) and np.array_equal(out.rewards, rewards)
        assert np.array_equal(out.termination_prob, terms) and torch.equal(out.latents, latents)
        assert torch.equal(out.state.latent, last.latent)
        assert [torch.equal(a, b) for a, b in zip(session.model.predict_reward_termination(out.state),
                                                  session.model.predict_reward_termination(last))] == [True, True]
    g1, g2 = session.generator(seed), session.generator(seed)
    session.rollout(state, actions, g1)
    _stepped(session, state, actions, g2)
    assert torch.equal(g1.get_state(), g2.get_state())  # the same noise drawn: a caller's generator goes on alike
    session.close()


def test_native_rollout_is_stepping_bit_for_bit(session):
    """``rollout`` decodes on a second thread or in a child process while the dynamics goes on: every output is what
    ``step`` gives."""
    state, _, _ = session.start(2, session.generator(0), image=_image(0, batch=2))
    actions = np.stack([session.keys_to_actions("w-2,jw-2,l-1"), session.keys_to_actions("s-1,a-2,i-2")])
    _assert_rollout_is_stepping(session, state, actions, seed=5)
    quiet = session.rollout(state, actions, session.generator(5), decode=False)
    T = actions.shape[1]
    assert quiet.frames is None and quiet.rewards.shape == (2, T) and quiet.latents.shape == (2, T, *session.latent_shape)


def test_rollout_decodes_under_the_callers_autocast(session):
    """A caller's own autocast (a benchmark's precision) is per thread: the decoding thread runs under it too."""
    state, _, _ = session.start(1, session.generator(0), image=_image())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _assert_rollout_is_stepping(session, state, session.keys_to_actions("w-2,l-2")[None], seed=1)


def test_a_bf16_sessions_rollout_decodes_in_bf16_in_the_process_too(tiny_checkpoint):
    """The session's own autocast holds in the decoding process as around `step`'s decode."""
    session = DreamSession(str(tiny_checkpoint), dtype="bfloat16")
    state, _, _ = session.start(1, session.generator(0), image=_image())
    _assert_rollout_is_stepping(session, state, session.keys_to_actions("w-2,l-2")[None], seed=4,
                                overlaps=("process",))


def test_default_model_rollout_is_stepping_bit_for_bit():
    """The shipped model decodes through its frame memory and judges each frame with its termination detector."""
    session = DreamSession("default", dtype="float32")
    assert session.judges_frames and session.model.frame_memory is not None
    state, _, _ = session.start(1, session.generator(0), rng=np.random.default_rng(0))
    _assert_rollout_is_stepping(session, state, session.keys_to_actions("w-3,jw-3,l-3")[None], seed=2)


@pytest.mark.parametrize("overlap", [True, False])
def test_rollout_raises_what_the_decoding_raises(tiny_checkpoint, overlap):
    """A decode that fails on the second thread fails the rollout (as `step` would), naming the cause."""
    session = DreamSession(str(tiny_checkpoint), dtype="float32")
    state, _, _ = session.start(1, session.generator(0), image=_image())
    decode, calls = session.model.decode, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise FloatingPointError("the autoencoder produced non-finite pixels")
        return decode(*args, **kwargs)

    session.model.decode = failing
    with pytest.raises(FloatingPointError, match="non-finite pixels"):
        session.rollout(state, np.zeros((1, 4, 4), np.float32), session.generator(0), overlap=overlap)


def test_rollout_in_a_process_raises_what_the_decoding_raises_and_decodes_with_the_weights_of_each_rollout(
        tiny_checkpoint):
    """The child process decodes with the weights the model has at each rollout: corrupted decoder weights fail the
    rollout with the decoder's own error; mended, the next rollout (in a new child) is stepping again."""
    session = DreamSession(str(tiny_checkpoint), dtype="float32")
    state, _, _ = session.start(1, session.generator(0), image=_image())
    actions = np.zeros((1, 3, 4), np.float32)
    decoder = dict(session.model.autoencoder.decoder.named_parameters())
    name, weight = next(iter(decoder.items()))
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.fill_(float("nan"))
    try:
        with pytest.raises(FloatingPointError, match="non-finite pixels.*in the decoding process"), \
                _child_ready_after(0), mock.patch("neuralsim.session._CHILD_QUEUE", 10**6):
            session.rollout(state, actions, session.generator(0), overlap="process")
        assert session._decoder is None  # closed: its answers to the later steps must not reach the next rollout
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    _assert_rollout_is_stepping(session, state, actions, seed=0, overlaps=("process",))


def test_rollout_in_a_process_starts_a_new_child_when_the_last_one_died(session):
    state, _, _ = session.start(1, session.generator(0), image=_image())
    actions = session.keys_to_actions("w-2")[None]
    with _child_ready_after(0), mock.patch("neuralsim.session._CHILD_QUEUE", 10**6):
        first = session.rollout(state, actions, session.generator(1), overlap="process")
        session._decoder._process.kill()
        session._decoder._process.wait()
        again = session.rollout(state, actions, session.generator(1), overlap="process")
    assert np.array_equal(first.frames, again.frames)
    session.close()
    session.close()  # idempotent
    assert session._decoder is None


@pytest.mark.parametrize("overlap", ["processes", 1, None, np.bool_(True)])
def test_rollout_refuses_an_unknown_overlap(session, overlap):
    state, _, _ = session.start(1, session.generator(0), image=_image())
    with pytest.raises(ValueError, match='overlap must be True, False, "thread" or "process"'):
        session.rollout(state, session.keys_to_actions("w-1")[None], session.generator(0), overlap=overlap)


@pytest.mark.parametrize("actions, match", [
    (np.zeros((1, 4), np.float32), r"actions must be \[B, T, A\] \(Box\) with B = 1 rows and T >= 1"),
    (np.zeros((2, 3, 4), np.float32), r"with B = 1 rows"),
    (np.zeros((1, 0, 4), np.float32), r"T >= 1"),
    (np.full((1, 3, 4), 2.0, np.float32), r"actions\[:, 0\]"),
])
def test_rollout_bad_actions_name_the_argument(session, actions, match):
    state, _, _ = session.start(1, session.generator(0), image=_image())
    with pytest.raises(ValueError, match=match):
        session.rollout(state, actions, session.generator(0))


@pytest.mark.parametrize("call, error, match", [
    (lambda s: s.start(1, s.generator(0), image=_image().astype(np.float32)), TypeError, "image must have dtype uint8"),
    (lambda s: s.start(1, s.generator(0), image=_image(size=(16, 16))), ValueError, r"image has size \(16, 16\)"),
    (lambda s: s.start(2, s.generator(0), image=_image(batch=3)), ValueError, r"image must be \(H, W, 3\)"),
    (lambda s: s.start(1, s.generator(0), prompt=3), TypeError, "prompt must be a str"),
    (lambda s: s.start(1, s.generator(0), image=_image(), actions=np.zeros((1, 4))), ValueError, "actions are the"),
    (lambda s: s.start(1, s.generator(0)), ValueError, "rng="),
    (lambda s: s.step(s.start(1, s.generator(0), image=_image())[0], np.zeros((1, 3)), s.generator(0)),
     ValueError, "actions"),
    (lambda s: s.step(s.start(1, s.generator(0), image=_image())[0], "w-2", s.generator(0)), TypeError, "key-DSL"),
    (lambda s: s.step(s.start(1, s.generator(0), image=_image())[0], np.zeros((1, 4)), s.generator(0), denoise_steps=0),
     ValueError, "denoise_steps"),
])
def test_bad_input_names_the_argument(session, call, error, match):
    with pytest.raises(error, match=match):
        call(session)


def test_bad_construction_names_the_argument(tiny_checkpoint):
    with pytest.raises(TypeError, match="model must be"):
        DreamSession(3.5)
    with pytest.raises(ValueError, match="denoise_steps"):
        DreamSession(str(tiny_checkpoint), denoise_steps=0)
    with pytest.raises(ValueError, match="device"):
        DreamSession(str(tiny_checkpoint), device="gpu!")
    with pytest.raises(ValueError, match="checkpoint= is only for"):
        DreamSession(str(tiny_checkpoint), checkpoint=str(tiny_checkpoint))
    with pytest.raises(ValueError, match="known models"):
        DreamSession("no-such-model")


def test_an_instance_is_served_where_it_is():
    model = make_tiny_model()
    session = DreamSession(model, dtype="float32")
    assert session.model is model and session.model_name == "WorldModel" and session.checkpoint_dir is None
    assert len(session.start_frames) == 0 and session.resize_mode == "squash"
    assert StartInputs().image is None


# ------------------------------------------------------------------------------------------------ official


@pytest.fixture(scope="module")
def sana_parts() -> dict:
    for module in ("diffusers", "transformers", "tokenizers"):
        pytest.importorskip(module)
    return tiny_sana_components()


@pytest.fixture(scope="module")
def official(sana_parts) -> DreamSession:
    from neuralsim.sana_wm import SanaWMBackend

    backend = SanaWMBackend(**sana_parts, image_size=(SANA_H, SANA_W), intrinsics=(48.0, 48.0, 48.0, 32.0),
                            denoise_steps=1, guidance_scale=1.0, max_sequence_length=16)
    return DreamSession(backend, dtype="float32")


@pytest.mark.sana
def test_official_model_implements_the_protocol(official):
    from neuralsim.sana_wm import SanaWMState

    model = official.model
    assert isinstance(model, DreamModel) and official.model_name == "sana-wm-2.6b"
    assert official.frames_per_step == 8 and official.image_size == (SANA_H, SANA_W)
    assert official.action_spec["type"] == "discrete" and official.latent_shape == (16, 2, 3)
    assert official.resize_mode == "squash" and model.text_conditioned and not model.can_generate_start
    state, rgb, _ = official.start(1, official.generator(0), image=_image(0, (SANA_H, SANA_W)), prompt="a red ball")
    assert isinstance(state, SanaWMState) and isinstance(state, DreamState)
    assert state.latent.shape == (1, 16, 2, 3) and torch.equal(state.latent, state.latents[:, :, -1])
    assert torch.equal(model.encode(_image(0, (SANA_H, SANA_W)))[:, 0], state.latent)  # one layout: [B, T, C, h, w]


@pytest.mark.sana
def test_official_step_decode_heads_and_key_dsl(official):
    image = _image(0, (SANA_H, SANA_W))
    actions = official.keys_to_actions("w-8,wl-8")
    assert actions.tolist() == [1, 10]  # key-set indices, one per step of 8 frames
    a, rewards = _run(official, 0, actions, image=image, prompt="a red ball")
    b, _ = _run(official, 0, np.array([1, 10]), image=image, prompt="a red ball")
    c, _ = _run(official, 1, actions, image=image, prompt="a red ball")
    assert a.shape == (1, 16, SANA_H, SANA_W, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c) and not rewards.any()
    g = official.generator(0)
    state, _, _ = official.start(1, g, image=image, prompt="a red ball")
    out = official.step(state, np.array([1]), g)
    assert np.array_equal(official.decode(out.latent[:, None], first_frame=False, context=out.state), out.frames)
    assert official.decode(out.latent[:, None]).shape == (1, 1, SANA_H, SANA_W, 3)  # alone: a clip's first frame


@pytest.mark.sana
def test_official_rollout_is_stepping_bit_for_bit(official):
    state, _, _ = official.start(1, official.generator(0), image=_image(0, (SANA_H, SANA_W)), prompt="a red ball")
    _assert_rollout_is_stepping(official, state, official.keys_to_actions("w-8,wl-8")[None], seed=3,
                                overlaps=(True, False))
    with pytest.raises(ValueError, match='overlap="process" is for a native WorldModel on the CPU'):
        official.rollout(state, official.keys_to_actions("w-1")[None], official.generator(0), overlap="process")


@pytest.mark.sana
def test_official_context_clip_takes_per_step_actions(official):
    """Key sets become camera motion inside sana_wm.py: per-step indices equal the DSL string they stand for."""
    clip = np.random.default_rng(1).integers(0, 256, (17, SANA_H, SANA_W, 3), dtype=np.uint8)
    a, _, _ = official.start(1, official.generator(0), image=clip, actions=np.array([1, 6]))
    b = official.model.init_state(1, frames=clip[None], actions="w-8,l-8")
    assert torch.equal(a.raymap, b.raymap) and np.array_equal(a.c2w, b.c2w) and torch.equal(a.latents, b.latents)


@pytest.mark.sana
def test_official_merge_and_start_errors(official):
    state, _, _ = official.start(2, official.generator(0), image=_image(0, (SANA_H, SANA_W), batch=2))
    assert official.merge(state, np.ones(2, bool), state) is state
    with pytest.raises(NotImplementedError, match="cannot reset some envs"):
        official.merge(state, np.array([True, False]), state)
    with pytest.raises(ValueError, match="needs a start frame"):
        official.start(1, official.generator(0), rng=np.random.default_rng(0))


@pytest.fixture(scope="module")
def official_dir(sana_parts, tmp_path_factory):
    """The tiny random pipeline saved in diffusers format (what `--checkpoint DIR` loads)."""
    from diffusers import SanaWMPipeline

    path = tmp_path_factory.mktemp("sana") / "tiny-sana-wm"
    SanaWMPipeline(**sana_parts).save_pretrained(path, safe_serialization=True)
    return path


@pytest.mark.sana
def test_rollout_cli_serves_the_official_model(official_dir, tmp_path, monkeypatch, capsys):
    import imageio.v3 as iio

    from neuralsim import sana_wm
    from neuralsim.cli import main
    from neuralsim.data import Dataset

    monkeypatch.setattr(sana_wm, "DEFAULT_IMAGE_SIZE", (SANA_H, SANA_W))  # the release's 704x1280 is slow on a CPU
    iio.imwrite(tmp_path / "start.png", _image(3, (SANA_H, SANA_W))[0, 0])
    args = ["rollout", "--model", "sana-wm-2.6b", "--checkpoint", str(official_dir), "--image", str(tmp_path / "start.png"),
            "--actions", "w-8,l-8", "--denoise-steps", "1", "--seed", "2"]
    assert main([*args, "--out", str(tmp_path / "dream")]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["steps"] == 2 and line["frames"] == 17
    episode = Dataset(tmp_path / "dream").episode(0)
    assert episode["frames"].shape == (17, SANA_H, SANA_W, 3) and np.array_equal(episode["actions"], [1, 6])
    assert main([*args, "--out", str(tmp_path / "again")]) == 0  # the same seed: the same dream
    assert np.array_equal(Dataset(tmp_path / "again").episode(0)["frames"], episode["frames"])

    for bad, message in ((["--model", "sana-wm-2.6b"], "needs --checkpoint DIR"),
                         (["--checkpoint", str(official_dir)], "--checkpoint is for --model sana-wm-2.6b"),
                         ([*args[1:5], "--compile"], "--compile is for a native model"),
                         ([*args[1:5], "--overlap", "process"], "--overlap process is for a native model")):
        with pytest.raises(SystemExit) as exit_:
            main(["rollout", *bad, "--out", str(tmp_path / "x.gif")])
        assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.sana
def test_play_cli_serves_the_official_model(official_dir, tmp_path, monkeypatch, capsys):
    pytest.importorskip("pygame")
    import imageio.v3 as iio

    from neuralsim import sana_wm
    from neuralsim.cli import main

    monkeypatch.setattr(sana_wm, "DEFAULT_IMAGE_SIZE", (SANA_H, SANA_W))
    iio.imwrite(tmp_path / "start.png", _image(3, (SANA_H, SANA_W))[0, 0])
    assert main(["play", "--model", "sana-wm-2.6b", "--checkpoint", str(official_dir), "--image",
                 str(tmp_path / "start.png"), "--actions", "w-8", "--denoise-steps", "1", "--headless", "--scale", "1",
                 "--record", str(tmp_path / "play.gif"), "--log", str(tmp_path / "keys.txt")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 1 and (tmp_path / "keys.txt").read_text() == "w-8\n"
    assert "--checkpoint" in summary["episodes"][0]["replay"]
    assert iio.imread(tmp_path / "play.gif", index=None).shape == (9, SANA_H, SANA_W, 3)


def test_a_bf16_session_warps_the_depth_memory_in_fp32():
    """A session below fp32 runs the model under autocast; the memory's depth warp (a z-buffer scatter and pixel
    coordinates) stays in fp32, so it runs and places the remembered pixels as the fp32 session does."""
    model = make_tiny_model(frames_per_latent=1, frame_memory_width=4, frame_memory_depth_width=4)
    with torch.no_grad():
        model.frame_memory.net[-1].bias.fill_(20.0)  # the gate wide open: the frame is the warped memory
    frames = np.random.default_rng(0).integers(0, 256, (2, 1, *model.config.image_size, 3), dtype=np.uint8)
    walk = np.tile(np.array([[0.8, 0.0, 0.3, 0.0]], np.float32), (2, 1))
    out = {}
    for dtype in ("float32", "bfloat16"):
        session = DreamSession(model, dtype=dtype)
        state, _, _ = session.start(2, torch.Generator().manual_seed(0), image=frames)
        for _ in range(2):
            step = session.step(state, walk, torch.Generator().manual_seed(1))
            state = step.state
        out[dtype] = step.frames.astype(int)
    assert out["bfloat16"].shape == out["float32"].shape
    assert np.abs(out["bfloat16"] - out["float32"]).mean() < 2.0  # the memory's pixels, in the same places
