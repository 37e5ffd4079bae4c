"""`pbt generate`: persuasion dialogue trees for a shard of questions, appended to JSONL, resumable.

Output, in `--out` (a folder): `trees.jsonl` and `manifest.json`, or with shards
`trees-00003-of-00010.jsonl` and `manifest-00003-of-00010.json`. A tree is appended and flushed as
soon as its wave of trees is finished. Rerunning the same command skips every question already in
the file (a partial last line left by a crash is cut off and redone); rerunning with other
settings is refused unless `--overwrite`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pbt_cli import stops
from pbt_cli.artifacts import base_manifest
from pbt_cli.config import to_plain
from pbt_cli.data.answers import PAPER, PROTOCOLS
from pbt_cli.data.jsonl import jsonl_writer
from pbt_cli.data.prompts import PROMPTS_VERSION, prompts_hash
from pbt_cli.data.questions import load_questions, select_questions
from pbt_cli.errors import PbtError, require_at_least, require_one_of
from pbt_cli.models.backends import BackendOptions, GeneratorPool
from pbt_cli.models.backends.base import Sampling, sampling_rule
from pbt_cli.models.spec import ModelSpec
from pbt_cli.outputs import TRACKING, OutputFolder, claim_output
from pbt_cli.pipeline.dialogue import SPLITS, DialogueRoles, DialogueSettings, expand_trees, turns_below
from pbt_cli.progress import NULL_PROGRESS, ProgressSink


@dataclass(frozen=True)
class GenerateConfig:
    model_a: ModelSpec
    model_b: ModelSpec
    extractor: ModelSpec | None = None  # None: agent B's model
    questions: str = "embedded:train"
    limit: int | None = None
    seed: int = 42
    shard_idx: int = 0
    num_shards: int = 1
    max_turns: int = 4
    both_first: bool = True
    split: str = "train"
    deterministic: bool = False
    sampling: Sampling = field(default_factory=lambda: Sampling(temperature=0.7, top_p=1.0, max_new_tokens=80,
                                                                min_new_tokens=8))
    extraction_max_new_tokens: int = 16
    trees_per_batch: int = 32
    out: Path = Path("trees")
    overwrite: bool = False
    backend: BackendOptions = field(default_factory=BackendOptions)
    protocol: str = PAPER  # original-code: the released code's prompts, views and stopping rule (§8.7)

    def __post_init__(self) -> None:
        require_at_least("--max-turns", self.max_turns, 2, why=" (one turn per agent)")
        require_one_of("--protocol", self.protocol, PROTOCOLS)
        require_one_of("--split", self.split, SPLITS)
        require_at_least("--trees-per-batch", self.trees_per_batch)
        require_at_least("--extraction-max-new-tokens", self.extraction_max_new_tokens)
        require_at_least("--limit", self.limit)  # here too, so --dry-run checks what the run checks
        require_at_least("--num-shards", self.num_shards)
        if not 0 <= self.shard_idx < max(self.num_shards, 1):
            raise PbtError(f"--shard-idx {self.shard_idx} is out of range for --num-shards {self.num_shards} "
                           f"(0..{self.num_shards - 1})")
        if self.sampling.min_new_tokens > self.sampling.max_new_tokens:
            raise PbtError("--min-new-tokens is larger than --max-new-tokens")

    @property
    def extractor_spec(self) -> ModelSpec:
        return self.extractor or self.model_b

    def dialogue_settings(self) -> DialogueSettings:
        sampling = self.sampling.as_greedy() if self.deterministic else self.sampling
        extraction = Sampling(temperature=0.0, max_new_tokens=self.extraction_max_new_tokens)
        return DialogueSettings(max_turns=self.max_turns, both_first=self.both_first, split=self.split,
                                sampling=sampling, extraction=extraction, seed=self.seed, protocol=self.protocol)

    def content_settings(self) -> dict[str, Any]:
        """Everything that changes the trees' content; a resumed run must match these exactly."""
        from pbt_cli.fingerprints import specs_fingerprints  # a model changed in place makes other trees

        return to_plain({
            "model_a": _model_identity(self.model_a), "model_b": _model_identity(self.model_b),
            "extractor": _model_identity(self.extractor_spec), "questions": self.questions, "limit": self.limit,
            "seed": self.seed, "shard_idx": self.shard_idx, "num_shards": self.num_shards,
            "max_turns": self.max_turns, "both_first": self.both_first, "split": self.split,
            "deterministic": self.deterministic, "sampling": self.sampling,
            "extraction_max_new_tokens": self.extraction_max_new_tokens, "prompts": prompts_hash(self.protocol),
            "backend": self.backend.backend, "protocol": self.protocol, "model_fingerprints": specs_fingerprints(self),
        })

    def output_paths(self) -> tuple[Path, Path]:
        if self.num_shards == 1:
            return self.out / "trees.jsonl", self.out / "manifest.json"
        tag = f"{self.shard_idx:05d}-of-{self.num_shards:05d}"
        return self.out / f"trees-{tag}.jsonl", self.out / f"manifest-{tag}.json"


def _model_identity(spec: ModelSpec) -> dict[str, Any]:
    return {"name": spec.name, "revision": spec.revision, "adapter": spec.adapter,
            "chat_template": str(spec.chat_template) if spec.chat_template else None,
            "dtype": spec.load.dtype, "quantization": spec.load.weights_label}


