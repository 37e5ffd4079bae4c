"""Bad input, mistakes and collisions, through the real command line (README "Safety").

Every case asserts three things: exit code 2, exactly one line on stderr (no traceback without
-v), and every file that existed before the command byte-identical afterwards. The first group
are the ways `pbt` used to lose data; the second the inputs that used to end in a traceback.
Every new stage adds its cases here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import run_cli

from pbt_cli.artifacts import write_json
from pbt_cli.models.spec import ModelSpec
from pbt_cli.outputs import FolderLock, claim_output
from pbt_cli.pipeline.filter import FilterConfig, run_filter
from pbt_cli.pipeline.preprocess import PreprocessConfig, run_preprocess, split_file

PARIS = {"question_id": "q-paris", "question": "What is the capital of France?",
         "answer": {"value": "Paris", "aliases": ["Paris"], "normalized_aliases": ["paris"]}}


# --- a small world of finished artifacts ---------------------------------------------------------------


def turn(turn_id: int, parent: int | None, level: int, agent: str | None, text: str, a: str | None,
         b: str | None) -> dict:
    return {"id": turn_id, "parent": parent, "children": [], "level": level, "agent": agent, "persona": "logical",
            "text": text, "answer": {"A": a, "B": b}}


def resist_tree(tree_id: str) -> dict:
    """B keeps the right Paris against A's London: resist pairs at the leaves."""
    turns = [turn(0, None, -1, None, PARIS["question"], None, None),
             turn(1, 0, 0, "A", "London.", "London", None),
             turn(2, 1, 1, "B", "Paris.", "London", "Paris"),
             turn(3, 1, 1, "B", "London.", "London", "London")]
    for persuasion in range(3):
        a2 = len(turns)
        turns.append(turn(a2, 2, 2, "A", f"London, surely ({persuasion}).", "London", "Paris"))
        turns.append(turn(a2 + 1, a2, 3, "B", "Paris, still.", "London", "Paris"))
        turns.append(turn(a2 + 2, a2, 3, "B", "London, then.", "London", "London"))
    return {"tree_id": tree_id, "question": {**PARIS, "question_id": tree_id}, "both_first": True, "turns": turns}


def accept_tree(tree_id: str) -> dict:
    """A right, B wrong: accept pairs at the leaves."""
    turns = [turn(0, None, -1, None, PARIS["question"], None, None),
             turn(1, 0, 0, "A", "Paris.", "Paris", None),
             turn(2, 1, 1, "B", "London.", "Paris", "London"),
             turn(3, 1, 1, "B", "Paris.", "Paris", "Paris")]
    for persuasion in range(3):
        a2 = len(turns)
        turns.append(turn(a2, 2, 2, "A", f"Paris, surely ({persuasion}).", "Paris", "London"))
        turns.append(turn(a2 + 1, a2, 3, "B", "London, still.", "Paris", "London"))
        turns.append(turn(a2 + 2, a2, 3, "B", "Paris, then.", "Paris", "Paris"))
    return {"tree_id": tree_id, "question": {**PARIS, "question_id": tree_id}, "both_first": True, "turns": turns}


def write_trees(folder: Path, records: list[dict], status: str = "complete") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trees.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_json(folder / "manifest.json", {"stage": "generate", "status": status, "settings": {},
                                          "outputs": ["trees.jsonl", "manifest.json"]})
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """Finished trees, pairs, sft data and a fake finished sft run (enough for every refusal below)."""
    root = tmp_path_factory.mktemp("world")
    trees = write_trees(root / "trees", [resist_tree(f"r{i}") for i in range(4)] + [accept_tree(f"a{i}")
                                                                                     for i in range(4)])
    run_filter(FilterConfig(trees=trees, out=root / "pairs", valid_fraction=0.25, test_fraction=0.25))
    run_preprocess(PreprocessConfig(pairs=root / "pairs", tokenizer=ModelSpec.parse(str(tiny_model_dir)),
                                    out=root / "data", format="sft"))
    adapter = root / "sft"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model_dir)}))
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    write_json(adapter / "manifest.json", {"stage": "sft", "status": "complete", "settings": {}})
    return {"root": root, "trees": trees, "pairs": root / "pairs", "data": root / "data", "adapter": adapter,
            "model": tiny_model_dir}


def snapshot(*folders: Path) -> dict[Path, bytes]:
    files = {}
    for folder in folders:
        if folder.is_file():
            files[folder] = folder.read_bytes()
        elif folder.is_dir():
            files.update({p: p.read_bytes() for p in folder.rglob("*") if p.is_file()})
    return files


def assert_refused(capsys, args: list, *fragments: str, unchanged: tuple[Path, ...] = (),
                   absent: tuple[Path, ...] = ()) -> str:
    before = snapshot(*unchanged)
    result = run_cli(capsys, *args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    after = snapshot(*unchanged)
    assert {p: after.get(p) for p in before} == before, "a file that existed before was changed or deleted"
    for path in absent:
        assert not path.exists(), f"{path} was created"
    return lines[0]


# --- 1. --overwrite replaces only what pbt wrote ---------------------------------------------------------


def thesis_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "thesis.txt").write_text("four years of work\n")
    return folder


