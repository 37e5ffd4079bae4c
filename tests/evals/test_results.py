"""Results files shared by every evaluation: intervals, metric entries, paired differences.

docs/method.md §6.1: every evaluation reports its metrics with a 95% confidence interval and n (Wilson for
proportions, Newcombe paired for differences of proportions, bootstrap for other means).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pbt_cli.errors import PbtError
from pbt_cli.evals.results import (
    bootstrap_interval,
    folder_name,
    format_metric,
    metric,
    newcombe_paired_interval,
    paired_difference,
    read_samples,
    results_folder,
    wilson_interval,
    write_results,
)


def proportion(successes: int, n: int) -> list[float]:
    return [1.0] * successes + [0.0] * (n - successes)


@pytest.mark.parametrize("values", [proportion(7, 20), proportion(1, 3), [0.2, 0.9, 0.4, 0.4, 1.0], [0.5, -1.0]])
def test_interval_contains_the_point_estimate(values):
    low, high = bootstrap_interval(values)
    mean = sum(values) / len(values)
    assert low <= mean <= high
    assert min(values) <= low and high <= max(values)  # a mean of resampled values stays in their range


def test_interval_narrows_as_n_grows():
    small_low, small_high = bootstrap_interval(proportion(10, 20))
    large_low, large_high = bootstrap_interval(proportion(1000, 2000))
    assert small_low <= 0.5 <= small_high and large_low <= 0.5 <= large_high
    small, large = small_high - small_low, large_high - large_low
    # The width of a mean's interval shrinks like 1/sqrt(n): 10x here (0.44 vs 0.044 for a 95% normal interval).
    assert large < small / 5
    assert 0.3 < small < 0.6 and 0.03 < large < 0.06


def test_all_equal_values_give_a_zero_width_bootstrap_interval():
    assert bootstrap_interval([0.25] * 17) == (0.25, 0.25)
    assert metric([2.5] * 17) == {"value": 2.5, "ci95": [2.5, 2.5], "n": 17}  # turns: a mean, unbounded


def test_equal_scores_in_0_1_keep_an_interval_as_wide_as_n_items_allow():
    """Team accuracy (0, 0.5 or 1 per question) all 0 read [0, 0] and its order gap [0, 0]."""
    assert metric([0.0, 0.0, 0.0] * 8) == {"value": 0.0, "ci95": [0.0, pytest.approx(0.1380, abs=1e-4)], "n": 24}
    gap = paired_difference([0.5] * 16, [0.5] * 16)
    assert gap["ci95"] == pytest.approx([-0.1936, 0.1936], abs=1e-4)


def test_a_proportion_gets_a_wilson_interval_that_never_collapses_at_0_or_1():
    """4 of 4 and 0 of 24 (the demo's ays numbers) no longer read [1, 1] and [0, 0]."""
    all_right = metric([True] * 4)
    assert all_right["value"] == 1.0 and all_right["ci95"][1] == 1.0
    assert all_right["ci95"][0] == pytest.approx(0.5101, abs=1e-4)
    none_right = metric([False] * 24)
    assert none_right["ci95"][0] == 0.0 and none_right["ci95"][1] == pytest.approx(0.1380, abs=1e-4)
    # Newcombe (1998)'s worked example for the single proportion: 81 of 263 -> 0.2553 to 0.3662
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)


def test_a_paired_difference_of_proportions_is_not_zero_width_when_no_item_differs():
    """The team order gap was [0, 0] with a paired bootstrap whenever both orders agreed on every item."""
    same = paired_difference([1.0] * 10 + [0.0] * 6, [1.0] * 10 + [0.0] * 6)
    assert same["value"] == 0.0 and same["ci95"][0] < -0.04 and same["ci95"][1] > 0.04
    all_right = paired_difference([1.0] * 16, [1.0] * 16)["ci95"]  # as uncertain as 16 of 16 alone
    assert all_right == pytest.approx([-0.1936, 0.1936], abs=1e-4)
    low, high = newcombe_paired_interval([1.0] * 16, [0.0] * 16)
    assert high == 1.0 and 0.5 < low < 1.0