@dataclass
class GenerateResult:
    trees_path: Path
    manifest_path: Path
    selected: int
    already_done: int
    written: int
    turns: int
    generated_tokens: int
    seconds: float


def claim(cfg: GenerateConfig) -> OutputFolder:
    """Lock this shard's files in --out and check them against the settings (before any model loads)."""
    trees_path, manifest_path = cfg.output_paths()
    inputs = [cfg.questions, *cfg.model_a.local_paths(), *cfg.model_b.local_paths(),
              *cfg.extractor_spec.local_paths()]
    folder = claim_output(cfg.out, "generate", outputs=(trees_path.name, manifest_path.name, "README.md", *TRACKING),
                          inputs=inputs, overwrite=cfg.overwrite, manifest_name=manifest_path.name)
    with folder.releasing_on_error():
        if cfg.overwrite:
            folder.remove_owned()
        else:
            folder.finished_run(cfg.content_settings(), "trees", where=trees_path)
    return folder


def finished_trees(trees_path: Path) -> set[str]:
    """Question ids of the trees already in the file; a partial last line (a crash mid-write) is cut off
    so the append that follows starts clean."""
    if not trees_path.is_file():
        return set()
    done: set[str] = set()
    with open(trees_path, "rb+") as handle:
        data = handle.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            handle.truncate(end)  # drop the partial last line; it is generated again
        for number, line in enumerate(data[:end].splitlines(), 1):
            if line.strip():
                try:
                    done.add(str(json.loads(line)["tree_id"]))
                except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
                    raise PbtError(f"{trees_path} line {number} is damaged (not a tree record; two runs writing "
                                   "one file?); remove that line, or pass --overwrite to start again") from None
    return done


def run_generate(cfg: GenerateConfig, *, pool: GeneratorPool | None = None,
                 progress: ProgressSink = NULL_PROGRESS) -> GenerateResult:
    with claim(cfg) as folder:
        return _generate(cfg, folder, pool, progress)


def _generate(cfg: GenerateConfig, folder: OutputFolder, pool: GeneratorPool | None,
              progress: ProgressSink) -> GenerateResult:
    started = time.perf_counter()
    trees_path, manifest_path = cfg.output_paths()
    questions = select_questions(load_questions(cfg.questions), limit=cfg.limit, seed=cfg.seed,
                                 shard_idx=cfg.shard_idx, num_shards=cfg.num_shards)
    done = finished_trees(trees_path)
    kept = len(done)
    todo = [q for q in questions if q.question_id not in done]

    pool = pool or GeneratorPool(cfg.backend)
    pool.plan([cfg.model_a, cfg.model_b, cfg.extractor_spec])
    settings = cfg.dialogue_settings()
    manifest = base_manifest("generate", cfg)
    manifest.update(settings=cfg.content_settings(), prompts_version=PROMPTS_VERSION, status="running",
                    sampling_rule=sampling_rule(),
                    counts={"selected": len(questions), "trees": kept})
    progress.start("trees", "trees", total=len(questions), completed=len(questions) - len(todo))

    written = turns = 0
    if todo:
        roles = DialogueRoles(agents={"A": pool.get(cfg.model_a), "B": pool.get(cfg.model_b)},
                              extractor=pool.get(cfg.extractor_spec))
        # the most turns the trees to do can hold; a branch that ends early takes its subtree off
        # (expand_trees); every turn is two requests, the agent's reply and its extraction
        most_turns = len(todo) * turns_below(-1, cfg.max_turns, cfg.split)
        progress.start("turns", "turns", total=most_turns, bound=True)  # started once the models are loaded
        progress.start("requests", "requests", total=2 * most_turns, bound=True)
        models = {"A": roles.agents["A"].describe(), "B": roles.agents["B"].describe(),
                  "extractor": roles.extractor.describe()}
        folder.write_manifest(manifest)  # the models loaded: from here on there is a run to resume
        with jsonl_writer(trees_path, append=True, flush=True) as writer:  # each tree flushed as written
            for wave_start in range(0, len(todo), cfg.trees_per_batch):
                wave = todo[wave_start: wave_start + cfg.trees_per_batch]
                trees = expand_trees(wave, roles, settings, models=models, progress=progress)
                for tree in trees:
                    writer.write(tree.to_record())
                    written += 1
                    turns += len(tree.turns) - 1
                folder.update_manifest(counts={"selected": len(questions), "trees": kept + written})
                progress.advance("trees", len(trees))
                stops.check()
    usage = pool.usage()
    seconds = time.perf_counter() - started
    if folder.written_manifest is None:
        folder.write_manifest(manifest)
    folder.update_manifest(status="complete", counts={"selected": len(questions), "trees": kept + written,
                                                      "written_this_run": written, "turns_this_run": turns},
                           generation={"generated_tokens": usage.generated_tokens, "sequences": usage.sequences,
                                       "seconds": round(seconds, 2)})
    return GenerateResult(trees_path=trees_path, manifest_path=manifest_path, selected=len(questions),
                          already_done=len(questions) - len(todo), written=written, turns=turns,
                          generated_tokens=usage.generated_tokens, seconds=seconds)
