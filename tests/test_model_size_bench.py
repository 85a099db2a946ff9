"""benchmarks/model_size.py: the variants it builds from a model's config, and the script on a tiny model."""

from __future__ import annotations

import pytest

from conftest import load_script, make_tiny_model, save_tiny_checkpoint


def test_a_variant_changes_the_dynamics_width_and_depth_and_nothing_else():
    script = load_script("benchmarks/model_size.py", "model_size_bench")
    config = make_tiny_model().config
    same = script.variant_config(config, None, None)
    assert same == config
    narrow = script.variant_config(config, 64, 4)
    assert (narrow.width, narrow.num_heads, narrow.text_width, narrow.depth) == (64, 2, 64, 4)
    assert list(narrow.softmax_blocks) == ([2] if config.softmax_blocks else [])
    unchanged = {k for k in config.to_dict() if k not in ("width", "num_heads", "text_width", "depth", "softmax_blocks")}
    assert all(narrow.to_dict()[k] == config.to_dict()[k] for k in unchanged)


@pytest.mark.mujoco
def test_model_size_script_on_a_tiny_model(tmp_path):
    """The whole script, quick: every variant of the quick list steps, beside the room's speed; the variants have
    the dynamics sizes they name."""
    script = load_script("benchmarks/model_size.py", "model_size_bench")
    path = save_tiny_checkpoint(tmp_path / "tiny", model=make_tiny_model(frames_per_latent=1))
    result = script.main(["--model", str(path), "--quick", "--batch", "2", "--steps", "2", "--threads", "1",
                          "--results-dir", str(tmp_path), "--name", "ms"])
    assert (tmp_path / "ms.json").is_file() and result["room_sps"] > 0
    rows = {r["variant"]: r for r in result["rows"]}
    assert set(rows) == set(script.QUICK_VARIANTS)
    assert (rows["width 64, depth 4"]["width"], rows["width 64, depth 4"]["depth"]) == (64, 4)
    assert rows["width 64, depth 4"]["dynamics_parameters"] != rows["as shipped"]["dynamics_parameters"]
    assert all(r["env_sps"] > 0 and r["obs"] == "latent" for r in rows.values())


def test_model_size_refuses_a_missing_model(tmp_path):
    script = load_script("benchmarks/model_size.py", "model_size_bench")
    with pytest.raises(SystemExit):
        script.main(["--model", str(tmp_path / "nowhere"), "--quick"])


@pytest.mark.slow
@pytest.mark.mujoco
# inductor's own use of torch.jit.script_method warns in torch 2.13; nothing of ours calls it
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_model_size_compile_times_each_row_eager_and_compiled(tmp_path):
    script = load_script("benchmarks/model_size.py", "model_size_bench")
    path = save_tiny_checkpoint(tmp_path / "tiny", model=make_tiny_model(frames_per_latent=1))
    # one variant: each compiles its own graphs (a minute or more on a 2-core CPU), and one shows the compiled path
    result = script.main(["--model", str(path), "--quick", "--compile", "--batch", "2", "--steps", "2", "--threads", "1",
                          "--variants", "width 64, depth 4", "--results-dir", str(tmp_path), "--name", "ms"])
    assert sorted((r["variant"], r["compiled"]) for r in result["rows"]) == [("width 64, depth 4", False),
                                                                             ("width 64, depth 4", True)]
    assert all(r["env_sps"] > 0 for r in result["rows"])


def test_model_size_refuses_an_unknown_variant(capsys):
    script = load_script("benchmarks/model_size.py", "model_size_bench")
    with pytest.raises(SystemExit):
        script.main(["--variants", "width 7", "--quick"])
    assert "--variants" in capsys.readouterr().err
