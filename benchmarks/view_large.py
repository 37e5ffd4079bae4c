"""`pbt view` on a large trees file: seconds to read and write the page, its size, and, with Debian's
chromium and chromedriver, seconds until the page is usable in a headless browser and to apply a filter.

The trees come from scripted agents (tests/watch/viewkit.py: no model), so the measure is pbt view's own.

    python benchmarks/view_large.py --trees 10000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "watch"))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", type=int, default=10000)
    parser.add_argument("--folder", type=Path, default=None, help="keep the run here (default: a temporary folder)")
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args(argv)

    from viewkit import make_run, write_questions

    from pbt_cli.view.collect import collect
    from pbt_cli.view.page import render_page

    folder = args.folder or Path(tempfile.mkdtemp(prefix="pbt-view-bench-"))
    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    questions = write_questions(folder / "questions.jsonl", args.trees)
    make_run(folder / "run", args.trees, pairs=False, questions=str(questions))
    made = time.perf_counter() - started
    trees_file = folder / "run" / "trees" / "trees.jsonl"

    started = time.perf_counter()
    data = collect([trees_file])
    collected = time.perf_counter() - started
    started = time.perf_counter()
    page = render_page(data.to_json(), "benchmark")
    out = folder / "large.view.html"
    out.write_text(page, encoding="utf-8")
    rendered = time.perf_counter() - started
    turns = sum(len(t["turns"]) - 1 for t in data.trees)
    result = {"benchmark": "view_large", "trees": len(data.trees), "turns": turns,
              "trees_file_mb": round(trees_file.stat().st_size / 1e6, 1), "page_mb": round(out.stat().st_size / 1e6, 1),
              "make_trees_s": round(made, 1), "collect_s": round(collected, 2), "render_s": round(rendered, 2)}

    import shutil

    if not args.no_browser and not (shutil.which("chromium") and shutil.which("chromedriver")):
        result["browser"] = "absent (apt-get install chromium chromium-driver)"
    elif not args.no_browser:
        from test_view import browser

        driver = browser()
        try:
            from selenium.webdriver.common.by import By
            from selenium.webdriver.support.ui import Select, WebDriverWait

            started = time.perf_counter()
            driver.get(out.as_uri())  # returns after the load event, when the first page is drawn
            WebDriverWait(driver, 300).until(lambda d: d.find_elements(By.ID, "count"))
            result["browser_load_s"] = round(time.perf_counter() - started, 2)
            started = time.perf_counter()
            Select(driver.find_element(By.ID, "f-kind")).select_by_value("resist")
            result["browser_filter_s"] = round(time.perf_counter() - started, 2)
            result["shown_after_filter"] = int(driver.find_element(By.ID, "count").get_attribute("data-count"))
            started = time.perf_counter()
            driver.find_element(By.ID, "next").click()
            result["browser_next_page_s"] = round(time.perf_counter() - started, 2)
            result["console_errors"] = len([e for e in driver.get_log("browser") if e["level"] == "SEVERE"])
        finally:
            driver.quit()
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
