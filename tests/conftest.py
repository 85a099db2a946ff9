"""Test-session settings shared by every test file."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import torch  # noqa: E402

# One intra-op thread: the tests are many small ops, and on a 2-core machine OpenMP threads that
# spin while subprocesses (collect workers, torchrun) run slow everything down ~10x.
torch.set_num_threads(1)


# ------------------------------------------------------------------------------------ the mujoco marker

import pytest  # noqa: E402


@pytest.hookimpl(tryfirst=True)  # before any fixture of the test is set up
def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.mujoco`` tests skip where MuJoCo is not installed (an installed MuJoCo that fails to import
    is an error, as with ``pytest.importorskip``)."""
    if item.get_closest_marker("mujoco") is not None:
        pytest.importorskip("mujoco", reason='needs the [mujoco] extra: pip install "neuralsim[mujoco]"')


# ------------------------------------------------------------------------------------ source scans and scripts

import ast  # noqa: E402
import importlib.util  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def source_files(*folders: str) -> list[Path]:
    """Every ``.py`` file under ``folders`` of the checkout (``"neuralsim"``, ``"envs"``, ...), sorted, caches aside."""
    return sorted(p for d in folders if (ROOT / d).is_dir() for p in (ROOT / d).rglob("*.py")
                  if "__pycache__" not in p.parts)


def import_aliases(tree: ast.AST) -> dict[str, str]:
    """Every name an import in ``tree`` binds -> the module or ``module.attr`` it stands for (``np`` -> ``numpy``,
    ``mv`` -> ``os.replace`` after ``from os import replace as mv``; a relative import keeps its dots: ``.os.replace``
    after ``from .os import replace``, not the stdlib's)."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{'.' * node.level}{node.module}.{a.name}"
    return aliases


def called_names(tree: ast.AST) -> list[tuple[ast.Call, str | None]]:
    """Every call in ``tree`` with the dotted name it calls, its head resolved by :func:`import_aliases`, or None where
    the callee is no name chain (``f()()``, ``x[0]()``, ``Path(p).rename(q)``): after ``import numpy as np`` the call
    ``np.load(f)`` is ``numpy.load``; after ``from os import replace as mv``, ``mv(a, b)`` is ``os.replace``. The
    static scans of the source (``test_layers.py``, ``test_no_unsafe_loading.py``) read calls through it."""
    aliases = import_aliases(tree)
    found: list[tuple[ast.Call, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, func = [], node.func
            while isinstance(func, ast.Attribute):
                parts.append(func.attr)
                func = func.value
            if isinstance(func, ast.Name):
                head, *rest = [func.id, *reversed(parts)]
                found.append((node, ".".join([aliases.get(head, head), *rest])))
            else:
                found.append((node, None))
    return found


def load_script(path: str | Path, name: str) -> ModuleType:
    """The script at ``path`` (relative to the checkout: ``"benchmarks/fidelity.py"``) imported as a fresh module
    named ``name``: a benchmark's functions, tested without running it."""
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------ shared fixtures

import json  # noqa: E402

import numpy as np  # noqa: E402

TINY_FRAMES_PER_STEP = 2  # frames per latent frame (env step) of the tiny test checkpoint


def make_tiny_model(termination_bias: float = -6.0, **overrides):
    """The "tiny" preset (32x32, seeded init) with 2 frames per step; the termination head is made confident
    (an untrained head sits at 0.5, which would end every other episode), and the zero-initialised output layer
    gets small random weights, so the dream depends on the sampling noise as a trained one does (at init an
    ``x0_residual`` model copies the last frame whatever the seed)."""
    from neuralsim.config import WorldModelConfig
    from neuralsim.model import WorldModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = WorldModel(WorldModelConfig.from_preset("tiny", **{"frames_per_latent": TINY_FRAMES_PER_STEP, **overrides}))
        torch.nn.init.normal_(model.dynamics.final_layer.linear.weight, std=0.05)
    with torch.no_grad():
        last = model.termination_head.net[-1]
        last.weight.zero_()
        last.bias.fill_(termination_bias)
    return model.eval()


def save_tiny_checkpoint(path: Path, model=None, **overrides) -> Path:
    """``config.json`` + ``model.safetensors`` + a 3-frame ``start_frames.safetensors`` with descriptions."""
    from safetensors.numpy import save_file

    model = make_tiny_model(**overrides) if model is None else model
    model.save_pretrained(path)
    h, w = model.config.image_size
    frames = np.random.default_rng(0).integers(0, 256, (3, h, w, 3), dtype=np.uint8)
    save_file({"frames": frames}, str(Path(path) / "start_frames.safetensors"),
              metadata={"descriptions": json.dumps(["a red ball near the blue wall", "a green box", "a yellow room"])})
    return Path(path)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny checkpoint directory shared by the whole session (treat it as read-only; copy it to modify)."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-checkpoint") / "tiny")


