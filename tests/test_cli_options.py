"""`neuralsim train`'s options are generated from TrainConfig (issue 22 #4): one declaration, every field an option."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

import pytest

from neuralsim.cli import train as train_cli
from neuralsim.cli.options import Option, add_dataclass_arguments, dataclass_from_args, field_comments
from neuralsim.train import TrainConfig


def _train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    return parser


def _parse(*argv: str) -> TrainConfig:
    args = _train_parser().parse_args(list(argv))
    return dataclass_from_args(TrainConfig, args, train_cli.OPTIONS)


def test_every_trainconfig_field_is_an_option():
    dests = {a.dest for a in _train_parser()._actions}
    assert {f.name for f in dataclasses.fields(TrainConfig)} <= dests


def test_defaults_are_the_dataclass_defaults():
    cfg = _parse("all", "--data", "d", "--out", "o")
    assert cfg == dataclasses.replace(TrainConfig(), stage="all", data="d", out="o")


def test_the_flags_named_otherwise_keep_their_names():
    cfg = _parse("dynamics", "--data", "d", "--out", "o", "--no-progress", "--latent-cache", "cache", "--set", "width=256",
                 "--set", "prev_frame_warp=true", "--set", "name=abc", "--resume", "--ae-steps", "7", "--lr", "5e-4",
                 "--no-camera", "--weight-decay", "0")
    assert (cfg.stage, cfg.progress, cfg.latent_cache_dir, cfg.resume, cfg.ae_steps, cfg.lr) == \
        ("dynamics", False, "cache", True, 7, 5e-4)
    assert cfg.config_overrides == {"width": 256, "prev_frame_warp": True, "name": "abc"}
    assert cfg.camera is False and cfg.weight_decay == 0.0
    with pytest.raises(SystemExit):
        _train_parser().parse_args(["all", "--data", "d", "--out", "o", "--dtype", "float16"])  # choices
    with pytest.raises(ValueError, match="--set expects FIELD=JSON, got 'width'"):
        _parse("all", "--data", "d", "--out", "o", "--set", "width")


def test_help_comes_from_the_field_comments():
    comments = field_comments(TrainConfig)
    assert comments["window"].startswith("env steps per training window")
    assert comments["still_windows"].endswith('e.g. the room')  # the comment line under the field too
    helps = {a.dest: a.help for a in _train_parser()._actions}
    assert helps["window"].startswith(comments["window"]) and "(default: %(default)s)" in helps["window"]


def test_a_field_without_a_command_line_type_needs_an_option():
    @dataclass
    class Config:
        rate: float = 0.5  # how often
        table: dict = field(default_factory=dict)

    with pytest.raises(TypeError, match="no command-line type"):
        add_dataclass_arguments(argparse.ArgumentParser(), Config)
    parser = argparse.ArgumentParser()
    options = {"table": Option(flags=("--entry",), append=True, parse=lambda items: dict(i.split("=") for i in items))}
    add_dataclass_arguments(parser, Config, options)
    cfg = dataclass_from_args(Config, parser.parse_args(["--rate", "2", "--entry", "a=b"]), options)
    assert cfg == Config(rate=2.0, table={"a": "b"})
    assert "how often (default: 0.5)" in parser.format_help()