def test_overwrite_never_deletes_a_folder_pbt_did_not_write(capsys, tmp_path, world):
    out = thesis_folder(tmp_path)
    for args in (["filter", "--trees", world["trees"], "--out", out, "--overwrite"],
                 ["preprocess", "--pairs", world["pairs"], "--tokenizer", world["model"], "--out", out, "--overwrite"],
                 ["sft", "--model", world["model"], "--data", world["data"], "--out", out, "--overwrite"],
                 ["export", "--adapter", world["adapter"], "--out", out, "--overwrite"]):
        line = assert_refused(capsys, args, "thesis.txt", "did not write", unchanged=(out,))
        assert "pass --overwrite" not in line  # the refusal no longer suggests what would delete the work


def test_sft_overwrite_into_the_current_folder_is_refused(capsys, tmp_path, world, monkeypatch):
    (tmp_path / "notes.md").write_text("my notes\n")
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "analysis.py").write_text("print(1)\n")
    monkeypatch.chdir(tmp_path)
    assert_refused(capsys, ["sft", "--model", world["model"], "--data", world["data"], "--out", ".", "--overwrite"],
                   "did not write", unchanged=(tmp_path,))


def test_overwrite_deletes_only_the_entries_the_earlier_manifest_claims(tmp_path):
    out = tmp_path / "pairs"
    with claim_output(out, "filter", outputs=("train.jsonl", "manifest.json")) as folder:
        (out / "train.jsonl").write_text("{}\n")
        folder.write_manifest({"stage": "filter", "status": "complete"})
    (out / "mine.txt").write_text("not pbt's\n")
    with pytest.raises(Exception, match="mine.txt"):  # refused even with overwrite
        claim_output(out, "filter", outputs=("train.jsonl", "manifest.json"), overwrite=True)
    (out / "mine.txt").unlink()
    with claim_output(out, "filter", outputs=("train.jsonl", "manifest.json"), overwrite=True) as folder:
        assert [p.name for p in folder.owned_entries()] == ["manifest.json", "train.jsonl"]
        folder.remove_owned()
        assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".pbt-")) == []


def test_an_entry_that_appears_during_a_run_is_neither_replaced_nor_deleted(tmp_path):
    out = tmp_path / "pairs"
    with pytest.raises(Exception, match="train.jsonl"):
        with claim_output(out, "filter", outputs=("train.jsonl", "manifest.json")) as folder:
            with folder.staging() as staging:
                (staging / "train.jsonl").write_text("{}\n")
                (out / "train.jsonl").write_text("someone else's\n")  # after the claim, before the install
                folder.install(staging, {"stage": "filter", "status": "complete"})
    assert (out / "train.jsonl").read_text() == "someone else's\n"
    assert not (out / "manifest.json").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".pbt-staging")]


# --- 2. a stage never writes over its own input -----------------------------------------------------------


@pytest.mark.parametrize("case", ["filter-same", "filter-inside", "preprocess-same", "preprocess-containing",
                                  "sft-same", "dpo-adapter", "export-adapter"])
def test_out_may_not_be_inside_or_contain_the_input(capsys, world, case):
    w = world
    args = {
        "filter-same": ["filter", "--trees", w["trees"], "--out", w["trees"], "--overwrite"],
        "filter-inside": ["filter", "--trees", w["trees"], "--out", w["trees"] / "pairs", "--overwrite"],
        "preprocess-same": ["preprocess", "--pairs", w["pairs"], "--tokenizer", w["model"], "--out", w["pairs"],
                            "--overwrite"],
        "preprocess-containing": ["preprocess", "--pairs", w["pairs"], "--tokenizer", w["model"], "--out",
                                  w["root"], "--overwrite"],
        "sft-same": ["sft", "--model", w["model"], "--data", w["data"], "--out", w["data"], "--overwrite"],
        "dpo-adapter": ["dpo", "--model", w["model"], "--adapter", w["adapter"], "--data", w["data"], "--out",
                        w["adapter"], "--overwrite"],
        "export-adapter": ["export", "--adapter", w["adapter"], "--out", w["adapter"], "--overwrite"],
    }[case]
    assert_refused(capsys, args, "own input", unchanged=(w["root"],))


# --- 3. a stage never writes into another stage's folder, and checks what its input is ----------------------


def test_generate_into_a_pairs_folder_is_refused(capsys, world):
    assert_refused(capsys, ["generate", "--model-a", world["model"], "--model-b", world["model"], "--out",
                            world["pairs"], "--overwrite"], "pbt filter", unchanged=(world["pairs"],))


def test_inputs_must_come_from_the_stage_expected(capsys, world, tmp_path):
    assert_refused(capsys, ["preprocess", "--pairs", world["trees"], "--tokenizer", world["model"], "--out",
                            tmp_path / "d"], "pbt generate", "pbt filter", absent=(tmp_path / "d",))
    assert_refused(capsys, ["sft", "--model", world["model"], "--data", world["pairs"], "--out", tmp_path / "s"],
                   "pbt filter", "pbt preprocess", absent=(tmp_path / "s",))
    assert_refused(capsys, ["filter", "--trees", world["pairs"] / "train.jsonl", "--out", tmp_path / "p"],
                   absent=(tmp_path / "p",))


# --- 4. one writer per output folder -----------------------------------------------------------------------


