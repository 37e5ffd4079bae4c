"""`pbt eval export`: pbt's results in the layouts other tools read.

- `lm-eval`: lm-evaluation-harness's results layout, one folder per model:
  `<out>/<model>/results_pbt.json` with `results` ({task: {"alias", "METRIC,none", "METRIC_stderr,none"}}),
  `configs`, `versions`, `n-shot`, `n-samples`, `higher_is_better`, `config`; and
  `samples_<task>_pbt.jsonl` (doc_id, doc, target, resps, filtered_resps, one field per scored value).
  Each evaluation is a task named `pbt_<eval>`; lm-eval's `make_table`, and the tools built on its
  files, read them as they read its own. lm-eval has a standard error where pbt has a 95% interval:
  `_stderr` is the interval's half-width / 1.96 (for Wilson's interval, close to the binomial SE), and
  the interval itself is kept in `configs[task]["metadata"]["ci95"]`.
- `inspect`: one Inspect AI eval log per result (`<out>/<eval>-<model>.json`, log format version 2):
  the task, model and dataset, the metrics as one score's metrics, and every sample with its
  messages, target (the gold aliases), final reply and its scores (C / I for each correctness
  field), so `inspect view --log-dir OUT` browses them.

Nothing here loads a model; the files are built from results.json and samples.jsonl only.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from pbt_cli.evals.report import Report, Result, dataset_of, higher_is_better
from pbt_cli.evals.results import folder_name, read_samples

FORMATS = ("lm-eval", "inspect")
Z95 = 1.959963984540054


def task_name(eval_name: str) -> str:
    return f"pbt_{eval_name}"


# --- lm-eval -------------------------------------------------------------------------------------------


def _stderr(row: dict[str, Any]) -> float | str:
    low, high = row.get("ci_low"), row.get("ci_high")
    return (high - low) / 2 / Z95 if low is not None and high is not None else "N/A"


def lm_eval_results(model: str, results: list[Result], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One model's results in lm-eval's layout (the file lm_eval.utils.make_table reads)."""
    by_task: dict[str, dict[str, Any]] = {}
    out: dict[str, Any] = {"results": {}, "groups": {}, "group_subtasks": {}, "configs": {}, "versions": {},
                           "n-shot": {}, "higher_is_better": {}, "n-samples": {}}
    for result in results:
        task = task_name(result.eval)
        by_task[task] = {"alias": task}
        dataset = dataset_of(result.data)
        settings = result.data.get("settings") or {}
        out["configs"][task] = {
            "task": task, "output_type": "generate_until", "dataset_path": dataset.get("type"),
            "dataset_name": dataset.get("config"), "test_split": dataset.get("split"), "num_fewshot": 0,
            "metadata": {"pbt_eval": result.eval, "dataset": dataset, "extractor": result.extractor,
                         "ci95": {}, "stderr": "95% interval half-width / 1.96",
                         "intervals": result.data.get("intervals"),
                         "seeds": result.data.get("seeds"), "training_seed": result.seed},
        }
        out["versions"][task] = str(settings.get("prompts") or "1")  # the prompt texts are the task's version
        out["n-shot"][task] = 0
        n = result.data.get("n")
        out["n-samples"][task] = {"original": n, "effective": n}
        out["higher_is_better"][task] = {}
    for row in rows:
        task = task_name(row["eval"])
        if task not in by_task or row.get("value") is None:
            continue
        by_task[task][f"{row['metric']},none"] = row["value"]
        by_task[task][f"{row['metric']}_stderr,none"] = _stderr(row)
        out["higher_is_better"][task][row["metric"]] = higher_is_better(row["metric"])
        out["configs"][task]["metadata"]["ci95"][row["metric"]] = [row.get("ci_low"), row.get("ci_high")]
    out["results"] = by_task
    first = results[0].data
    out["config"] = {"model": "pbt", "model_args": model, "model_name": model, "batch_size": None,
                     "limit": (first.get("settings") or {}).get("limit")}
    out["model_name"] = model
    out["model_name_sanitized"] = folder_name(model)
    out["git_hash"] = first.get("git")
    out["pbt_versions"] = first.get("versions")
    return out


def _lm_eval_sample(index: int, sample: dict[str, Any]) -> dict[str, Any]:
    scored = {k: float(v) for k, v in sample.items() if isinstance(v, bool)}
    reply = sample.get("reply") or (sample.get("replies") or [None])[-1]
    answer = sample.get("answer") or sample.get("final_answer")
    doc = {k: v for k, v in sample.items() if k not in ("conversation", "turns", "prompt", "replies", "ask")}
    return {"doc_id": index, "doc": doc, "target": sample.get("gold_aliases") or sample.get("target"),
            "arguments": None, "resps": [[reply]], "filtered_resps": [answer], "filter": "none", **scored}


def write_lm_eval(report: Report, out: Path) -> list[Path]:
    written = []
    by_model: dict[str, list[Result]] = defaultdict(list)
    for result in report.results:
        by_model[result.model].append(result)
    for model, results in by_model.items():
        folder = out / folder_name(model)
        folder.mkdir(parents=True, exist_ok=True)
        rows = [r for r in report.rows if r["model"] == model]
        path = folder / "results_pbt.json"
        path.write_text(json.dumps(lm_eval_results(model, results, rows), indent=2, default=str) + "\n",
                        encoding="utf-8")
        written.append(path)
        for result in results:
            samples_file = result.path.parent / "samples.jsonl"
            if not samples_file.is_file():
                continue
            lines = [json.dumps(_lm_eval_sample(i, s), default=str)
                     for i, s in enumerate(read_samples(samples_file))]
            target = folder / f"samples_{task_name(result.eval)}_pbt.jsonl"
            target.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
            written.append(target)
    return written


