"""The official SANA-WM backend (neuralsim.sana_wm) against diffusers' own SanaWMPipeline, on tiny random components."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from diffusers import SanaWMPipeline  # noqa: E402
from diffusers.pipelines.sana_wm.cam_utils import action_string_to_c2w, prepare_camera  # noqa: E402
from PIL import Image  # noqa: E402

from conftest import tiny_sana_components  # noqa: E402
from neuralsim.actions import DISCRETE_KEYSETS  # noqa: E402
from neuralsim import sana_wm  # noqa: E402
from neuralsim.sana_wm import SanaWMBackend, SanaWMState  # noqa: E402

pytestmark = pytest.mark.sana

H, W = 64, 96  # 2 x 3 latent tokens per frame
INTRINSICS = (48.0, 48.0, 48.0, 32.0)
SEQ = 16  # prompt tokens


@pytest.fixture(scope="module")
def parts() -> dict:
    return tiny_sana_components()


def _backend(parts: dict, **options) -> SanaWMBackend:
    kw = dict(image_size=(H, W), intrinsics=INTRINSICS, denoise_steps=3, guidance_scale=5.0, max_sequence_length=SEQ)
    kw.update(options)
    return SanaWMBackend(**parts, **kw)


def _image(seed: int = 0, batch: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, 1, H, W, 3), dtype=np.uint8)


def _pipeline_noise(seed: int) -> torch.Tensor:
    """The noise SanaWMPipeline draws for a 9-frame clip; its second latent frame is the generated one ``[1, C, h, w]``."""
    return torch.randn((1, 16, 2, H // 32, W // 32), generator=torch.Generator().manual_seed(seed))[:, :, 1]


def _run_pipeline(pipe: SanaWMPipeline, image: np.ndarray, action: str, seed: int, steps: int = 3, cfg: float = 5.0):
    return pipe(
        image=Image.fromarray(image), prompt="a red ball", action=action, intrinsics=list(INTRINSICS), height=H, width=W,
        num_frames=9, num_inference_steps=steps, guidance_scale=cfg, generator=torch.Generator().manual_seed(seed),
        max_sequence_length=SEQ, output_type="np",
    )


# ------------------------------------------------------------------------------------------------
# Oracle: the first step equals SanaWMPipeline.__call__ for a 9-frame clip
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["wl-8", "w-3,ik-2,ad-3"])
def test_first_step_equals_pipeline(parts, action):
    pipe = SanaWMPipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    image = _image()
    ref = _run_pipeline(pipe, image[0, 0], action, seed=0)

    backend = _backend(parts)
    state = backend.init_state(1, frames=image, prompt="a red ball")
    latent, state = backend.step(state, action, noise=_pipeline_noise(0))
    assert (state.latents[:, :, :1] - ref.latent[:, :, :1]).abs().max().item() == 0.0  # the encoded first frame
    diff = (latent - ref.latent[:, :, 1]).abs().max().item()
    assert diff <= 1e-5, diff
    chunk = backend.decode(latent[:, None], first_frame=False, context=state).numpy()
    assert chunk.shape == (1, 8, H, W, 3) and chunk.dtype == np.uint8
    assert np.abs(chunk[0].astype(np.float64) - ref.frames[1:] * 255.0).max() <= 0.5 + 1e-3  # uint8 rounding only


def test_discrete_and_box_actions_equal_the_dsl(parts):
    backend = _backend(parts, denoise_steps=2)
    box = _backend(parts, denoise_steps=2, action_type="box")
    state = backend.init_state(1, frames=_image(), prompt="a red ball")
    noise = _pipeline_noise(1)
    dsl, _ = backend.step(state, "wl-8", noise=noise)
    disc, _ = backend.step(state, np.array([DISCRETE_KEYSETS.index("wl")]), noise=noise)
    vec, _ = box.step(state, np.array([[1.0, 0.0, 1.0, 0.0]], dtype=np.float32), noise=noise)
    assert torch.equal(dsl, disc) and torch.equal(dsl, vec)
    other, _ = backend.step(state, "a-8", noise=noise)
    assert (other - dsl).abs().max() > 1e-4  # the camera path is live


def test_camera_bookkeeping_matches_prepare_camera_on_a_contiguous_trajectory(parts):
    backend = _backend(parts, denoise_steps=1, guidance_scale=1.0, context_frames=8)
    state = backend.init_state(1, frames=_image(), prompt="a red ball")
    for a in ("w-8", "jw-8", "ik-4,d-4"):
        _, state = backend.step(state, a, generator=torch.Generator().manual_seed(0))
    cam = prepare_camera(action_string_to_c2w("w-8,jw-8,ik-4,d-4"), np.tile(np.float32(INTRINSICS), (25, 1)),
                         target_size=(H, W), vae_stride=(8, 32, 32))
    assert torch.equal(state.raymap[0], cam["raymap"]) and torch.equal(state.plucker[0], cam["chunk_plucker"])


def test_from_pretrained_equals_pipeline_from_pretrained(parts, tmp_path):
    SanaWMPipeline(**parts).save_pretrained(tmp_path, safe_serialization=True)
    pipe = SanaWMPipeline.from_pretrained(tmp_path, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    image = _image(3)
    ref = _run_pipeline(pipe, image[0, 0], "d-8", seed=5, steps=2, cfg=3.0)
    backend = SanaWMBackend.from_pretrained(
        tmp_path, dtype="fp32", device="cpu", image_size=(H, W), intrinsics=INTRINSICS, denoise_steps=2,
        guidance_scale=3.0, max_sequence_length=SEQ,
    )
    assert backend.transformer.rope.freqs.device.type == "cpu"
    state = backend.init_state(1, frames=image, prompt="a red ball")
    latent, _ = backend.step(state, "d-8", noise=_pipeline_noise(5))
    assert (latent - ref.latent[:, :, 1]).abs().max().item() <= 1e-5


def test_from_components_loads_raw_official_safetensors(parts, tmp_path):
    from safetensors.torch import save_file

    raw = {}
    for k, v in parts["transformer"].state_dict().items():  # NVlabs/Sana names + the buffers diffusers drops
        k = k.replace("t_embedder.linear_1.", "t_embedder.mlp.0.").replace("t_embedder.linear_2.", "t_embedder.mlp.2.")
        raw[k] = v.contiguous()
    raw["pos_embed"] = torch.zeros(1, 6, 96)
    save_file(raw, tmp_path / "dit.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(dict(parts["transformer"].config)))
    parts["vae"].save_pretrained(tmp_path / "vae", safe_serialization=True)
    backend = SanaWMBackend.from_components(
        tmp_path / "dit.safetensors", tmp_path / "vae", text_encoder=parts["text_encoder"], tokenizer=parts["tokenizer"],
        scheduler=parts["scheduler"], dtype="fp32", device="cpu", image_size=(H, W), intrinsics=INTRINSICS,
        denoise_steps=2, max_sequence_length=SEQ,
    )
    assert backend.transformer.rope.freqs.device.type == "cpu"
    assert all(p.device.type == "cpu" for p in backend.transformer.parameters())
    ref = _backend(parts, denoise_steps=2)
    state = ref.init_state(1, frames=_image(), prompt="a red ball")
    a, _ = ref.step(state, 4, noise=_pipeline_noise(2))
    b, _ = backend.step(state, 4, noise=_pipeline_noise(2))
    assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------------
# Determinism, bounded window, batch, dtype
# ------------------------------------------------------------------------------------------------


def test_seed_determinism_and_state_is_not_mutated(parts):
    backend = _backend(parts, denoise_steps=2)
    state = backend.init_state(2, frames=_image(0, batch=2), prompt=["a red ball", "the blue wall"])
    before = state.latents.clone()
    a, s_a = backend.step(state, [1, 5], generator=torch.Generator().manual_seed(7))
    b, _ = backend.step(state, [1, 5], generator=torch.Generator().manual_seed(7))
    c, _ = backend.step(state, [1, 5], generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(state.latents, before) and s_a.step_index == 1 and state.step_index == 0
    assert a.shape == (2, 16, H // 32, W // 32)
    assert backend.decode(a[:, None], first_frame=False, context=s_a).shape == (2, 8, H, W, 3)


def test_window_is_bounded_and_step_work_flat(parts):
    """From step 2 on, every step runs the same passes over the same tokens (sink + K recent + the new frame): its
    cost cannot grow with the episode (counted, not timed: a timing bound fails on a busy machine)."""
    backend = _backend(parts, denoise_steps=1, guidance_scale=1.0, context_frames=2)
    tokens = []
    hook = backend.transformer.register_forward_pre_hook(lambda m, args: tokens.append(args[0].shape[2:]))
    try:
        state = backend.init_state(1, frames=_image(), prompt="a red ball")
        gen = torch.Generator().manual_seed(0)
        passes, shapes = [], []
        for i in range(20):
            tokens.clear()
            _, state = backend.step(state, i % len(DISCRETE_KEYSETS), generator=gen)
            passes.append(tuple(tokens))
            shapes.append((tuple(state.latents.shape), tuple(state.raymap.shape), tuple(state.plucker.shape)))
    finally:
        hook.remove()
    assert shapes[-1] == shapes[2] and shapes[-1][0][2] == 3  # sink + K = 2 recent, from step 2 on
    assert all(p == passes[2] for p in passes[2:]) and passes[2]  # the same passes, the same token grids
    assert all(t == (4, H // 32, W // 32) for t in passes[2])  # forward over sink + K + new, constant
    assert state.step_index == 20


def test_init_from_a_clip_keeps_sink_and_recent_frames(parts):
    backend = _backend(parts, denoise_steps=1, guidance_scale=1.0, context_frames=1)
    clip = np.random.default_rng(1).integers(0, 256, (1, 17, H, W, 3), dtype=np.uint8)
    state = backend.init_state(1, frames=clip, actions="w-8,l-8", prompt="a red ball")
    assert state.latents.shape[2] == 2 and not state.sink_pending
    full = backend.encode(clip)  # [B, T, C, h, w]
    assert full.shape == (1, 3, 16, H // 32, W // 32) and torch.equal(state.latents, full[:, [0, 2]].transpose(1, 2))
    cam = prepare_camera(action_string_to_c2w("w-8,l-8"), np.tile(np.float32(INTRINSICS), (17, 1)),
                         target_size=(H, W), vae_stride=(8, 32, 32))
    assert torch.equal(state.raymap[0], cam["raymap"][[0, 2]])
    np.testing.assert_allclose(state.c2w[0], action_string_to_c2w("w-8,l-8")[-1], atol=1e-6)


def test_bf16_runs_on_cpu_and_tracks_fp32(parts):
    fp32 = _backend(parts, denoise_steps=2, guidance_scale=1.0)
    bf16 = _backend(copy.deepcopy(parts), denoise_steps=2, guidance_scale=1.0, dtype=torch.bfloat16, vae_dtype=torch.float32)
    state = fp32.init_state(1, frames=_image(), prompt="a red ball")
    noise = _pipeline_noise(3)
    a, _ = fp32.step(state, "wl-8", noise=noise)
    b, s_b = bf16.step(state, "wl-8", noise=noise)
    assert b.dtype == torch.bfloat16
    rel = ((a - b.float()).norm() / a.norm()).item()
    assert rel < 0.05, rel
    assert bf16.decode(b[:, None], first_frame=False, context=s_b).shape == (1, 8, H, W, 3)


def test_bf16_mask_does_not_skip_the_first_step(parts):
    """diffusers 0.42.1's pipeline keeps its condition mask in the model dtype; in bf16 its clean-token test
    ``t / 1000 - 1e-6 < 1 - mask`` rounds to ``1.0 < 1.0`` at t = 1000, so the first Euler step is skipped
    (a 1-step sample returns the noise). The backend keeps the mask in fp32."""
    t = torch.tensor(1000.0)
    assert not bool((t / 1000.0 - 1e-6 < (1.0 - torch.zeros(1, dtype=torch.bfloat16)))[0])  # the upstream expression
    backend = _backend(copy.deepcopy(parts), denoise_steps=1, guidance_scale=1.0, dtype=torch.bfloat16, vae_dtype=torch.float32)
    state = backend.init_state(1, frames=_image(), prompt="a red ball")
    noise = _pipeline_noise(0).to(torch.bfloat16)
    latent, _ = backend.step(state, "w-8", noise=noise)
    assert (latent.float() - noise.float()).abs().max() > 0.1


# ------------------------------------------------------------------------------------------------
# Protocol surface and errors
# ------------------------------------------------------------------------------------------------


def test_protocol_attributes(parts):
    from gymnasium import spaces

    backend = _backend(parts)
    assert backend.name == "sana-wm-2.6b" and backend.frames_per_latent == 8 and backend.image_size == (H, W)
    assert backend.action_space == spaces.Discrete(len(DISCRETE_KEYSETS))
    box = _backend(parts, action_type="box").action_space
    assert isinstance(box, spaces.Box) and box.shape == (4,)
    assert backend.config.latent_size == (2, 3) and backend.config.context_frames == 4
    state = backend.init_state(1, frames=_image(), prompt="a red ball")
    assert isinstance(state, SanaWMState) and state.batch_size == 1 and state.sink_pending
    with pytest.raises(TypeError, match="SanaWMState"):
        backend.step({"latents": None}, "w-8")


def test_decode_needs_the_right_context(parts):
    backend = _backend(parts, denoise_steps=1, guidance_scale=1.0)
    state = backend.init_state(1, frames=_image(), prompt="a red ball")
    latent, new_state = backend.step(state, "w-8", generator=torch.Generator().manual_seed(0))
    latents = latent[:, None]  # [B, T=1, C, h, w]
    assert backend.decode(latents).shape == (1, 1, H, W, 3)  # a clip: its first latent frame is one frame
    assert backend.decode(latents, first_frame=False, context=state.latents.transpose(1, 2)).shape == (1, 8, H, W, 3)
    assert torch.equal(backend.decode(latents, first_frame=False, context=new_state),
                       backend.decode(latents, first_frame=False, context=state.latents.transpose(1, 2)))
    with pytest.raises(ValueError, match="context state"):
        backend.decode(latents, first_frame=False, context=state)
    with pytest.raises(ValueError, match="context="):
        backend.decode(latents, first_frame=False)
    with pytest.raises(ValueError, match="latents"):
        backend.decode(latents[:, :, :4])


@pytest.mark.parametrize(
    "action, match",
    [
        ("x-8", "unknown keys"),
        ("w-7", "covers 7 frames"),
        ("w-0", "non-positive"),
        (np.array([99]), "actions must be integers"),
        (np.array([[1.0, 0.0, 0.0]]), "actions must have shape"),
        (["w-8", "w-8"], "2 key-DSL strings for a batch of 1"),
    ],
)
def test_bad_actions(parts, action, match):
    backend = _backend(parts, denoise_steps=1)
    state = backend.init_state(1, frames=_image(), prompt="a red ball")
    with pytest.raises(ValueError, match=match):
        backend.step(state, action)


def test_bad_box_actions(parts):
    backend = _backend(parts, denoise_steps=1, action_type="box")
    state = backend.init_state(1, frames=_image(), prompt="a red ball")
    with pytest.raises(ValueError, match=r"shape \(1, 4\)"):
        backend.step(state, np.zeros((1, 6), dtype=np.float32))
    with pytest.raises(ValueError, match="out of the action space"):
        backend.step(state, np.array([[2.0, 0, 0, 0]], dtype=np.float32))


def test_bad_frames_and_prompts(parts):
    backend = _backend(parts)
    with pytest.raises(ValueError, match="image_size"):
        backend.init_state(1, frames=np.zeros((1, 1, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        backend.init_state(1, frames=np.zeros((1, 1, H, W, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="T = 1 \\+ 8k"):
        backend.init_state(1, frames=np.zeros((1, 4, H, W, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="frames is required"):
        backend.init_state(1, prompt="a red ball")
    no_text = SanaWMBackend(parts["transformer"], parts["vae"], image_size=(H, W))
    with pytest.raises(ValueError, match="prompt_embeds"):
        no_text.init_state(1, frames=_image(), prompt="a red ball")
    assert not no_text.init_state(1, frames=_image()).prompt_embeds.any()  # unprompted: a zero embedding
    with pytest.raises(ValueError, match="image_size"):
        SanaWMBackend(parts["transformer"], parts["vae"], image_size=(60, 96))


def test_precomputed_prompt_embeds_without_text_encoder(parts):
    with_text = _backend(parts, denoise_steps=1)
    state = with_text.init_state(1, frames=_image(), prompt="a red ball")
    no_text = SanaWMBackend(parts["transformer"], parts["vae"], scheduler=parts["scheduler"], image_size=(H, W),
                            intrinsics=INTRINSICS, denoise_steps=1)
    s2 = no_text.init_state(1, frames=_image(), prompt_embeds=state.prompt_embeds, prompt_attention_mask=state.prompt_mask,
                            negative_prompt_embeds=state.negative_embeds, negative_prompt_attention_mask=state.negative_mask)
    a, _ = with_text.step(state, "w-8", noise=_pipeline_noise(0))
    b, _ = no_text.step(s2, "w-8", noise=_pipeline_noise(0))
    assert torch.equal(a, b)
    s3 = no_text.init_state(1, frames=_image(), prompt_embeds=state.prompt_embeds)
    with pytest.raises(ValueError, match="negative"):
        no_text.step(s3, "w-8")


def test_missing_components_and_pickles_are_refused(parts, tmp_path, monkeypatch):
    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load must never be called")

    monkeypatch.setattr(torch, "load", no_unpickling)
    pt = tmp_path / "model.pt"
    pt.write_bytes(b"not really a pickle")
    with pytest.raises(ValueError, match="pickled"):
        SanaWMBackend.from_pretrained(pt, device="cpu")
    with pytest.raises(ValueError, match="pickled"):
        SanaWMBackend.from_components(pt, tmp_path, device="cpu")
    parts["transformer"].save_pretrained(tmp_path / "repo" / "transformer", safe_serialization=True)
    with pytest.raises(ValueError, match="missing component directory .*vae"):
        SanaWMBackend.from_pretrained(tmp_path / "repo", device="cpu")
    vae_dir = tmp_path / "repo" / "vae"
    vae_dir.mkdir()
    (vae_dir / "config.json").write_text(json.dumps(dict(parts["vae"].config)))
    (vae_dir / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ValueError, match="no \\*.safetensors weights .*never loaded"):
        SanaWMBackend.from_pretrained(tmp_path / "repo", device="cpu")
    with pytest.raises(ValueError, match="not a directory"):
        SanaWMBackend.from_pretrained(tmp_path / "nowhere", device="cpu")


def test_without_diffusers_import_works_and_construction_names_the_extra():
    code = (
        "import sys; sys.modules['diffusers'] = None\n"
        "import neuralsim, neuralsim.sana_wm as s\n"
        "try:\n    s.SanaWMBackend.from_pretrained('x')\nexcept ImportError as e:\n    print('HINT', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert 'pip install "neuralsim[sana]"' in out.stdout


def test_serves_world_model_env(parts):
    """The backend drives the Gymnasium env (envs/world_model_env.py) end to end."""
    world_model_env = pytest.importorskip("neuralsim.envs.world_model_env")
    env = world_model_env.WorldModelEnv(model=_backend(parts, denoise_steps=1, guidance_scale=1.0))
    obs, _ = env.reset(seed=0, options={"image": _image()[0, 0], "prompt": "a red ball"})
    assert obs.shape == (H, W, 3) and env.action_space.n == len(DISCRETE_KEYSETS)
    obs, reward, terminated, truncated, info = env.step(DISCRETE_KEYSETS.index("wl"))
    assert obs.shape == (H, W, 3) and obs.dtype == np.uint8 and info["frames"].shape == (8, H, W, 3)
    assert np.array_equal(obs, info["frames"][-1]) and not terminated and not truncated


@pytest.mark.parametrize("entry", [["transformers", "pipeline"], ["transformers", "AutoModel"], ["os", "system"], "Gemma2Model"])
def test_model_index_class_names_are_allow_listed(parts, tmp_path, entry):
    """Issue 24 #1: model_index.json is data; its text-encoder class name was used with getattr on transformers."""
    SanaWMPipeline(**parts).save_pretrained(tmp_path, safe_serialization=True)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["text_encoder"][1] in sana_wm.TEXT_ENCODER_CLASSES  # what diffusers writes loads
    index["text_encoder"] = entry
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"model_index\.json: .*(not one neuralsim loads|must be \[)"):
        SanaWMBackend.from_pretrained(tmp_path, dtype="fp32", device="cpu", image_size=(H, W), intrinsics=INTRINSICS)


def test_text_encoder_never_trusts_remote_code(parts, tmp_path, monkeypatch):
    """Issue 24 #1: the text encoder and tokenizer load with trust_remote_code=False."""
    import transformers

    SanaWMPipeline(**parts).save_pretrained(tmp_path, safe_serialization=True)
    seen = []
    for cls in (transformers.Gemma2ForCausalLM, transformers.AutoTokenizer):
        original = cls.from_pretrained.__func__

        def spy(klass, *args, _original=original, **kwargs):
            seen.append((klass.__name__, kwargs.get("trust_remote_code", "missing")))
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    SanaWMBackend.from_pretrained(tmp_path, dtype="fp32", device="cpu", image_size=(H, W), intrinsics=INTRINSICS,
                                  max_sequence_length=SEQ)
    assert {name for name, _ in seen} == {"Gemma2ForCausalLM", "AutoTokenizer"}
    assert all(trust is False for _, trust in seen)