def test_a_live_writer_holds_the_folder(capsys, world, tmp_path):
    out = tmp_path / "pairs"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".pbt-lock").write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(),
                                                   "started": "now", "command": "pbt filter ..."}))
        assert_refused(capsys, ["filter", "--trees", world["trees"], "--out", out], "being written by another pbt",
                       f"pid {sleeper.pid}", unchanged=(out,))
    finally:
        sleeper.kill()
        sleeper.wait()
    # the writer is gone: its lock is taken over with a note, and the run goes ahead
    result = run_cli(capsys, "filter", "--trees", world["trees"], "--out", out)
    assert result.exit_code == 0, result.stderr
    assert "taking over the lock" in result.stderr
    assert (out / "train.jsonl").is_file() and not (out / ".pbt-lock").exists()


def test_a_lock_from_another_host_is_kept_until_its_heartbeat_is_old(tmp_path):
    out = tmp_path / "folder"
    out.mkdir()
    lock_path = out / ".pbt-lock"
    lock_path.write_text(json.dumps({"pid": 1, "host": "another-node", "started": "now", "command": "pbt x"}))
    with pytest.raises(Exception, match="another-node"):
        FolderLock(lock_path, out).acquire()
    old = os.path.getmtime(lock_path) - 3600
    os.utime(lock_path, (old, old))  # no heartbeat for an hour: that run is dead
    lock = FolderLock(lock_path, out)
    lock.acquire()
    assert json.loads(lock_path.read_text())["pid"] == os.getpid()
    lock.release()
    assert not lock_path.exists()


# --- 5. unfinished inputs are refused unless asked for ---------------------------------------------------------


def test_filter_refuses_the_trees_of_an_unfinished_run(capsys, tmp_path):
    trees = write_trees(tmp_path / "trees", [resist_tree("r0"), accept_tree("a0")], status="interrupted")
    assert_refused(capsys, ["filter", "--trees", trees, "--out", tmp_path / "pairs"], "interrupted",
                   "--allow-partial", absent=(tmp_path / "pairs",))
    result = run_cli(capsys, "filter", "--trees", trees, "--out", tmp_path / "pairs", "--allow-partial")
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "pairs" / "manifest.json").read_text())["partial_input"] is True


# --- 6. work that cannot be written fails before any model loads -------------------------------------------------


@pytest.mark.parametrize("where", ["inside-a-file", "unwritable"])
def test_an_unwritable_out_fails_before_loading_a_model(capsys, world, tmp_path, monkeypatch, where):
    import pbt_cli.models.loading as loading

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before --out was checked")

    monkeypatch.setattr(loading, "load_model", no_loading)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = blocker / "results" if where == "inside-a-file" else Path("/proc/pbt-cannot-write-here")
    assert_refused(capsys, ["eval", "ays", "--model", world["model"], "--limit", "2", "--out", out],
                   "--out", unchanged=(blocker,))


# --- inputs that used to end in a traceback ------------------------------------------------------------------


def bad_tree(change: Callable[[dict], None]) -> dict:
    record = resist_tree("bad")
    change(record)
    return record


def chain_tree(length: int) -> dict:
    turns = [turn(0, None, -1, None, PARIS["question"], None, None)]
    for level in range(length):
        agent = "A" if level % 2 == 0 else "B"
        answer = "Paris" if agent == "B" else "London"
        turns.append(turn(level + 1, level, level, agent, f"{answer}.", "London", "Paris" if level else None))
    return {"tree_id": "chain", "question": PARIS, "both_first": True, "turns": turns}


MALFORMED_TREES = {
    "turns-not-a-list": (lambda r: r.update(turns={"0": r["turns"][0]}), "'turns' must be a list"),
    "answer-a-list": (lambda r: r["turns"][2].update(answer=["Paris", "London"]), "'answer' must be an object"),
    "answer-an-int": (lambda r: r["turns"][2].update(answer=3), "'answer' must be an object"),
    "answer-of-a-number": (lambda r: r["turns"][2].update(answer={"A": 1, "B": None}), "answer of A"),
    "parent-missing": (lambda r: r["turns"][2].update(parent=99), "names parent 99, which is missing"),
    "parent-cycle": (lambda r: (r["turns"][1].update(parent=2), r["turns"][2].update(parent=1)), "cycle"),
    "text-not-a-string": (lambda r: r["turns"][2].update(text=["Paris"]), "'text' must be a string"),
    "tree-id-a-list": (lambda r: r.update(tree_id=["bad"]), "'tree_id' must be a string"),
    "id-a-string": (lambda r: r["turns"][2].update(id="two"), "'id' must be an integer"),
}


@pytest.mark.parametrize("case", list(MALFORMED_TREES))
def test_malformed_tree_fields_are_one_line(capsys, tmp_path, case):
    change, message = MALFORMED_TREES[case]
    trees = write_trees(tmp_path / "trees", [bad_tree(change)])
    assert_refused(capsys, ["filter", "--trees", trees, "--out", tmp_path / "pairs"], "trees.jsonl line 1", message,
                   unchanged=(trees,), absent=(tmp_path / "pairs",))


def test_a_five_thousand_turn_chain_is_walked_without_recursion(capsys, tmp_path):
    trees = write_trees(tmp_path / "trees", [chain_tree(5000)])
    result = run_cli(capsys, "filter", "--trees", trees, "--out", tmp_path / "pairs")
    assert result.exit_code == 0, result.stderr
    assert "RecursionError" not in result.stderr


