"""The prompt-start generator (neuralsim.prompt_start; config.prompt_start_channels) and `train prompt`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_tiny_model, train_config
from neuralsim.config import WorldModelConfig
from neuralsim.prompt_start import PromptStart
from neuralsim.train import TrainingError, train


def _with_prompt_start(model, channels: int = 32):
    from neuralsim.model import WorldModel

    torch.manual_seed(1)
    rebuilt = WorldModel(model.config.replace(prompt_start_channels=channels, prompt_start_steps=4))
    missing, unexpected = rebuilt.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("prompt_start.") for k in missing)
    with torch.no_grad():  # zero-initialised layers made random: the tests must see prompts move the frame
        for name, p in rebuilt.prompt_start.named_parameters():
            if name.startswith("out.") or name.endswith(("conv2.weight", "proj.weight")):
                torch.nn.init.normal_(p, std=0.1)
    return rebuilt.eval()


@pytest.mark.parametrize("field,value", [("prompt_start_channels", 12), ("prompt_start_channels", -32),
                                         ("prompt_start_channels", True), ("prompt_start_tokens", 0),
                                         ("prompt_start_steps", 1000), ("prompt_start_steps", 2.0)])
def test_bad_prompt_start_fields_are_refused_naming_the_field(field, value):
    with pytest.raises((ValueError, TypeError), match=field):
        WorldModelConfig.from_preset("tiny", **{field: value})


def test_a_prompt_start_is_deterministic_follows_the_prompt_and_starts_the_dream():
    model = _with_prompt_start(make_tiny_model())
    prompts = ["a red ball near the blue wall", "a room with a green floor"]
    a = model.init_state(2, prompt=prompts, generator=torch.Generator().manual_seed(0))
    b = model.init_state(2, prompt=prompts, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a.latent, b.latent, rtol=0, atol=0)  # same seed, same start
    assert a.latent.shape == (2, *model.latent_shape) and bool(torch.isfinite(a.latent).all())
    # the start is the generator's sample (then committed as a context frame), and the prompt changes it
    ref = model.prompt_start.sample(prompts, torch.Generator().manual_seed(0), 4)
    torch.testing.assert_close(a.latent, ref)
    swapped = model.init_state(2, prompt=prompts[::-1], generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(swapped.latent[0], a.latent[0])
    assert int(a.step[0]) == 1  # the start frame is in the state: the dream goes on from it
    latent, state = model.step(a, np.zeros((2, 4), np.float32), generator=torch.Generator().manual_seed(1))
    assert latent.shape == a.latent.shape and int(state.step[0]) == 2
    # no prompt: an unconditional start from the same generator (it is trained with 10 % of prompts dropped)
    none = model.init_state(2, generator=torch.Generator().manual_seed(0))
    assert bool(torch.isfinite(none.latent).all())


def test_prompts_outside_the_rooms_language_give_a_frame(tmp_path):
    from neuralsim.session import DreamSession

    model = _with_prompt_start(make_tiny_model())
    session = DreamSession(model)
    for prompt in ("a gren flor and a red bal", "target: the ball; a room", "a magenta floor", "x", "word " * 500):
        state, rgb, _ = session.start(1, session.generator(0), prompt=prompt)
        assert rgb.shape == (1, *model.config.image_size, 3) and rgb.dtype == np.uint8
    with pytest.raises(ValueError, match="empty or blank"):
        session.start(1, session.generator(0), prompt="   ")


def test_save_and_load_keep_the_generator(tmp_path):
    from neuralsim.model import WorldModel

    model = _with_prompt_start(make_tiny_model())
    model.save_pretrained(tmp_path / "m")
    again = WorldModel.from_pretrained(tmp_path / "m")
    assert again.prompt_start is not None
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    torch.testing.assert_close(again.prompt_start.sample(["a red ball"], g(), 4), model.prompt_start.sample(["a red ball"], g(), 4))


def test_the_generator_learns_which_prompt_draws_which_frame():
    torch.manual_seed(0)
    gen = PromptStart((4, 4, 4), 32, max_tokens=16, vocab=512, text_hidden=32, blocks=2)
    targets = {"a red room": torch.full((4, 4, 4), 1.0), "a blue room": torch.full((4, 4, 4), -1.0)}
    prompts = list(targets) * 16
    latents = torch.stack([targets[p] for p in prompts])
    opt = torch.optim.Adam(gen.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        loss, logs = gen.loss(latents, prompts, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    gen.eval()
    out = gen.sample(list(targets), torch.Generator().manual_seed(1), steps=8)
    assert float(out[0].mean()) > 0.7 and float(out[1].mean()) < -0.7  # each prompt draws its own frame
    assert logs["prompt_mse"] < 0.3


def test_train_prompt_adds_a_generator_trains_only_it_and_logs(dataset, tmp_path):
    from neuralsim.model import WorldModel

    base = train(train_config(dataset, tmp_path / "base"))
    before = WorldModel.from_pretrained(base)
    assert before.prompt_start is None
    out = train(train_config(dataset, tmp_path / "ps", stage="prompt", init=str(base), steps=4, window=1))
    after = WorldModel.from_pretrained(out)
    assert after.prompt_start is not None and after.config.prompt_start_channels == 128
    kept = before.state_dict()
    for k, v in after.state_dict().items():
        if not k.startswith("prompt_start."):
            assert torch.equal(v, kept[k]), k  # nothing else moved
    rows = (out / "logs" / "prompt.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and "prompt_mse" in rows[0] and len(rows) == 5
    assert json.loads((out / "config.json").read_text())["prompt_start_channels"] == 128
    # a dynamics run on it leaves the generator alone
    more = train(train_config(dataset, tmp_path / "dyn", stage="dynamics", init=str(out), steps=2))
    moved = WorldModel.from_pretrained(more).state_dict()
    for k, v in after.state_dict().items():
        if k.startswith("prompt_start."):
            assert torch.equal(v, moved[k]), k


def test_train_prompt_needs_a_model_and_descriptions(dataset, tmp_path):
    with pytest.raises(TrainingError, match="prompt needs a trained world model: pass --init"):
        train(train_config(dataset, tmp_path / "none", stage="prompt"))
