"""Results files shared by every evaluation: metrics with bootstrap intervals, results.json, samples.jsonl.

Layout: `<out>/<eval>/<model-name>/results.json` and `samples.jsonl` (one line per question or
pair: prompts, responses, extracted answers, gold aliases, correctness). `results.json` is also
the folder's manifest (stage, settings, status, what it wrote), so evaluations resume, refuse other
settings and never delete what they did not write, like every other stage (pbt_cli/outputs.py).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pbt_cli import stops
from pbt_cli.artifacts import base_manifest, write_json
from pbt_cli.budget import Budget
from pbt_cli.console import log
from pbt_cli.data.jsonl import drop_unfinished_last_line, jsonl_writer, read_jsonl, write_jsonl
from pbt_cli.errors import PbtError
from pbt_cli.launcher import Shard, interleave
from pbt_cli.models.backends.base import sampling_rule
from pbt_cli.outputs import TRACKING, LockHeld, OutputFolder, claim_output, read_json_manifest
from pbt_cli.progress import NULL_PROGRESS, ProgressSink

BOOTSTRAP_SAMPLES = 1000
CONFIDENCE = 0.95


def bootstrap_interval(values: Sequence[float], *, statistic: Callable[[Any], float] | None = None,
                       samples: int = BOOTSTRAP_SAMPLES, seed: int = 0,
                       confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (or of `statistic` over index arrays)."""
    import numpy as np

    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, data.shape[0], size=(samples, data.shape[0]))
    stats = data[draws].mean(axis=1) if statistic is None else np.array([statistic(d) for d in draws])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return (float(low), float(high))