def test_non_utf8_bytes_name_the_file_and_line(capsys, tmp_path, world):
    trees = tmp_path / "trees"
    trees.mkdir()
    good = json.dumps(resist_tree("r0")).encode()
    (trees / "trees.jsonl").write_bytes(good + b"\n" + good.replace(b"Paris", b"Par\xe9s", 1) + b"\n")
    assert_refused(capsys, ["filter", "--trees", trees, "--out", tmp_path / "pairs"], "trees.jsonl line 2",
                   "not UTF-8", unchanged=(trees,))
    questions = tmp_path / "questions.jsonl"
    questions.write_bytes(json.dumps(PARIS).encode().replace(b"France", b"Fran\xe7e") + b"\n")
    assert_refused(capsys, ["generate", "--model-a", world["model"], "--model-b", world["model"], "--questions",
                            questions, "--out", tmp_path / "t"], "questions.jsonl line 1", "not UTF-8",
                   absent=(tmp_path / "t",))
    pairs = tmp_path / "pairs-copy"
    pairs.mkdir()
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl", "manifest.json"):
        (pairs / name).write_bytes((world["pairs"] / name).read_bytes())
    (pairs / "train.jsonl").write_bytes(b"\xff\xfe" + (pairs / "train.jsonl").read_bytes())
    assert_refused(capsys, ["preprocess", "--pairs", pairs, "--tokenizer", world["model"], "--out", tmp_path / "d"],
                   "train.jsonl line 1", "not UTF-8", unchanged=(pairs,), absent=(tmp_path / "d",))
    samples = tmp_path / "samples.jsonl"
    samples.write_bytes(b'{"order": "xy"}\n\x80\n')
    assert_refused(capsys, ["eval", "team", "--rescore", samples], "samples.jsonl line 2", "not UTF-8",
                   unchanged=(samples,))


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--max-new-tokens", "0", "--max-new-tokens must be at least 1"),
    ("--max-new-tokens", "-5", "--max-new-tokens must be at least 1"),
    ("--extraction-max-new-tokens", "0", "--extraction-max-new-tokens must be at least 1"),
    ("--temperature", "-0.1", "--temperature must be between 0"),
    ("--temperature", "2.5", "--temperature must be between 0"),
    ("--top-p", "0", "--top-p must be above 0"),
    ("--top-p", "1.5", "--top-p must be above 0"),
])
def test_sampling_settings_are_checked_before_anything_is_written(capsys, tmp_path, world, flag, value, message):
    out = tmp_path / "trees"
    assert_refused(capsys, ["generate", "--model-a", world["model"], "--model-b", world["model"], "--out", out,
                            flag, value], message, absent=(out,))


@pytest.mark.parametrize(("config", "message"), [
    ([{"base_model_name_or_path": "x"}], "must hold a JSON object"),
    ({"base_model_name_or_path": 7}, "must be a model name or path"),
    ({"base_model_name_or_path": "BASE"}, "no weights"),
])
def test_adapter_folders_of_the_wrong_shape_are_one_line(capsys, tmp_path, world, config, message):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    text = json.dumps(config).replace("BASE", str(world["model"]))
    (adapter / "adapter_config.json").write_text(text)
    assert_refused(capsys, ["eval", "ays", "--model", adapter, "--limit", "1", "--out", tmp_path / "r"], message,
                   unchanged=(adapter,), absent=(tmp_path / "r",))


def test_a_corrupt_parquet_file_is_one_line(capsys, tmp_path, world):
    data = tmp_path / "data"
    data.mkdir()
    for path in world["data"].rglob("*"):
        if path.is_file():
            target = data / path.relative_to(world["data"])
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    (data / split_file("train")).write_bytes(b"PAR1 this is not a parquet file")
    assert_refused(capsys, ["sft", "--model", world["model"], "--data", data, "--out", tmp_path / "run"],
                   "not a readable Parquet file", unchanged=(data,))


def test_a_missing_data_folder_says_it_is_missing(capsys, tmp_path, world):
    assert_refused(capsys, ["sft", "--model", world["model"], "--data", tmp_path / "nope", "--out", tmp_path / "run"],
                   "--data", "does not exist", absent=(tmp_path / "run",))


def test_a_config_value_of_the_wrong_type_names_the_file_and_key(capsys, tmp_path, world):
    config = tmp_path / "generate.yaml"
    config.write_text("max_turns: many\n")
    assert_refused(capsys, ["generate", "--config", config, "--model-a", world["model"], "--model-b", world["model"],
                            "--out", tmp_path / "t"], str(config), "max_turns", "many", absent=(tmp_path / "t",))


def test_a_broken_chat_template_names_the_file_and_line(capsys, tmp_path, world):
    template = tmp_path / "template.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }\n{% endfor %}")
    assert_refused(capsys, ["preprocess", "--pairs", world["pairs"], "--tokenizer", world["model"],
                            "--chat-template", template, "--out", tmp_path / "d"], str(template), "line",
                   unchanged=(template,), absent=(tmp_path / "d",))


def test_a_model_path_with_dot_dot_names_its_results_folder_by_the_real_folder(world, tmp_path):
    from pbt_cli.evals.results import results_folder

    spec = ModelSpec.parse(f"{world['model']}/../{world['model'].name}/..")
    assert spec.display_name == world["model"].parent.name
    assert results_folder(tmp_path, "ays", spec.display_name) == tmp_path / "ays" / world["model"].parent.name
    assert results_folder(tmp_path, "ays", "..") != tmp_path  # never the --out root itself


