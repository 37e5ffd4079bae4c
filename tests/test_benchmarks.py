"""The benchmark scripts run end to end (tiny model, tiny sizes): their figures are not checked here,
only that every script still works and reports what README quotes from it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # as when run as `python benchmarks/<name>.py`
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generate_benchmark_compares_pbt_with_the_reference_loop(tiny_model_dir, monkeypatch, capsys):
    script = load_script("generate", monkeypatch)
    summary = script.main(["--model", str(tiny_model_dir), "--trees", "2", "--reference-trees", "1",
                           "--max-new-tokens", "4", "--min-new-tokens", "1", "--max-turns", "2",
                           "--dtype", "float32"])
    assert summary["pbt"]["trees"] == 2 and summary["reference"]["trees"] == 1
    assert summary["pbt"]["generated_tokens"] > 0 and summary["reference"]["generated_tokens"] > 0
    assert summary["speedup_trees_per_s"] > 0 and summary["prefill_ceiling_tokens_per_s"] > 0
    assert '"benchmark": "generate"' in capsys.readouterr().out


def test_eval_benchmark_reports_both_baselines(tiny_model_dir, monkeypatch, capsys):
    script = load_script("eval", monkeypatch)
    summary = script.main(["--model", str(tiny_model_dir), "--questions", "3", "--reference-questions", "1",
                           "--max-new-tokens", "4", "--dtype", "float32"])
    assert summary["pbt"]["questions"] == 3
    assert summary["one_at_a_time_kv_cache"]["questions"] == 1
    assert summary["speedup_vs_no_cache"] > 0
    assert '"benchmark": "eval-ays"' in capsys.readouterr().out


def test_ablation_runs_each_variant_it_is_given(tiny_model_dir, monkeypatch, capsys):
    script = load_script("ablation", monkeypatch)
    variants = ["pbt (all on)", "no shared-prefix cache"]
    rows = script.main(["--model", str(tiny_model_dir), "--trees", "1", "--max-new-tokens", "4", "--min-new-tokens", "1",
                        "--variants", *variants])
    assert [row["variant"] for row in rows] == variants
    assert all(row["turns"] > 0 for row in rows)
    assert '"benchmark": "ablation"' in capsys.readouterr().out


def test_gpu_benchmark_smoke_runs_on_cpu_with_the_tiny_shape(monkeypatch, capsys):
    script = load_script("gpu_generate", monkeypatch)
    summary = script.main(["--device", "cpu", "--shape", "tiny", "--dtype", "float32", "--prompt-tokens", "8",
                           "--new-tokens", "3", "--batch-size", "4", "--rows", "8"])
    assert summary["batched"]["generated_tokens"] == 8 * 3  # min = max new tokens: exactly 3 per row
    assert summary["batch_1"]["generated_tokens"] == 4 * 3
    assert '"benchmark": "gpu-generate"' in capsys.readouterr().out