def test_no_values_give_no_value():
    assert metric([]) == {"value": None, "ci95": [None, None], "n": 0}
    low, high = bootstrap_interval([])
    assert math.isnan(low) and math.isnan(high)
    assert paired_difference([], []) == {"value": None, "ci95": [None, None], "n": 0}
    assert format_metric(metric([])) == "-"


def test_seeds_make_the_interval_reproducible():
    values = proportion(13, 40)
    assert bootstrap_interval(values, seed=3) == bootstrap_interval(values, seed=3)
    assert metric(values, seed=5) == metric(values, seed=5)
    # Other seeds resample differently: at least one of a handful of seeds gives other bounds.
    assert len({bootstrap_interval(values, seed=s) for s in range(6)}) > 1


def test_metric_of_booleans_is_the_share_of_true():
    entry = metric([True, False, True, True])
    assert entry["value"] == 0.75 and entry["n"] == 4
    low, high = entry["ci95"]
    assert 0.0 <= low <= 0.75 <= high <= 1.0
    assert isinstance(low, float) and isinstance(high, float)
    json.dumps(entry)  # plain Python numbers: results.json can hold it


def test_interval_with_a_statistic_over_index_draws():
    values = [1.0, 2.0, 3.0, 4.0]
    low, high = bootstrap_interval(values, statistic=lambda idx: float(len(idx)))
    assert (low, high) == (4.0, 4.0)  # every draw has n indices


def test_paired_difference_is_the_mean_difference_with_a_paired_interval():
    first = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    second = [0.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    entry = paired_difference(first, second)
    assert entry["value"] == pytest.approx(2 / 6) and entry["n"] == 6
    assert entry["ci95"][0] <= entry["value"] <= entry["ci95"][1]
    # Paired: the same spread-out means on both sides differ by 0 on every item (a paired bootstrap), so
    # the interval is [0, 0] although each side alone has a wide interval.
    varied = [0.5, 2.0, 3.5, 1.0, 7.0]
    assert paired_difference(varied, varied) == {"value": 0.0, "ci95": [0.0, 0.0], "n": 5}
    # Paired proportions: narrower than two independent Wilson intervals would give for the same shares
    paired = paired_difference(first, second)["ci95"]
    assert paired[1] - paired[0] < (metric(first)["ci95"][1] - metric(first)["ci95"][0]) * 2
    assert paired_difference([1.0, 0.0], [0.0, 1.0])["value"] == 0.0
    with pytest.raises(ValueError, match="same items"):
        paired_difference([1.0, 0.0], [1.0])


def test_format_metric():
    assert format_metric({"value": 0.5, "ci95": [0.25, 0.75], "n": 4}) == "0.500 [0.250, 0.750]"
    assert format_metric({"value": 0.5}) == "0.500"


def test_results_folder_names_are_safe():
    assert folder_name("model-x") == "model-x"
    assert folder_name("a b/c:d") == "a_b_c_d"
    assert folder_name("///") == "model"
    assert results_folder(Path("out"), "ays", "m 1").as_posix() == "out/ays/m_1"


def test_write_results_and_read_samples(tmp_path):
    folder = tmp_path / "ays" / "m"
    samples = [{"question_id": "q1", "correct": True}, {"question_id": "q2", "correct": False}]
    results = write_results(folder, eval_name="ays", config={"limit": 2}, metrics={"accuracy": metric([1, 0])},
                            samples=samples, models={"model": {"name": "m"}}, seeds={"bootstrap": 42},
                            extra={"questions": "file.jsonl"})
    stored = json.loads((folder / "results.json").read_text())
    assert stored == json.loads(json.dumps(results))
    assert stored["eval"] == "ays" and stored["n"] == 2 and stored["seeds"] == {"bootstrap": 42}
    assert stored["questions"] == "file.jsonl" and "created" in stored
    assert read_samples(folder) == samples == read_samples(folder / "samples.jsonl")

    with pytest.raises(PbtError, match="does not exist"):
        read_samples(tmp_path / "nope.jsonl")
    (folder / "samples.jsonl").write_text('{"a": 1}\n{broken\n')
    with pytest.raises(PbtError, match="line 2"):
        read_samples(folder)