def test_a_farm_file_with_a_bad_record_is_one_line(capsys, tmp_path, world):
    farm = tmp_path / "NQ1.jsonl"
    farm.write_text(json.dumps({"question": "What is the capital of France?", "answer": "Paris"}) + "\n")
    assert_refused(capsys, ["eval", "farm", "--model", world["model"], "--farm", farm, "--out", tmp_path / "r"],
                   "NQ1.jsonl line 1", "adv", unchanged=(farm,), absent=(tmp_path / "r",))


# --- round 3: what an adversary found behind the first line of defence (issue 24) -------------------------------


def test_an_interrupted_judged_filter_resumes_with_the_same_command(capsys, tmp_path, world, monkeypatch):
    import signal

    import pbt_cli.pipeline.filter as filtering
    from pbt_cli import stops
    from pbt_cli.models.backends import GeneratorPool
    from pbt_cli.models.backends.scripted import ScriptedGenerator

    answered = []

    def reply(conversation, sampling) -> str:
        if stop_now and answered:
            raise stops.StopRequested(signal.SIGTERM)  # as SIGTERM does, after the first reply was kept
        answered.append(1)
        return " No" if "Answer 1:" in conversation[0]["content"] else " DISAGREE"

    monkeypatch.setattr(filtering, "JUDGE_CHUNK", 1)
    monkeypatch.setattr(GeneratorPool, "get", lambda self, spec: ScriptedGenerator(reply, name="judge"))
    out = tmp_path / "pairs"
    args = ["filter", "--trees", world["trees"], "--out", out, "--judge", world["model"]]
    stop_now = True
    stopped = run_cli(capsys, *args)
    assert stopped.exit_code == 143, stopped.stderr
    assert (out / "judge_cache.jsonl").is_file()
    assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"  # the cache is claimed
    stop_now = False
    again = run_cli(capsys, *args)
    assert again.exit_code == 0, again.stderr
    finished = json.loads((out / "manifest.json").read_text())
    assert finished["status"] == "complete"
    assert finished["sampling_rule"]["sent_with_every_request"] == {"repetition_penalty": 1.0, "min_p": 0.0}


def test_overwrite_never_deletes_a_users_file_inside_pbts_folders(capsys, tmp_path, world):
    data = tmp_path / "data"
    result = run_cli(capsys, "preprocess", "--pairs", world["pairs"], "--tokenizer", world["model"], "--out", data)
    assert result.exit_code == 0, result.stderr
    (data / "data" / "mine.parquet").write_text("hi\n")
    assert_refused(capsys, ["preprocess", "--pairs", world["pairs"], "--tokenizer", world["model"], "--out", data,
                            "--overwrite"], "data/mine.parquet", unchanged=(data,))

    run = tmp_path / "sft"
    (run / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    (run / "checkpoints" / "checkpoint-5" / "adapter_model.safetensors").write_bytes(b"")
    (run / "checkpoints" / "my_notes.txt").write_text("notes\n")
    (run / "runs").mkdir()
    (run / "runs" / "myevents.txt").write_text("mine\n")
    (run / "adapter_model.safetensors").write_bytes(b"")
    from pbt_cli.train.output import TRAIN_OUTPUTS

    write_json(run / "manifest.json", {"stage": "sft", "status": "complete", "settings": {},
                                       "outputs": list(TRAIN_OUTPUTS)})
    assert_refused(capsys, ["sft", "--model", world["model"], "--data", world["data"], "--out", run, "--overwrite"],
                   "checkpoints/my_notes.txt", "runs/myevents.txt", unchanged=(run,))


def test_a_log_file_never_writes_into_the_stages_input(capsys, tmp_path, world):
    for log_file in (world["trees"] / "trees.jsonl", world["trees"] / "filter.log"):
        assert_refused(capsys, ["--log-file", log_file, "filter", "--trees", world["trees"], "--out",
                                tmp_path / "p"], "--log-file", "own input", unchanged=(world["trees"],),
                       absent=(tmp_path / "p", world["trees"] / "filter.log"))
    assert_refused(capsys, ["--log-file", tmp_path / "p2" / "train.jsonl", "filter", "--trees", world["trees"],
                            "--out", tmp_path / "p2"], "--log-file", "this stage writes", absent=(tmp_path / "p2",))
    # a new log file in a new --out is the run's own, not a foreign file, on the first run and its rerun
    for _ in range(2):
        result = run_cli(capsys, "--log-file", tmp_path / "p3" / "filter.log", "filter", "--trees", world["trees"],
                         "--out", tmp_path / "p3")
        assert result.exit_code == 0, result.stderr
    assert (tmp_path / "p3" / "filter.log").is_file()


@pytest.mark.parametrize("where", ["missing-folder-inside-a-file", "read-only"])
def test_an_unwritable_log_file_is_one_line(capsys, tmp_path, world, where):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    log_file = blocker / "logs" / "run.log" if where != "read-only" else Path("/proc/pbt-run.log")
    assert_refused(capsys, ["--log-file", log_file, "filter", "--trees", world["trees"], "--out", tmp_path / "p"],
                   "--log-file", absent=(tmp_path / "p",))


def test_a_log_file_in_a_folder_that_does_not_exist_yet_is_made(capsys, tmp_path, world):
    log_file = tmp_path / "logs" / "deep" / "run.log"
    result = run_cli(capsys, "--log-file", log_file, "filter", "--trees", world["trees"], "--out", tmp_path / "p")
    assert result.exit_code == 0, result.stderr
    assert log_file.is_file()


def test_a_failed_push_leaves_the_card_as_it_was(capsys, tmp_path, world, monkeypatch):
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl", "manifest.json"):
        (pairs / name).write_bytes((world["pairs"] / name).read_bytes())
    (pairs / "README.md").write_text("# my card\n\n## Evaluation results\n\nhand-written\n")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: no network
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert_refused(capsys, ["push", pairs, "someone/pairs"], "cannot reach the Hugging Face hub",
                   unchanged=(pairs,))


def test_only_one_run_takes_over_a_stale_lock(tmp_path):
    """The lock is judged stale, then (before it is deleted) another run takes it over and writes its own:
    that fresh lock must survive, and this run must be refused."""
    out = tmp_path / "folder"
    out.mkdir()
    lock_path = out / ".pbt-lock"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "then"}))
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    fresh = json.dumps({"pid": live.pid, "host": socket.gethostname(), "started": "now", "command": "pbt x"})
    try:
        lock = FolderLock(lock_path, out)
        read = lock._read

        def read_then_lose_the_race():
            holder = read()
            lock_path.write_text(fresh)  # the other run took over meanwhile
            lock._read = read
            return holder

        lock._read = read_then_lose_the_race
        with pytest.raises(Exception, match=f"pid {live.pid}"):
            lock.acquire()
        assert lock_path.read_text() == fresh
    finally:
        live.kill()
        live.wait()


