"""Results files shared by every evaluation: bootstrap intervals, metric entries, paired differences.

docs/method.md §6.1: every evaluation reports its metrics with a 95% bootstrap confidence interval and n.
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
    paired_difference,
    read_samples,
    results_folder,
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


@pytest.mark.parametrize("value", [0.0, 1.0, 0.25])
def test_all_equal_values_give_a_zero_width_interval(value):
    assert bootstrap_interval([value] * 17) == (value, value)
    entry = metric([value] * 17)
    assert entry == {"value": value, "ci95": [value, value], "n": 17}


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
    # Paired: the same spread-out values on both sides differ by 0 on every item, so the interval is [0, 0]
    # although each side alone has a wide interval.
    varied = proportion(5, 11)
    assert paired_difference(varied, varied) == {"value": 0.0, "ci95": [0.0, 0.0], "n": 11}
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
