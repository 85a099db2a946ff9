"""benchmarks/_common.py: the command-line options every results-writing benchmark shares."""

from __future__ import annotations

import argparse

import pytest

from conftest import load_script


def _parser(common, seeds=(32, 8)):
    parser = argparse.ArgumentParser(prog="bench")
    common.add_standard_args(parser, "bench", quick_help="fewer seeds", seeds=seeds)
    return parser


def test_defaults_follow_quick_and_the_command_line_wins(tmp_path):
    common = load_script("benchmarks/_common.py", "bench_common")
    parser = _parser(common)
    full = common.resolve_standard_args(parser, parser.parse_args([]), "bench", (32, 8))
    assert (full.seeds, full.name, full.first_seed, full.quick) == (32, "bench", common.FIRST_HELD_OUT_SEED, False)
    assert full.results_dir == common.RESULTS_DIR
    quick = common.resolve_standard_args(parser, parser.parse_args(["--quick"]), "bench", (32, 8))
    assert (quick.seeds, quick.name) == (8, "bench_quick")
    mine = common.resolve_standard_args(parser, parser.parse_args(
        ["--quick", "--seeds", "3", "--name", "mine", "--results-dir", str(tmp_path), "--first-seed", "7"]), "bench", (32, 8))
    assert (mine.seeds, mine.name, mine.results_dir, mine.first_seed) == (3, "mine", tmp_path, 7)


def test_without_seeds_there_is_no_seed_option_and_a_bad_seed_count_is_a_usage_error(capsys):
    common = load_script("benchmarks/_common.py", "bench_common")
    plain = argparse.ArgumentParser(prog="bench")
    common.add_standard_args(plain, "bench", quick_help="quick")
    with pytest.raises(SystemExit):
        plain.parse_args(["--seeds", "2"])
    parser = _parser(common)
    with pytest.raises(SystemExit):
        common.resolve_standard_args(parser, parser.parse_args(["--seeds", "0"]), "bench", (32, 8))
    assert "--seeds must be >= 1, got 0" in capsys.readouterr().err