def _binary(values: Sequence[float]) -> bool:
    return all(v in (0.0, 1.0) for v in values)


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson's score interval of a proportion: unlike a percentile bootstrap it does not collapse to a point
    when every item succeeds or fails (4 of 4 gives [0.51, 1.00], 0 of 24 gives [0.00, 0.14])."""
    from statistics import NormalDist

    if n == 0:
        return (float("nan"), float("nan"))
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    share = successes / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    # exact at the ends (rounding would otherwise leave 1e-17 outside [0, 1] or off the observed share)
    return (0.0 if successes == 0 else max(0.0, centre - half), 1.0 if successes == n else min(1.0, centre + half))


def metric(values: Sequence[float], *, seed: int = 0) -> dict[str, Any]:
    """{"value": mean, "ci95": [low, high], "n": count} (value None when n is 0).

    A proportion (every value 0 or 1) gets Wilson's score interval; any other mean (turns to persuasion)
    a percentile bootstrap with `seed`."""
    values = [float(v) for v in values]
    if not values:
        return {"value": None, "ci95": [None, None], "n": 0}
    mean = sum(values) / len(values)
    if _binary(values):
        low, high = wilson_interval(int(sum(values)), len(values))
    else:
        low, high = _never_a_point(mean, bootstrap_interval(values, seed=seed), values, (0.0, 1.0))
    return {"value": mean, "ci95": [low, high], "n": len(values)}


def _never_a_point(mean: float, interval: tuple[float, float], values: Sequence[float],
                   bounds: tuple[float, float]) -> tuple[float, float]:
    """A bootstrap of n equal values is a point; for a score in [0, 1] (a team's half-right answers) or a
    difference of two such scores, the share of items that could differ is at most Wilson's bound for 0
    of n, so the mean can move by that much. Values outside those bounds keep the bootstrap's interval."""
    low, high = interval
    if low != high or not math.isfinite(bounds[1] - bounds[0]) or not all(bounds[0] <= v <= bounds[1]
                                                                            for v in values):
        return interval
    reach = wilson_interval(0, len(values))[1] * (bounds[1] - bounds[0]) / (2 if bounds[0] < 0 else 1)
    return (max(bounds[0], mean - reach), min(bounds[1], mean + reach))


def newcombe_paired_interval(first: Sequence[float], second: Sequence[float],
                             confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Interval of p1 - p2 for two 0/1 outcomes on the same items (Newcombe 1998, method 10: each side's
    Wilson interval, combined with the pairs' correlation). A paired bootstrap gives [0, 0] when no item
    differs; this stays honest about what n items can show."""
    n = len(first)
    both = sum(1 for a, b in zip(first, second, strict=True) if a and b)
    only_first = sum(1 for a, b in zip(first, second, strict=True) if a and not b)
    only_second = sum(1 for a, b in zip(first, second, strict=True) if b and not a)
    neither = n - both - only_first - only_second
    p1, p2 = (both + only_first) / n, (both + only_second) / n
    low1, high1 = wilson_interval(both + only_first, n, confidence)
    low2, high2 = wilson_interval(both + only_second, n, confidence)
    margins = (both + only_first) * (only_second + neither) * (both + only_second) * (only_first + neither)
    phi = (both * neither - only_first * only_second) / math.sqrt(margins) if margins else 0.0
    below = math.sqrt(max(0.0, (p1 - low1) ** 2 - 2 * phi * (p1 - low1) * (high2 - p2) + (high2 - p2) ** 2))
    above = math.sqrt(max(0.0, (high1 - p1) ** 2 - 2 * phi * (high1 - p1) * (p2 - low2) + (p2 - low2) ** 2))
    return (max(-1.0, p1 - p2 - below), min(1.0, p1 - p2 + above))


def paired_difference(first: Sequence[float], second: Sequence[float], *, seed: int = 0) -> dict[str, Any]:
    """Mean of first - second over the same items, with a paired interval: Newcombe's for two 0/1 outcomes,
    a paired bootstrap (items resampled together) otherwise."""
    if len(first) != len(second):
        raise ValueError("paired metrics need the same items")
    first, second = [float(v) for v in first], [float(v) for v in second]
    if not first:
        return {"value": None, "ci95": [None, None], "n": 0}
    differences = [a - b for a, b in zip(first, second, strict=True)]
    if _binary(first) and _binary(second):
        low, high = newcombe_paired_interval(first, second)
    else:
        mean = sum(differences) / len(differences)
        bounds = (-1.0, 1.0) if all(0 <= v <= 1 for v in first + second) else (-math.inf, math.inf)
        low, high = _never_a_point(mean, bootstrap_interval(differences, seed=seed), differences, bounds)
    return {"value": sum(differences) / len(differences), "ci95": [low, high], "n": len(differences)}


# Which interval each kind of number gets (recorded in results.json, stated in README).
INTERVALS = {"proportion": "wilson score", "mean": "percentile bootstrap (1000 draws)",
             "paired difference of proportions": "newcombe (1998) method 10, paired over shared items",
             "paired difference of means": "paired percentile bootstrap over shared items",
             "confidence": CONFIDENCE}


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def folder_name(name: str) -> str:
    name = _UNSAFE.sub("_", name).strip("_")
    return name if name and name.strip(".") else "model"


def results_folder(out: Path, eval_name: str, model_name: str) -> Path:
    return out / eval_name / folder_name(model_name)


# Options that change how fast, not what: a rerun that differs only in these reuses the results. A shard
# layout is one of them: shards run the same items with the same per-request seeds, and the merge puts
# their samples back in the selection's order, so it changes results only as a batch layout does.
_NOT_SETTINGS = ("out", "overwrite", "backend", "tracking", "shard")
RESULTS = "results.json"
SAMPLES = "samples.jsonl"
EVAL_OUTPUTS = (RESULTS, SAMPLES, "README.md", *TRACKING)
EVAL_MANIFESTS = (RESULTS, "results-*-of-*.json")  # the whole evaluation's, and each shard's
# How long a finished shard waits for another process merging into the same folder (merges take seconds).
MERGE_WAIT_SECONDS = float(os.environ.get("PBT_MERGE_WAIT_SECONDS") or 300)
# Items (questions, pairs) per resumable unit. Fixed, never tied to --batch-size, so a resumed run
# batches exactly as an uninterrupted one did and greedy results are identical (docs/method.md §6.1).
# PBT_EVAL_CHUNK_SIZE changes it (recorded in the settings, so a run resumes only with its own).
CHUNK_SIZE = int(os.environ.get("PBT_EVAL_CHUNK_SIZE") or 256)


def shard_files(shard: Shard) -> tuple[str, str]:
    """(results, samples) file names of a shard's unit; a run of one shard writes the evaluation's own."""
    if not shard.sharded:
        return RESULTS, SAMPLES
    return f"results-{shard.tag}.json", f"samples-{shard.tag}.jsonl"


def eval_settings(config: Any) -> dict[str, Any]:
    """What decides an evaluation's results: its options, the prompt texts it sends, and its chunking."""
    from pbt_cli.config import to_plain
    from pbt_cli.data.prompts import prompts_hash

    settings = {k: v for k, v in to_plain(config).items() if k not in _NOT_SETTINGS}
    return {**settings, "prompts": prompts_hash(), "chunk_size": CHUNK_SIZE, **input_fingerprints(config)}


def input_fingerprints(config: Any) -> dict[str, Any]:
    """Content fingerprints of the models (weights, adapter, chat template) and of the local data files an
    evaluation reads (pbt_cli/fingerprints.py): a changed input makes earlier results stale, not reusable."""
    import dataclasses

    from pbt_cli.fingerprints import fingerprints, specs_fingerprints
    from pbt_cli.models.spec import ModelSpec

    data: dict[str, str] = {}
    for item in dataclasses.fields(config) if dataclasses.is_dataclass(config) else ():
        value = getattr(config, item.name)
        if item.name in _NOT_SETTINGS or isinstance(value, ModelSpec) or not isinstance(value, (str, Path)):
            continue
        if value and Path(value).expanduser().exists():
            data[item.name] = fingerprints([value])[str(value)]
    return {"model_fingerprints": specs_fingerprints(config), "data_fingerprints": data}


def model_paths(*specs: Any) -> list[str]:
    return [path for spec in specs if spec is not None for path in spec.local_paths()]


def extractor_identity(extractor: Any) -> dict[str, Any]:
    """Who read the answers, comparable across results (`pbt eval report` groups by it)."""
    info = extractor.describe()
    return info.get("identity") or {"name": info.get("name"), "revision": info.get("revision"),
                                    "adapter": info.get("adapter"),
                                    "chat_template_hash": info.get("chat_template_hash")}


MetricsOf = Callable[[Sequence[dict[str, Any]]], dict[str, Any]]


class EvalRun:
    """An evaluation's results folder, `<out>/<eval>/<model>/`: claimed, resumable chunk by chunk.

    Finished samples are appended to `samples.jsonl` after every chunk of items (each chunk is one
    batched protocol run); a rerun of the same command reads them back, drops a chunk a kill cut
    short, and continues with the next chunk. `results.json` says `running` until `finish` writes
    the metrics, computed from all the samples, so resumed and uninterrupted runs agree.

    A shard (`--num-shards` > 1) runs items i with i mod n = its index into `samples-K-of-N.jsonl`,
    with `results-K-of-N.json` as its manifest and its own lock, so the shards of one evaluation write
    one folder side by side. The shard that finishes last (or any shard's command rerun once all are
    done) merges them: `samples.jsonl` in the selection's order and `results.json` with the metrics
    computed over every sample, exactly as one process would have written them.
    """

    def __init__(self, folder: OutputFolder, eval_name: str, config: Any, settings: dict[str, Any], *,
                 shard: Shard, metrics_of: MetricsOf) -> None:
        self.folder = folder
        self.path = folder.path
        self.eval_name = eval_name
        self.config = config
        self.settings = settings
        self.shard = shard
        self.metrics_of = metrics_of
        self.reused: dict[str, Any] | None = None
        self._samples: list[dict[str, Any]] = []
        self._merged: list[dict[str, Any]] | None = None
        self._merge_written = False
        self._layout: dict[str, int] = {}

    @property
    def samples_path(self) -> Path:
        return self.path / shard_files(self.shard)[1]

    def __enter__(self) -> EvalRun:
        return self

    def __exit__(self, kind: Any, exc: Any, traceback: Any) -> None:
        self.folder.__exit__(kind, exc, traceback)

    def track(self, results: dict[str, Any]) -> None:
        """Send the metrics and a few samples to the tracker of `--report-to`, if any (a shard only once
        its merge wrote the whole evaluation's metrics)."""
        from pbt_cli.config import to_plain
        from pbt_cli.tracking import TrackingOptions, report

        if "metrics" not in results or (self.shard.sharded and not self._merge_written):
            return  # a shard reports only the merge it wrote (the others' results are the same run's)
        options = getattr(self.config, "tracking", None) or TrackingOptions()
        report(options, folder=self.path, name=f"{self.eval_name}-{self.path.name}", config=to_plain(self.config),
               metrics=results.get("metrics") or {}, samples=self.samples())

    def _shard_record(self) -> dict[str, Any]:
        return {**self.shard.describe(), **self._layout} if self.shard.sharded else {}

    def start(self) -> None:
        manifest = base_manifest(f"eval {self.eval_name}", self.config)
        manifest.update(eval=self.eval_name, status="running", settings=self.settings, sampling_rule=sampling_rule())
        if self.shard.sharded:
            manifest["shard"] = self._shard_record()
        self.folder.write_manifest(manifest)

    def chunks(self, items: Sequence[Any], samples_per_item: int = 1,
               progress: ProgressSink = NULL_PROGRESS, budget: Budget | None = None) -> Iterator[list[Any]]:
        """The chunks of `items` (this shard's share of them) still to run, after reading back the samples
        of finished chunks.

        Items finish a chunk at a time (each phase of a chunk is one batched call), so with a `budget`
        the progress also counts requests, which the backends report batch by batch inside a chunk:
        that is what moves, and what the ETA is computed from."""
        self._layout = {"total_items": len(items), "samples_per_item": samples_per_item}
        items = self.shard.take(items)
        self._layout["items"] = len(items)
        done = self._resume(items, samples_per_item)
        progress.start(self.eval_name, "items", total=len(items), completed=done)
        if budget is not None:
            progress.start("requests", "requests", total=(len(items) - done) * budget.requests,
                           bound=not budget.exact)
        for start in range(done, len(items), CHUNK_SIZE):
            chunk = list(items[start: start + CHUNK_SIZE])
            yield chunk
            progress.advance(self.eval_name, len(chunk))
            if budget is not None:  # the chunk's unused bound is dropped: what is left is the rest's
                progress.expect("requests", (len(items) - start - len(chunk)) * budget.requests,
                                bound=not budget.exact)

    def _resume(self, items: Sequence[Any], samples_per_item: int) -> int:
        """Samples of whole chunks already written; the file is cut back to them. Returns items done."""
        if not self.samples_path.is_file():
            return 0
        drop_unfinished_last_line(self.samples_path)
        stored = [record for _, record in read_jsonl(self.samples_path, what="an evaluation's samples file")]
        kept = done = 0
        for start in range(0, len(items), CHUNK_SIZE):
            size = min(CHUNK_SIZE, len(items) - start) * samples_per_item
            if kept + size > len(stored):
                break
            kept += size
            done = min(start + CHUNK_SIZE, len(items))
        if kept != len(stored):  # a chunk written only in part: run it again, whole
            write_jsonl(self.samples_path, stored[:kept])
        self._samples = stored[:kept]
        if kept:
            log.info("resuming %s in %s: %d of %d items already done", self.eval_name, self.path, done, len(items))
        return done

    def append(self, samples: list[dict[str, Any]]) -> None:
        """Keep a finished chunk's samples (flushed), then honour a pending stop."""
        if self.folder.written_manifest is None:  # the first chunk: from now on there is something to resume
            self.start()
        with jsonl_writer(self.samples_path, append=True, flush=True) as writer:
            writer.write_all(samples)
        self._samples.extend(samples)
        self.folder.update_manifest(progress={"samples": len(self._samples)})
        stops.check()

    def samples(self) -> list[dict[str, Any]]:
        return list(self._merged if self._merged is not None else self._samples)

    def finish(self, *, models: dict[str, Any], seeds: dict[str, Any], extractor: dict[str, Any] | None = None,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The metrics over every sample in `results.json`; a shard records that it is done, and merges
        when every shard is."""
        if self.folder.written_manifest is None:
            self.start()
        results = base_manifest(f"eval {self.eval_name}", self.config)
        results.update(eval=self.eval_name, status="complete", n=len(self._samples), seeds=seeds,
                       models=models, extractor=extractor, settings=self.settings,
                       created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), intervals=INTERVALS,
                       base_weights=_base_weights(self.config), sampling_rule=sampling_rule(), **(extra or {}))
        if not self.shard.sharded:
            results["metrics"] = self.metrics_of(self._samples)
            return self.folder.write_manifest(results)
        if not self.samples_path.is_file():  # a shard with no items (more shards than items) writes none
            self.samples_path.touch()
        # the id lets a merge tell these files from an earlier run's of the same shard
        shard_done = self.folder.write_manifest({**results, "shard": {**self._shard_record(),
                                                                     "run_id": uuid.uuid4().hex}})
        merged = merge_shards(self.path, self.eval_name, self.config, self.settings, self.shard.count,
                              self.metrics_of, overwrite=getattr(self.config, "overwrite", False))
        if merged is None:
            return {**shard_done, "merged": False, "shards_complete": shards_complete(self.path, self.settings,
                                                                                      self.shard.count)}
        self.adopt(merged)
        return merged.results

    def adopt(self, merged: Merge) -> None:
        """The whole evaluation's samples, from the merge of the shards."""
        self._merged, self._merge_written = merged.samples, merged.written


def _shard_manifests(path: Path, count: int) -> dict[str, dict[str, Any]]:
    """Each shard's manifest by file name ({} for a shard not started)."""
    names = [shard_files(Shard(index, count))[0] for index in range(count)]
    return {name: read_json_manifest(path / name) if (path / name).is_file() else {} for name in names}


def _is_done(manifest: dict[str, Any], settings: dict[str, Any]) -> bool:
    return manifest.get("status") == "complete" and manifest.get("settings") == settings


def _run_ids(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {name: (manifest.get("shard") or {}).get("run_id") for name, manifest in manifests.items()}


def shards_complete(path: Path, settings: dict[str, Any], count: int) -> list[int]:
    """Indices of the shards of `count` whose results are complete with these settings."""
    return [index for index, manifest in enumerate(_shard_manifests(path, count).values())
            if _is_done(manifest, settings)]


_SHARD_SAMPLES = re.compile(r"samples-(\d+)-of-(\d+)\.jsonl")


def unmerged_shard_samples(path: Path) -> tuple[list[Path], list[Path]]:
    """(shown, left out): the samples files of the shards in `path` that belong to one run, and the rest.

    A folder can hold shards of two layouts (a rerun with another --num-shards) or of other settings (a
    rerun with another seed): their samples together would count some items twice and mix two runs. The
    shards shown are those of the layout and settings written to last; the others are named, not shown.
    """
    groups: dict[tuple[int, str], list[tuple[int, Path, float]]] = {}
    for samples in path.glob("samples-*-of-*.jsonl"):
        found = _SHARD_SAMPLES.fullmatch(samples.name)
        if not found:
            continue
        index, count = int(found[1]), int(found[2])
        results = path / shard_files(Shard(index, count))[0]
        manifest = read_json_manifest(results) if results.is_file() else {}
        key = (count, json.dumps(manifest.get("settings"), sort_keys=True, default=str))
        written = max(_modified(samples), _modified(results))
        groups.setdefault(key, []).append((index, samples, written))
    if not groups:
        return [], []
    newest = max(groups, key=lambda key: max(written for *_, written in groups[key]))
    shown = [samples for _, samples, _ in sorted(groups.pop(newest))]
    return shown, sorted(samples for group in groups.values() for _, samples, _ in group)


def _modified(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # not written yet, or a merge removing it just now
        return 0.0


def claim_when_free(path: Path, stage: str, **claim: Any) -> OutputFolder:
    """claim_output, waiting while another live process holds the folder's lock (a shard merging)."""
    deadline = time.monotonic() + MERGE_WAIT_SECONDS
    while True:
        try:
            return claim_output(path, stage, **claim)
        except LockHeld as held:
            if time.monotonic() > deadline:
                raise PbtError(f"every shard is done but not merged: {held}; once it ends, rerun any shard's "
                               "command to merge") from None
            time.sleep(0.5)


@dataclass(frozen=True)
class Merge:
    """A merge's outcome: the whole evaluation's results and samples; `written` when this call wrote them
    (only the writer reports them to a tracker), not when it found them merged already."""

    results: dict[str, Any]
    samples: list[dict[str, Any]]
    written: bool


def _shard_parts(path: Path, names: Sequence[tuple[str, str]],
                 manifests: Sequence[dict[str, Any]]) -> list[list[list[dict[str, Any]]]]:
    """Each shard's samples, grouped per item, checked against its manifest's counts."""
    parts = []
    for (_, samples_name), manifest in zip(names, manifests, strict=True):
        layout = manifest.get("shard") or {}
        per_item = int(layout.get("samples_per_item") or 1)
        records = read_samples(path / samples_name) if int(layout.get("items", -1)) else []
        if len(records) != int(layout.get("items", -1)) * per_item:
            raise PbtError(f"{path / samples_name} holds {len(records)} samples where its manifest counts "
                           f"{layout.get('items')} items of {per_item}; rerun that shard with --overwrite")
        parts.append([records[i: i + per_item] for i in range(0, len(records), per_item)])
    totals = {(manifest.get("shard") or {}).get("total_items") for manifest in manifests}
    if len(totals) != 1 or sum(len(part) for part in parts) != totals.pop():
        raise PbtError(f"the shards in {path} did not split the same items (their manifests disagree on the "
                       "count); rerun them with --overwrite")
    return parts


def merge_shards(path: Path, eval_name: str, config: Any, settings: dict[str, Any], count: int,
                 metrics_of: MetricsOf, *, overwrite: bool = False) -> Merge | None:
    """When all `count` shards in `path` are complete with these settings: write `samples.jsonl` (items in
    the selection's order) and `results.json` (the metrics over every sample); None while a shard is
    still to finish.

    Safe to call from every shard as it finishes: the check runs under the folder's own lock, taken
    after this shard wrote `complete`, so the last of several shards finishing at once sees them all.
    Results already merged from these very shard files are reused."""
    stage = f"eval {eval_name}"
    if len(shards_complete(path, settings, count)) < count:
        return None
    with claim_when_free(path, stage, outputs=EVAL_OUTPUTS, overwrite=overwrite, manifest_name=RESULTS,
                         manifest_patterns=EVAL_MANIFESTS) as folder:
        # read again under the lock: another shard may have merged while this one waited for it
        folder.previous = read_json_manifest(path / RESULTS) if (path / RESULTS).is_file() else None
        names = [shard_files(Shard(index, count)) for index in range(count)]
        by_name = _shard_manifests(path, count)
        manifests, sources = list(by_name.values()), _run_ids(by_name)
        if not all(_is_done(manifest, settings) for manifest in manifests):  # a shard's rerun began meanwhile
            return None
        previous = folder.previous
        if previous is not None and previous.get("status") == "complete" \
                and (previous.get("shards") or {}).get("sources") == sources and previous.get("settings") == settings:
            return Merge(previous, read_samples(path / SAMPLES), written=False)
        if previous is not None and previous.get("settings") != settings and not overwrite:
            raise PbtError(f"{path / RESULTS} holds results made with other settings "
                           f"({', '.join(folder.differing_settings(settings))}); the shards are done but were not "
                           "merged; rerun a shard's command with --overwrite to replace those results")
        try:
            parts = _shard_parts(path, names, manifests)
        except (PbtError, OSError):
            if _run_ids(_shard_manifests(path, count)) != sources:  # a shard's rerun replaced its files meanwhile
                return None
            raise
        samples = interleave(parts)
        first = manifests[0]
        results = {key: value for key, value in first.items() if key not in ("shard", "outputs", "progress")}
        results.update(status="complete", n=len(samples), metrics=metrics_of(samples),
                       created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       shards={"count": count, "sources": sources, "launcher": (first.get("shard") or {}).get("launcher"),
                               "commands": [manifest.get("command") for manifest in manifests]})
        if isinstance(results.get("config"), dict):
            results["config"] = {**results["config"], "shard": None}  # the layout is under "shards"
        with stops.critical():
            # `running` first: a kill from here on leaves no complete results.json over missing samples
            folder.write_manifest({**results, "status": "running"})  # it claims samples.jsonl before it exists
            folder.remove_owned(keep=(RESULTS,))  # what an earlier run wrote here: samples, card, tracking
            write_jsonl(path / SAMPLES, samples)
            folder.write_manifest(results)
        log.info("merged %d shards of %s into %s (%d samples)", count, eval_name, path, len(samples))
        return Merge(folder.written_manifest or results, samples, written=True)


def _base_weights(config: Any) -> dict[str, Any]:
    """How each evaluated model's weights were obtained (a GGUF file dequantised, a hub revision, ...)."""
    import dataclasses

    from pbt_cli.fingerprints import base_weights
    from pbt_cli.models.spec import ModelSpec

    return {item.name: base_weights(getattr(config, item.name))
            for item in (dataclasses.fields(config) if dataclasses.is_dataclass(config) else ())
            if isinstance(getattr(config, item.name), ModelSpec) and not getattr(config, item.name).is_served}


def open_eval(out: Path, eval_name: str, model_name: str, config: Any, *, metrics_of: MetricsOf,
              inputs: Sequence[Any] = (), overwrite: bool = False, shard: Shard | None = None) -> EvalRun:
    """Claim `<out>/<eval>/<model>/` (or one shard's files in it) for an evaluation, before any model loads.

    Finished results with the same settings are reused (`run.reused`); other settings are refused
    unless `overwrite`, which deletes only what an earlier evaluation wrote there; an unfinished
    run with the same settings resumes. A shard whose own part is done (a rerun) merges, if it can,
    and reuses that.
    """
    shard = shard or Shard()
    path = results_folder(out, eval_name, model_name)
    settings = eval_settings(config)
    stage = f"eval {eval_name}"
    results_name, _ = shard_files(shard)
    folder = claim_output(path, stage, outputs=shard_files(shard), inputs=inputs, overwrite=overwrite,
                          manifest_name=results_name, manifest_patterns=EVAL_MANIFESTS) if shard.sharded else \
        claim_output(path, stage, outputs=EVAL_OUTPUTS, inputs=inputs, overwrite=overwrite, manifest_name=RESULTS,
                     manifest_patterns=EVAL_MANIFESTS)
    run = EvalRun(folder, eval_name, config, settings, shard=shard, metrics_of=metrics_of)
    with folder.releasing_on_error():
        if overwrite:
            folder.remove_owned()
            return run
        if shard.sharded:
            whole = path / RESULTS
            done = read_json_manifest(whole) if whole.is_file() else None
            if done is not None and done.get("settings") != settings:
                raise PbtError(f"{whole} holds results made with other settings; choose another --out or pass "
                               "--overwrite to replace them")
            if done is not None and done.get("status") == "complete":
                run.reused = {**done, "reused": True}  # the whole evaluation is done, in whatever layout
                return run
        previous = folder.finished_run(settings, "results", where=path / results_name)
        if previous is not None and shard.sharded:  # this shard is done: merge, if every shard is
            merged = merge_shards(path, eval_name, config, settings, shard.count, metrics_of)
            if merged is not None:
                run.adopt(merged)
                run.track(merged.results)
            previous = merged.results if merged else {**previous, "merged": False,
                                                      "shards_complete": shards_complete(path, settings, shard.count)}
        if previous is not None:
            run.reused = {**previous, "reused": True}
    return run


def write_results(folder: Path, *, eval_name: str, config: Any, metrics: dict[str, Any],
                  samples: list[dict[str, Any]], models: dict[str, Any], seeds: dict[str, Any],
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write a finished evaluation in one go (for callers that do not resume, e.g. tests of old layouts)."""
    folder.mkdir(parents=True, exist_ok=True)
    results = base_manifest(f"eval {eval_name}", config)
    results.update(eval=eval_name, status="complete", metrics=metrics, n=len(samples), seeds=seeds, models=models,
                   settings=eval_settings(config), created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   outputs=list(EVAL_OUTPUTS), sampling_rule=sampling_rule(), **(extra or {}))
    write_jsonl(folder / SAMPLES, samples)
    write_json(folder / RESULTS, results)
    return results


def read_samples(path: Path) -> list[dict[str, Any]]:
    if path.is_dir():
        path = path / "samples.jsonl"
    if not path.is_file():
        raise PbtError(f"{path} does not exist; give a samples.jsonl written by `pbt eval`")
    return [record for _, record in read_jsonl(path, what="a samples file from `pbt eval`")]


def format_metric(entry: dict[str, Any]) -> str:
    value = entry.get("value")
    if value is None:
        return "-"
    low, high = entry.get("ci95") or (None, None)
    interval = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
    return f"{value:.3f}{interval}"
