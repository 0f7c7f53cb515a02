"""The time-to-target ratio benchmarks/rl_time_to_target.py prints, including the bounds a run that never reached
the bar allows."""

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "rl_time_to_target", Path(__file__).resolve().parents[1] / "benchmarks" / "rl_time_to_target.py"
)
ttt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ttt)


def test_both_reached_is_exact_against_the_fastest_trl_rate():
    assert ttt.ratio_text((300.0, 600.0), [(1200.0, 1500.0), (900.0, 1500.0)]) == "0.33x"


def test_trl_never_reached_gives_an_upper_bound_from_its_shortest_run():
    # trl's best would take more than 1,000 s (its shortest run's training), so unsee's 400 s is under 0.40x
    text = ttt.ratio_text((400.0, 600.0), [(None, 1200.0), (None, 1000.0)])
    assert text.startswith("< 0.40x")


def test_an_unreached_trl_run_shorter_than_the_reached_one_makes_it_a_bound():
    # the 500 s run might still have reached the bar between 500 s and 800 s
    assert ttt.ratio_text((400.0, 600.0), [(800.0, 1000.0), (None, 500.0)]).startswith("< 0.80x")
    # trained past the reached run's time, it cannot beat it: exact
    assert ttt.ratio_text((400.0, 600.0), [(800.0, 1000.0), (None, 900.0)]) == "0.50x"


def test_unsee_never_reached_gives_a_lower_bound():
    assert ttt.ratio_text((None, 700.0), [(350.0, 400.0)]).startswith("> 2.00x")


@pytest.mark.parametrize("theirs", [[], [(None, 100.0)]])
def test_no_comparison_when_nothing_bounds_it(theirs):
    assert ttt.ratio_text((None, 700.0), theirs).startswith("n/a")