@pytest.mark.parametrize("content", ['{"pid": "abc", "host": "HOST"}', '[1, 2]', '{"host": "HOST"}', "not json"])
def test_a_malformed_or_pidless_lock_is_taken_over(capsys, tmp_path, world, content):
    out = tmp_path / "pairs"
    out.mkdir()
    (out / ".pbt-lock").write_text(content.replace("HOST", socket.gethostname()))
    old = os.path.getmtime(out / ".pbt-lock") - 60
    os.utime(out / ".pbt-lock", (old, old))
    result = run_cli(capsys, "filter", "--trees", world["trees"], "--out", out)
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr and "taking over the lock" in result.stderr


@pytest.mark.parametrize("beta", ["nan", "-1", "0", "inf"])
def test_dpo_beta_must_be_finite_and_positive(capsys, tmp_path, world, beta):
    assert_refused(capsys, ["dpo", "--model", world["model"], "--data", world["data"], "--out", tmp_path / "d",
                            "--beta", beta], "--beta", absent=(tmp_path / "d",))


def test_a_users_own_staging_named_folder_is_kept(capsys, tmp_path, world):
    out = tmp_path / "pairs"
    for name in (".pbt-staging-notes", ".pbt-staging-999999999"):
        (out / name).mkdir(parents=True)
        (out / name / "keep.txt").write_text("mine\n")
    result = run_cli(capsys, "filter", "--trees", world["trees"], "--out", out)
    assert result.exit_code == 0, result.stderr
    for name in (".pbt-staging-notes", ".pbt-staging-999999999"):
        assert (out / name / "keep.txt").read_text() == "mine\n"


@pytest.mark.parametrize(("args", "flag"), [
    (["generate", "--model-a", "M", "--model-b", "M", "--request-timeout", "nan", "--out", "OUT"], "--request-timeout"),
    (["filter", "--trees", "TREES", "--valid-fraction", "nan", "--out", "OUT"], "--valid-fraction"),
    (["sft", "--model", "M", "--data", "DATA", "--learning-rate", "nan", "--out", "OUT"], "--learning-rate"),
])
def test_nan_in_a_number_option_is_one_line(capsys, tmp_path, world, args, flag):
    out = tmp_path / "out"
    names = {"M": world["model"], "TREES": world["trees"], "DATA": world["data"], "OUT": out}
    assert_refused(capsys, [names.get(a, a) for a in args], flag, "finite", absent=(out,))


def test_a_full_disk_is_one_line_and_marks_the_run_failed(capsys, tmp_path, world, monkeypatch):
    import errno

    from pbt_cli.models.backends import GeneratorPool
    from pbt_cli.models.backends.scripted import ScriptedGenerator

    full = [True]

    def reply(conversation, sampling) -> str:
        if full[0]:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "pairs" / "judge_cache.jsonl"))
        return " No" if "Answer 1:" in conversation[0]["content"] else " DISAGREE"

    monkeypatch.setattr(GeneratorPool, "get", lambda self, spec: ScriptedGenerator(reply, name="judge"))
    out = tmp_path / "pairs"
    assert_refused(capsys, ["filter", "--trees", world["trees"], "--out", out, "--judge", world["model"]],
                   "no space left", "run the same command again", unchanged=(world["trees"],))
    assert json.loads((out / "manifest.json").read_text())["status"] == "failed"
    assert not list(out.glob(".pbt-tmp-*"))
    (out / ".pbt-tmp-999999999-manifest.json").write_text("{")  # left by a run killed mid-write
    full[0] = False  # space was freed: the same command resumes
    result = run_cli(capsys, "filter", "--trees", world["trees"], "--out", out, "--judge", world["model"])
    assert result.exit_code == 0, result.stderr
    assert not list(out.glob(".pbt-tmp-*"))


def no_model_loading(monkeypatch) -> None:
    import pbt_cli.models.loading as loading

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(loading, "load_model", refuse)