# --- Inspect AI ----------------------------------------------------------------------------------------


def _message(message: dict[str, Any]) -> dict[str, Any]:
    role = message.get("role") if message.get("role") in ("system", "user", "assistant") else "user"
    return {"role": role, "content": str(message.get("content") or "")}


def _sample_id(result: Result, index: int, sample: dict[str, Any]) -> str:
    parts = [sample.get(k) for k in ("subset", "strategy", "order") if sample.get(k)]
    key = sample.get("pair_id") or sample.get("question_id") or index
    return ":".join(str(p) for p in (*parts, key))


def _messages(sample: dict[str, Any]) -> list[dict[str, Any]]:
    if isinstance(sample.get("conversation"), list):
        return [_message(m) for m in sample["conversation"] if isinstance(m, dict)]
    if isinstance(sample.get("prompt"), list):  # flipflop: the dialogue so far, then the reply
        return [*(_message(m) for m in sample["prompt"] if isinstance(m, dict)),
                {"role": "assistant", "content": str(sample.get("response") or sample.get("reply") or "")}]
    if isinstance(sample.get("turns"), list):  # team: the transcript, each turn as its speaker's message
        return [{"role": "user", "content": str(sample.get("question") or "")},
                *({"role": "assistant", "content": f"[{t.get('model')}] {t.get('text')}"} for t in sample["turns"]
                  if isinstance(t, dict))]
    return [{"role": "user", "content": str(sample.get("question") or "")}]


def inspect_sample(result: Result, index: int, sample: dict[str, Any]) -> dict[str, Any]:
    messages = _messages(sample)
    last = next((m["content"] for m in reversed(messages) if m["role"] == "assistant"), "")
    answer = sample.get("final_answer") or sample.get("answer")
    scores = {k: {"value": "C" if v else "I", "answer": None if answer is None else str(answer)}
              for k, v in sample.items() if isinstance(v, bool) and (k.startswith("correct") or k in (
                  "initially_correct", "persuaded"))}
    metadata = {k: v for k, v in sample.items()
                if isinstance(v, (str, int, float, bool)) or v is None}
    target = sample.get("gold_aliases") or sample.get("target") or ""
    return {"id": _sample_id(result, index, sample), "epoch": 1,
            "input": str(sample.get("question") or (messages[0]["content"] if messages else "")),
            "target": [str(t) for t in target] if isinstance(target, list) else str(target),
            "messages": messages, "output": {"model": result.model, "choices": [
                {"message": {"role": "assistant", "content": last}, "stop_reason": "stop"}]},
            "scores": scores, "metadata": metadata}


def inspect_log(result: Result, rows: list[dict[str, Any]], samples: list[dict[str, Any]]) -> dict[str, Any]:
    """An Inspect AI eval log (format version 2) for one result."""
    data = result.data
    created = data.get("created") or time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(result.path.stat().st_mtime))
    if len(created) > 19 and created[19] in "+-" and ":" not in created[19:]:
        created = f"{created[:22]}:{created[22:]}"  # ISO 8601 offset with a colon, as Inspect writes it
    dataset = dataset_of(data)
    ids = [_sample_id(result, i, s) for i, s in enumerate(samples)]
    metrics = {row["metric"]: {"name": row["metric"], "value": row["value"],
                               "params": {"ci95": [row.get("ci_low"), row.get("ci_high")], "n": row.get("n")}}
               for row in rows if row.get("value") is not None}
    return {
        "version": 2, "status": "success",
        "eval": {"created": created, "task": task_name(result.eval), "task_id": f"{result.eval}-{result.model}",
                 "task_version": 0, "task_attribs": {}, "task_args": {},
                 "dataset": {"name": dataset.get("name"), "location": dataset.get("type"),
                             "samples": len(samples), "sample_ids": ids, "shuffled": False},
                 "model": f"pbt/{result.model}", "model_args": {}, "config": {},
                 "packages": {k: v for k, v in (data.get("versions") or {}).items() if isinstance(v, str)},
                 "metadata": {"pbt_eval": result.eval, "extractor": result.extractor, "seeds": data.get("seeds"),
                              "training_seed": result.seed, "intervals": data.get("intervals")}},
        "results": {"total_samples": len(samples), "completed_samples": len(samples),
                    "scores": [{"name": "pbt", "scorer": f"pbt_{result.eval}", "params": {},
                                "metrics": metrics}]},
        "stats": {"started_at": created, "completed_at": created, "model_usage": {}},
        "samples": [inspect_sample(result, i, s) for i, s in enumerate(samples)],
    }


def inspect_file_name(result: Result) -> str:
    return f"{result.eval}-{folder_name(result.model)}.json"


def write_inspect(report: Report, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for result in report.results:
        samples_file = result.path.parent / "samples.jsonl"
        samples = read_samples(samples_file) if samples_file.is_file() else []
        rows = [r for r in report.rows if r["model"] == result.model and r["eval"] == result.eval]
        path = out / inspect_file_name(result)
        path.write_text(json.dumps(inspect_log(result, rows, samples), default=str) + "\n", encoding="utf-8")
        written.append(path)
    return written


def output_names(report: Report, format: str) -> list[str]:
    """What an export writes at the top of its folder (its manifest lists them: a rerun replaces only these)."""
    if format == "lm-eval":
        return sorted({folder_name(r.model) for r in report.results})
    return sorted({inspect_file_name(r) for r in report.results})


def export(report: Report, format: str, out: Path) -> list[Path]:
    return write_lm_eval(report, out) if format == "lm-eval" else write_inspect(report, out)
