"""`pbt view` and `pbt diagnostics` (issue 27, items 3-4): the page's data, the command's safety, and the
page itself in a real headless browser (Debian's chromium and chromedriver; skipped where absent)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from helpers import run_cli
from viewkit import make_run

from pbt_cli.data.trees import read_trees
from pbt_cli.pipeline.diagnostics import tree_diagnostics
from pbt_cli.view.collect import collect

DOCS = Path(__file__).parents[2] / "docs"


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("view") / "run", 24, ays=8)


def page_data(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    payload = re.search(r'<script type="application/json" id="pbt-data">(.*?)</script>', text, re.S).group(1)
    assert "<" not in payload  # a model's "</script>" cannot end the data early
    return json.loads(payload)


def test_a_run_folder_gives_trees_with_their_pairs_transcripts_and_diagnostics(run_folder):
    data = collect([run_folder])
    pair_lines = sum(len((run_folder / "pairs" / f"{s}.jsonl").read_text().splitlines())
                     for s in ("train", "valid", "test"))
    assert len(data.trees) == 24 and len(data.pairs) == pair_lines > 0 and len(data.samples) == 8
    marked = [p for tree in data.trees for p in tree["pairs"]]
    assert len(marked) == pair_lines and not any(p["computed"] for p in marked)  # from the pairs files
    assert all(p["kind"] in ("resist", "accept", "none") and 0 <= p["margin"] <= 1 for p in marked)
    tree = data.trees[0]
    root = next(t for t in tree["turns"] if t["parent"] is None)
    for turn in tree["turns"]:  # branch score: the turn's own correct answers plus its children's branches
        children = [t for t in tree["turns"] if t["parent"] == turn["id"]]
        assert turn["branch"] == turn["own"] + sum(c["branch"] for c in children)
    assert root["branch"] == sum(t["own"] for t in tree["turns"])
    assert {t["persona"] for t in tree["turns"] if t["level"] == 2} <= {"logical", "emotional", "credibility"}
    sample = data.samples[0]
    assert sample["eval"] == "ays" and len(sample["transcript"]) == 6 and "correct after" in sample["scoring"]
    assert data.diagnostics == json.loads((run_folder / "pairs" / "manifest.json").read_text())["diagnostics"]


def test_trees_alone_get_pairs_by_the_filters_rule(run_folder):
    data = collect([run_folder / "trees"])
    computed = [p for tree in data.trees for p in tree["pairs"]]
    assert computed and all(p["computed"] for p in computed)
    assert len(computed) == len(collect([run_folder]).pairs)  # the same rule as `pbt filter` at margin 0.5
    assert any("margin 0.5" in note for note in data.notes)


def test_diagnostics_count_what_the_trees_hold(run_folder):
    trees = list(read_trees(run_folder / "trees"))
    result = tree_diagnostics(trees)
    turns = sum(len(t.turns) - 1 for t in trees)
    assert result["trees"] == 24 and result["all"]["turns"] == turns
    assert sum(row["turns"] for row in result["by_persona_level"]) == turns
    all_row = result["all"]
    assert all_row["answered"] + all_row["none"] + all_row["stance"] == turns
    assert 0 < all_row["none"] < turns  # the scripted agents give no answer one time in ten
    leaves = sum(1 for t in trees for turn in t.turns if not turn.children and not turn.is_root)
    assert sum(result["stop_totals"].values()) == leaves
    assert {row["level"] for row in result["by_level"]} == {0, 1, 2, 3}


def test_diagnostics_command_prints_the_table_and_filter_stores_it(capsys, run_folder):
    result = run_cli(capsys, "diagnostics", run_folder / "trees")
    assert result.exit_code == 0, result.stderr
    assert "accuracy" in result.stdout and "resist" in result.stdout and "branches ended by" in result.stdout
    stored = run_cli(capsys, "diagnostics", run_folder / "pairs", "--json")
    assert json.loads(stored.stdout) == tree_diagnostics(read_trees(run_folder / "trees"))


def test_view_writes_one_self_contained_page_and_replaces_only_its_own(capsys, run_folder, tmp_path):
    out = tmp_path / "run.html"
    result = run_cli(capsys, "view", run_folder, "--out", out)
    assert result.exit_code == 0, result.stderr
    text = out.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)  # nothing to fetch: opens from disk
    assert len(page_data(out)["trees"]) == 24
    assert run_cli(capsys, "view", run_folder / "trees", "--out", out).exit_code == 0  # its own page: replaced
    foreign = tmp_path / "notes.html"
    foreign.write_text("<html>my notes</html>")
    refused = run_cli(capsys, "view", run_folder, "--out", foreign)
    assert refused.exit_code == 2 and "not written by `pbt view`" in refused.stderr
    assert foreign.read_text() == "<html>my notes</html>"
    missing = run_cli(capsys, "view", tmp_path / "nothing")
    assert missing.exit_code == 2 and "does not exist" in missing.stderr


# --- in a real browser -----------------------------------------------------------------------------------


def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver) to run the browser test")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1100,760"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=options)


def test_the_page_loads_without_errors_expands_a_tree_and_filters(capsys, run_folder, tmp_path):
    out = tmp_path / "run.html"
    assert run_cli(capsys, "view", run_folder, "--out", out).exit_code == 0
    driver = browser()
    try:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select

        driver.get(out.as_uri())
        count = driver.find_element(By.ID, "count")
        assert count.get_attribute("data-count") == "24"
        tree = driver.find_element(By.CSS_SELECTOR, "details.tree")
        first_turn = tree.find_element(By.CSS_SELECTOR, "details.turn")
        assert not first_turn.is_displayed()
        tree.find_element(By.TAG_NAME, "summary").click()  # a tree expands
        assert tree.get_attribute("open") is not None and first_turn.is_displayed()
        first_turn.find_element(By.TAG_NAME, "summary").click()
        assert first_turn.find_element(By.CSS_SELECTOR, ".text").is_displayed()

        Select(driver.find_element(By.ID, "f-kind")).select_by_value("resist")  # a filter narrows the list
        narrowed = int(driver.find_element(By.ID, "count").get_attribute("data-count"))
        assert 0 < narrowed < 24
        search = driver.find_element(By.ID, "search")
        search.send_keys("zzzz-no-such-text")
        assert driver.find_element(By.ID, "count").get_attribute("data-count") == "0"

        driver.find_element(By.CSS_SELECTOR, "nav button[data-tab=samples]").click()
        assert driver.find_element(By.ID, "count").get_attribute("data-count") == "8"
        driver.find_element(By.CSS_SELECTOR, "nav button[data-tab=diagnostics]").click()
        assert "branches ended by" in driver.find_element(By.ID, "diagnostics").text
        driver.find_element(By.CSS_SELECTOR, "nav button[data-tab=trees]").click()
        if os.environ.get("PBT_VIEW_SCREENSHOT"):  # README's picture: PBT_VIEW_SCREENSHOT=1 pytest -k browser
            tree = driver.find_elements(By.CSS_SELECTOR, "details.tree")[1]
            tree.find_element(By.TAG_NAME, "summary").click()
            for turn in tree.find_elements(By.CSS_SELECTOR, "details.turn")[:4]:
                turn.find_element(By.TAG_NAME, "summary").click()
            driver.save_screenshot(str(DOCS / "view.png"))
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()


def test_filter_prints_the_diagnostics_and_keeps_them_in_its_manifest(capsys, run_folder, tmp_path):
    result = run_cli(capsys, "filter", "--trees", run_folder / "trees", "--out", tmp_path / "pairs")
    assert result.exit_code == 0, result.stderr
    assert "tree diagnostics of" in result.stderr and "branches ended by" in result.stderr
    manifest = json.loads((tmp_path / "pairs" / "manifest.json").read_text())
    assert manifest["diagnostics"] == tree_diagnostics(read_trees(run_folder / "trees"))


def test_the_large_view_benchmark_runs(tmp_path, monkeypatch, capsys):
    import importlib.util

    script = Path(__file__).parents[2] / "benchmarks" / "view_large.py"
    spec = importlib.util.spec_from_file_location("benchmark_view_large", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--trees", "5", "--folder", str(tmp_path / "b"), "--no-browser"])
    assert result["trees"] == 5 and result["turns"] > 5 and result["page_mb"] >= 0
    assert '"benchmark": "view_large"' in capsys.readouterr().out


def test_team_and_farm_transcripts_show_who_said_what_and_the_scoring(tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1] / "evals"))
    import test_farm
    import test_team

    _, team_folder, _ = test_team.run(tmp_path / "team")
    _, farm_folder, _ = test_farm.run(tmp_path / "farm")
    data = collect([tmp_path / "team" / "results", tmp_path / "farm" / "results"])
    team = [s for s in data.samples if s["eval"] == "team"]
    farm = [s for s in data.samples if s["eval"] == "farm"]
    assert team and farm
    assert {s["label"] for s in team} == {"team xy", "team yx"}
    assert all(m["note"].startswith("answer: ") for s in team for m in s["transcript"])
    assert all("team correct" in s["scoring"] and isinstance(s["flipped"], bool) for s in team)
    assert all("persuaded" in s["scoring"] and s["label"].startswith("farm ") for s in farm)
    assert all(s["transcript"] and s["flipped"] == s["scoring"]["persuaded"] for s in farm)


def test_model_text_cannot_break_out_of_the_page(tmp_path):
    from pbt_cli.view.page import render_page

    nasty = "</script><!-- <script>alert(1)</script>"
    page = tmp_path / "nasty.html"
    page.write_text(render_page({"sources": [], "trees": [], "pairs": [], "notes": [], "diagnostics": None,
                                 "samples": [{"question": nasty, "transcript": [{"who": "user", "text": nasty}]}]},
                                "t"), encoding="utf-8")
    assert page_data(page)["samples"][0]["question"] == nasty
    assert page.read_text().count("</script>") == 2  # the data block's and the code's own