def test_training_data_of_the_wrong_format_or_template_is_refused_before_the_model_loads(capsys, tmp_path, world,
                                                                                        monkeypatch):
    no_model_loading(monkeypatch)
    assert_refused(capsys, ["dpo", "--model", world["model"], "--data", world["data"], "--out", tmp_path / "d"],
                   "--format sft", "needs --format dpo", unchanged=(world["data"],), absent=(tmp_path / "d",))
    template = tmp_path / "other.jinja"
    template.write_text("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}")
    other = tmp_path / "other-data"
    result = run_cli(capsys, "preprocess", "--pairs", world["pairs"], "--tokenizer", world["model"], "--chat-template",
                     template, "--format", "sft", "--out", other)
    assert result.exit_code == 0, result.stderr
    assert_refused(capsys, ["sft", "--model", world["model"], "--data", other, "--out", tmp_path / "s"],
                   "rendered for the tokenizer", unchanged=(other,), absent=(tmp_path / "s",))


def test_no_advice_to_pass_an_option_the_command_does_not_have(capsys, tmp_path, world):
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl"):
        (pairs / name).write_bytes((world["pairs"] / name).read_bytes())
    write_json(pairs / "manifest.json", {**json.loads((world["pairs"] / "manifest.json").read_text()),
                                         "status": "interrupted"})
    line = assert_refused(capsys, ["preprocess", "--pairs", pairs, "--tokenizer", world["model"], "--out",
                                   tmp_path / "d"], "interrupted", unchanged=(pairs,), absent=(tmp_path / "d",))
    assert "--allow-partial" not in line
    data = tmp_path / "data"
    for path in world["data"].rglob("*"):
        if path.is_file():
            (data / path.relative_to(world["data"])).parent.mkdir(parents=True, exist_ok=True)
            (data / path.relative_to(world["data"])).write_bytes(path.read_bytes())
    write_json(data / "manifest.json", {**json.loads((world["data"] / "manifest.json").read_text()),
                                        "status": "interrupted"})
    line = assert_refused(capsys, ["sft", "--model", world["model"], "--data", data, "--out", tmp_path / "s"],
                          "interrupted", unchanged=(data,), absent=(tmp_path / "s",))
    assert "--allow-partial" not in line


@pytest.mark.parametrize(("flag", "value"), [("--limit", "0"), ("--limit", "-5"), ("--num-shards", "0")])
def test_a_dry_run_checks_the_values_a_run_checks(capsys, tmp_path, world, flag, value):
    assert_refused(capsys, ["generate", "--model-a", world["model"], "--model-b", world["model"], "--out",
                            tmp_path / "t", flag, value, "--dry-run"], flag, "at least 1", absent=(tmp_path / "t",))


@pytest.mark.parametrize(("flag", "value"), [("--lr-scheduler-type", "bogus"), ("--optim", "bogus")])
def test_unknown_trainer_choices_are_one_line(capsys, tmp_path, world, flag, value, monkeypatch):
    no_model_loading(monkeypatch)
    assert_refused(capsys, ["sft", "--model", world["model"], "--data", world["data"], "--out", tmp_path / "s",
                            flag, value], f"{flag} must be one of", "'bogus'", absent=(tmp_path / "s",))


def test_max_steps_below_one_other_than_minus_one_is_one_line(capsys, tmp_path, world):
    assert_refused(capsys, ["sft", "--model", world["model"], "--data", world["data"], "--out", tmp_path / "s",
                            "--max-steps", "-5"], "--max-steps must be at least 1", absent=(tmp_path / "s",))


def test_reference_sft_needs_an_adapter(capsys, tmp_path, world):
    assert_refused(capsys, ["dpo", "--model", world["model"], "--data", world["data"], "--out", tmp_path / "d",
                            "--reference", "sft"], "--reference sft", "--adapter", absent=(tmp_path / "d",))


