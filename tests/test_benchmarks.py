"""The benchmark scripts run end to end (tiny model, tiny sizes): their figures are not checked here,
only that every script still works and reports what README quotes from it."""

from __future__ import annotations

import importlib.util
import json
import os
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


def test_served_client_benchmark_measures_pbt_and_bare_httpx(monkeypatch, capsys):
    script = load_script("served_client", monkeypatch)
    summary = script.main(["--requests", "40", "--concurrency", "8", "--no-pin"])
    rows = summary["rows"]
    assert rows["pbt ServedGenerator"]["requests"] == 40 and rows["pbt ServedGenerator"]["requests_per_s"] > 0
    assert all(row["cpu_ms_per_request"] > 0 for row in rows.values())
    assert '"benchmark": "served-client"' in capsys.readouterr().out


def test_orchestration_benchmark_grows_full_trees_and_runs_every_evaluation(monkeypatch, capsys):
    script = load_script("orchestration", monkeypatch)
    summary = script.main(["--trees", "3", "--questions", "4", "--profile", "team"])
    rows = summary["rows"]
    assert rows["generate"]["turns"] == 3 * 21  # nobody agrees: every tree is whole
    assert rows["flipflop"]["turns"] == 4 and rows["ays"]["turns"] == 12
    assert rows["team"]["turns"] == 2 * 4 * 4  # two orders, four turns each
    captured = capsys.readouterr()
    assert '"benchmark": "orchestration"' in captured.out and "cumulative" in captured.err


def _serving_missing() -> str:
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "openai") if importlib.util.find_spec(m) is None]
    return f"transformers serve needs {', '.join(missing)}" if missing else ""


@pytest.mark.skipif(bool(_serving_missing()), reason=_serving_missing() or "-")
def test_served_demo_benchmark_compares_the_same_trees(tiny_model_dir, monkeypatch, capsys, tmp_path):
    script = load_script("served_demo", monkeypatch)
    summary = script.main(["--model", str(tiny_model_dir), "--trees", "1", "--max-turns", "2", "--max-new-tokens", "4",
                           "--threads", "1", "--log", str(tmp_path / "serve.log")])
    assert summary["in_process"]["trees"] == summary["served"]["trees"] == 1
    assert summary["served_over_in_process"] > 0
    assert isinstance(summary["same_trees"], bool) and isinstance(summary["same_turn_texts"], bool)
    assert '"benchmark": "served-demo"' in capsys.readouterr().out


@pytest.mark.slow  # a minute on 2 cores: two training runs, a model saved and served
@pytest.mark.skipif(bool(_serving_missing()), reason=_serving_missing() or "-")
def test_gpu_check_runs_its_steps_in_tiny_mode(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out")}
    done = subprocess.run(["bash", str(BENCHMARKS / "gpu_check.sh"), "--tiny"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "failed steps: 0" in done.stdout
    lines = (tmp_path / "out" / "gpu_check.jsonl").read_text().splitlines()
    assert [json.loads(line)["benchmark"] for line in lines] == ["gpu-generate", "served-gpu"]


def test_seeds_benchmark_compares_two_batchings(tiny_model_dir, monkeypatch, capsys):
    script = load_script("seeds", monkeypatch)
    summary = script.main(["--model", str(tiny_model_dir), "--trees", "2", "--max-turns", "2",
                           "--max-new-tokens", "4", "--dtype", "float32", "--batch-sizes", "1,2"])
    assert summary["trees"] == 2 and summary["turns_compared"] > 0
    assert 0 <= summary["turn_share_identical"] <= 1
    assert '"benchmark": "seeds"' in capsys.readouterr().out


def test_cpu_paths_benchmark_compares_answers_with_float32(tiny_model_dir, monkeypatch, capsys):
    script = load_script("cpu_paths", monkeypatch)
    rows = script.main(["--model", str(tiny_model_dir), "--trees", "1", "--max-turns", "2",
                        "--max-new-tokens", "4", "--candidates", "float32", "dynamic int8"])
    assert [row["candidate"] for row in rows] == ["float32", "dynamic int8"]
    assert rows[0]["agreement_with_float32"] == 1.0 and rows[0]["speedup_vs_float32"] == 1.0
    assert '"benchmark": "cpu-paths"' in capsys.readouterr().out


def test_demo_time_benchmark_times_each_stage(tmp_path, monkeypatch, capsys):
    script = load_script("demo_time", monkeypatch)
    fake = tmp_path / "demo.sh"
    fake.write_text('echo "== 1/2 trees"; sleep 0.2; echo "== 2/2 pairs"; echo done\n')
    summary = script.main(["--script", str(fake), "--run-dir", str(tmp_path / "run")])
    assert [stage["stage"] for stage in summary["stages"]] == ["1/2 trees", "2/2 pairs"]
    assert summary["stages"][0]["seconds"] >= 0.2 and summary["total_seconds"] >= 0.2
    assert '"benchmark": "demo-time"' in capsys.readouterr().out


def test_fingerprints_benchmark_times_the_first_and_the_cached_fingerprint(tiny_model_dir, monkeypatch, capsys):
    script = load_script("fingerprints", monkeypatch)
    summary = script.main(["--folder", str(tiny_model_dir)])
    assert summary["same"] and summary["bytes"] > 0 and summary["fingerprint"].startswith("sha256:")
    assert '"benchmark": "fingerprints"' in capsys.readouterr().out