def listing(root: Path) -> list[str]:
    """Every path under ``root`` (relative, sorted): compare before/after to see that nothing was written."""
    root = Path(root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


# ------------------------------------------------------------------------------------ training builders


def make_dataset(path: Path, size: int = 32, episodes: int = 6, steps: int = 12, seed: int = 0) -> Path:
    """Synthetic camera world: a coloured square that moves with the action, rewards = forward action."""
    import gymnasium as gym

    from neuralsim.actions import space_to_spec
    from neuralsim.data import ShardWriter

    rng = np.random.default_rng(seed)
    spec = space_to_spec(gym.spaces.Box(-1, 1, (4,), np.float32))
    with ShardWriter(path, {"env_id": "synthetic", "image_size": [size, size], "action_spec": spec,
                            "frames_per_step": 1}, episodes_per_shard=4) as writer:
        for e in range(episodes):
            actions = rng.uniform(-1, 1, (steps, 4)).astype(np.float32)
            x, y = rng.integers(4, size - 12, 2)
            frames = []
            for t in range(steps + 1):
                img = np.full((size, size, 3), 40 + 20 * e, np.uint8)
                img[y : y + 8, x : x + 8] = (230, 60, 60)
                frames.append(img)
                if t < steps:
                    x = int(np.clip(x + 3 * actions[t, 1], 0, size - 8))
                    y = int(np.clip(y - 3 * actions[t, 0], 0, size - 8))
            terminated = np.zeros(steps, bool)
            truncated = np.zeros(steps, bool)
            truncated[-1] = True
            writer.add_episode(np.stack(frames), actions, actions[:, 0].copy(), terminated, truncated,
                               f"a red square on a shade {e} background")
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """``make_dataset``'s default dataset, one per test module (tests may train on it, never write into it)."""
    return make_dataset(tmp_path_factory.mktemp("data") / "ds")


def train_config(data: Path, out: Path, **kw):
    """A ``TrainConfig`` for a few-step ``tiny`` run of both stages (4 + 4 steps, checkpoints every 2); ``kw`` overrides."""
    from neuralsim.train import TrainConfig

    base = dict(stage="all", data=str(data), out=str(out), preset="tiny", steps=4, ae_steps=4, batch_size=4, window=4,
                warmup=2, checkpoint_every=2, sample_every=0, log_every=1, progress=False, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def model_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``path/model.safetensors``."""
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


# ------------------------------------------------------------------------------------ SANA-WM builders


def tiny_sana_components(seed: int = 0) -> dict:
    """4-block width-96 DiT, tiny LTX-2 VAE (ratios 32/8), 1-layer Gemma-2 with a small offline BPE tokenizer: the
    ``SanaWMBackend``/``SanaWMPipeline`` components for 64x96 frames (needs the [sana] extra and ``tokenizers``)."""
    from diffusers import AutoencoderKLLTX2Video, FlowMatchEulerDiscreteScheduler, SanaWMTransformer3DModel
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Gemma2Config, Gemma2ForCausalLM, GemmaTokenizerFast

    torch.manual_seed(seed)
    transformer = SanaWMTransformer3DModel(
        in_channels=16, num_layers=4, hidden_size=96, num_attention_heads=4, linear_head_dim=24, caption_channels=32
    )
    with torch.no_grad():  # zero-initialised branches (Plücker embedder, camera output...) would hide the camera
        for p in transformer.parameters():
            if p.abs().sum() == 0:
                p.normal_(0.0, 0.05)
    vae = AutoencoderKLLTX2Video(
        latent_channels=16, block_out_channels=(8, 16, 32, 64), decoder_block_out_channels=(8, 16, 32),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
        spatial_compression_ratio=32, temporal_compression_ratio=8,
    )
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    corpus = ["a red ball near the blue wall", "Given a user prompt generate an enhanced prompt with details"]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=200, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"]))
    tokenizer = GemmaTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    text_encoder = Gemma2ForCausalLM(Gemma2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16,
    )).eval()
    return dict(transformer=transformer.eval(), vae=vae.eval(), scheduler=FlowMatchEulerDiscreteScheduler(shift=9.8),
                text_encoder=text_encoder, tokenizer=tokenizer)