def test_a_pair_of_an_unknown_kind_is_one_line(capsys, tmp_path, world):
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    for name in ("valid.jsonl", "test.jsonl", "manifest.json"):
        (pairs / name).write_bytes((world["pairs"] / name).read_bytes())
    records = [json.loads(line) for line in (world["pairs"] / "train.jsonl").read_text().splitlines()]
    records[0]["kind"] = "banana"
    (pairs / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert_refused(capsys, ["preprocess", "--pairs", pairs, "--tokenizer", world["model"], "--out", tmp_path / "d"],
                   "train.jsonl line 1", "'banana'", unchanged=(pairs,), absent=(tmp_path / "d",))


def test_a_cut_trees_file_under_a_complete_manifest_is_one_line(capsys, tmp_path):
    trees = write_trees(tmp_path / "trees", [resist_tree("r0"), accept_tree("a0")])
    text = (trees / "trees.jsonl").read_text()
    (trees / "trees.jsonl").write_text(text[: len(text) - 40])  # cut mid-line: a copy that stopped
    assert_refused(capsys, ["filter", "--trees", trees, "--out", tmp_path / "pairs"], "unfinished line",
                   "says the run is complete", unchanged=(trees,), absent=(tmp_path / "pairs",))


def test_filter_given_a_pairs_folder_names_the_stage(capsys, tmp_path, world):
    assert_refused(capsys, ["filter", "--trees", world["pairs"], "--out", tmp_path / "p"], "`pbt filter`",
                   "`pbt generate`", unchanged=(world["pairs"],), absent=(tmp_path / "p",))


@pytest.mark.parametrize(("text", "fragments"), [
    ("max-turns: 4\nmax_turns: 6\n", ("max-turns twice",)),
    ("max_turns:\n  a: 1\n", ("max_turns", "holds a mapping")),
])
def test_config_keys_given_twice_or_as_a_mapping_are_one_line(capsys, tmp_path, world, text, fragments):
    config = tmp_path / "generate.yaml"
    config.write_text(text)
    assert_refused(capsys, ["generate", "--config", config, "--model-a", world["model"], "--model-b", world["model"],
                            "--out", tmp_path / "t"], str(config), *fragments, absent=(tmp_path / "t",))


def test_a_card_edited_by_hand_is_not_replaced(capsys, tmp_path, world):
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl", "manifest.json"):
        (pairs / name).write_bytes((world["pairs"] / name).read_bytes())
    assert run_cli(capsys, "card", pairs).exit_code == 0
    assert run_cli(capsys, "card", pairs).exit_code == 0  # pbt's own card: written again
    (pairs / "README.md").write_text((pairs / "README.md").read_text() + "\nMy notes on these pairs.\n")
    assert_refused(capsys, ["card", pairs], "edited since pbt wrote it", unchanged=(pairs,))


@pytest.mark.parametrize("stage", ["generate", "preprocess", "eval"])
def test_a_full_disk_in_any_stage_is_one_line_and_leaves_no_temporary_file(capsys, tmp_path, world, monkeypatch,
                                                                           stage):
    import contextlib
    import errno

    @contextlib.contextmanager
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(args[0]) if args else None)
        yield

    out = tmp_path / "out"
    args, manifest = {
        "generate": (["generate", "--model-a", world["model"], "--model-b", world["model"], "--limit", "1",
                      "--max-turns", "2", "--max-new-tokens", "2", "--min-new-tokens", "1"], out / "manifest.json"),
        "preprocess": (["preprocess", "--pairs", world["pairs"], "--tokenizer", world["model"]], None),
        "eval": (["eval", "ays", "--model", world["model"], "--limit", "1", "--max-new-tokens", "2"],
                 out / "ays" / world["model"].name / "results.json"),
    }[stage]
    target = {"generate": "pbt_cli.pipeline.generate.jsonl_writer", "eval": "pbt_cli.evals.results.jsonl_writer",
              "preprocess": "pbt_cli.pipeline.preprocess.write_split"}[stage]
    monkeypatch.setattr(target, full_disk if stage != "preprocess" else (lambda *a, **k: full_disk(*a).__enter__()))
    assert_refused(capsys, [*args, "--out", out], "no space left", "run the same command again")
    if manifest is not None:
        assert json.loads(manifest.read_text())["status"] == "failed"
    assert not [p for p in out.rglob(".pbt-tmp-*")] if out.exists() else True


# --- evaluation shards ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("flags", "env", "message"), [
    (["--shard-idx", "2", "--num-shards", "2"], {}, "--shard-idx 2 is out of range for --num-shards 2"),
    (["--num-shards", "0"], {}, "--num-shards must be at least 1"),
    (["--shard-idx", "-1", "--num-shards", "2"], {}, "--shard-idx -1 is out of range"),
    (["--num-shards", "3"], {"WORLD_SIZE": "2", "RANK": "0"}, "differs from the launch's 2 processes"),
    (["--num-shards", "3"], {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2"},
     "differs from the SLURM array's 2 tasks"),
])
def test_evaluation_shard_options_are_checked_before_anything_is_written(capsys, tmp_path, world, monkeypatch, flags,
                                                                         env, message):
    for name in ("WORLD_SIZE", "RANK", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "results"
    assert_refused(capsys, ["eval", "ays", "--model", world["model"], "--limit", "2", *flags, "--out", out], message,
                   absent=(out,))


def test_a_shard_of_a_folder_holding_other_settings_results_is_refused(capsys, tmp_path, world, monkeypatch):
    """Finished results made with other settings are not mixed with a sharded rerun, unless --overwrite."""
    for name in ("WORLD_SIZE", "RANK", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "results"
    common = ["eval", "ays", "--model", world["model"], "--limit", "2", "--max-new-tokens", "2", "--min-new-tokens",
              "1", "--extraction-max-new-tokens", "2", "--out", out]
    assert run_cli(capsys, *common).exit_code == 0
    folder = out / "ays" / world["model"].name
    assert_refused(capsys, [*common, "--seed", "7", "--shard-idx", "0", "--num-shards", "2"],
                   "holds results made with other settings", "--overwrite", unchanged=(folder,))
    assert not list(folder.glob("*-of-*"))


def test_a_run_clears_its_own_hosts_dead_copies_but_never_another_hosts(tmp_path):
    """Shards on several nodes share one folder: a copy being written by another host (its pid means nothing
    here) is left alone; a copy of a dead process of this host, in the old or the new name, goes."""
    from pbt_cli.artifacts import host_tag, temporary_name
    from pbt_cli.outputs import claim_output

    out = tmp_path / "results"
    out.mkdir()
    assert temporary_name("results.json").startswith(".pbt-tmp-") and host_tag() in temporary_name("x")
    other_host = "0123abcd" if host_tag() != "0123abcd" else "fedc3210"
    elsewhere = out / f".pbt-tmp-999999999-{other_host}-results-00001-of-00002.json"
    dead_here = out / f".pbt-tmp-999999999-{host_tag()}-results.json"
    old_name = out / ".pbt-tmp-999999998-results.json"
    for path in (elsewhere, dead_here, old_name):
        path.write_text("{")
    with claim_output(out, "eval ays", outputs=("results.json",), manifest_name="results.json"):
        pass
    assert elsewhere.exists() and not dead_here.exists() and not old_name.exists()
