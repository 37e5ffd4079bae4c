"""`pbt view` (one HTML page to browse trees, pairs and transcripts) and `pbt diagnostics` (a table of
what the agents and the extractor did in a set of trees)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from pbt_cli import console
from pbt_cli.commands import options as o
from pbt_cli.errors import PbtError

HELP = ("Write one self-contained HTML page (no server, no network) to browse trees, pairs, a dataset, an "
        "evaluation's transcripts or a whole run folder: collapsible dialogues, scores, filters, search.")
EXAMPLE = "Example: pbt view runs/demo --out demo.html   (then open demo.html in a browser)"
DIAGNOSTICS_HELP = ("Tree diagnostics per agent, persona and level: answer rate, NONE rate, accuracy, agreement, "
                    "answer changes, and why branches stopped.")
DIAGNOSTICS_EXAMPLE = "Example: pbt diagnostics runs/demo/trees   (or a `pbt filter` output: its manifest has them)"


def default_out(path: Path) -> Path:
    name = path.resolve().name or "pbt"
    return Path(f"{Path(name).stem}.view.html")


def check_out(out: Path, inputs: list[Path]) -> None:
    """Replace only a page `pbt view` wrote; never an input."""
    from pbt_cli.view.page import GENERATOR

    resolved = out.resolve()
    for path in inputs:
        if resolved == path.resolve():
            raise PbtError(f"--out {out} is one of the inputs; choose another file name")
    if out.is_dir():
        raise PbtError(f"--out {out} is a folder; give a file name such as {out / 'view.html'}")
    if out.exists():
        head = out.read_bytes()[:400].decode("utf-8", errors="replace")
        if GENERATOR not in head:
            raise PbtError(f"--out {out} exists and was not written by `pbt view`; choose another file name")


def diagnostics_table(diagnostics: dict[str, Any], title: str) -> Table:
    from pbt_cli.pipeline.diagnostics import DIAGNOSTICS_COLUMNS, diagnostics_rows

    stops = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in (diagnostics.get("stop_totals") or {}).items())
    table = Table(title=title, caption=f"{diagnostics.get('trees', 0)} trees; branches ended by: {stops or '-'}. "
                  "answered/NONE: what the extractor read; accuracy and agree: after the turn; changed: the "
                  "speaker's answer differs from its previous turn's", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in DIAGNOSTICS_COLUMNS:
        table.add_column(column, justify="left" if column in ("agent", "persona") else "right", no_wrap=True)
    for row in diagnostics_rows(diagnostics):
        table.add_row(*row)
    return table


@o.pbt_command
def view(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(
        help="Trees (file or folder), pairs (a `pbt filter` folder), a dataset (`pbt preprocess`), an evaluation's "
        "folder or samples.jsonl, or a run folder holding any of these.")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="The HTML file to write (default: NAME.view.html in the current folder).", dir_okay=False)
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Show at most N trees.", min=1)] = None,
    config: o.ConfigFile = None,
    dry_run: o.DryRun = False,
) -> None:
    from pbt_cli.view.collect import collect
    from pbt_cli.view.page import render_page

    target = out or default_out(paths[0])
    for path in paths:
        if not path.exists():
            raise PbtError(f"{path} does not exist; give trees, pairs, a dataset, an evaluation's samples or a run "
                           "folder")
    check_out(target, paths)
    if dry_run:
        o.print_dry_run("pbt view", {"paths": paths, "out": target, "limit": limit})
        return
    data = collect(paths, limit=limit)
    title = "pbt view: " + ", ".join(str(p) for p in paths)
    page = render_page(data.to_json(), title)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(page, encoding="utf-8")
    partial.replace(target)  # whole or not at all
    console.stderr.print(f"[green]done[/]: {len(data.trees)} trees, {len(data.pairs)} pairs, {len(data.samples)} "
                         f"transcripts -> {target} ({target.stat().st_size / 1e6:.1f} MB); open it in a browser",
                         highlight=False)
    for note in data.notes:
        console.stderr.print(f"[yellow]note[/]: {note}", highlight=False)


@o.pbt_command
def diagnostics(
    ctx: typer.Context,
    trees: Annotated[Path, typer.Argument(help="Trees (a file or a `pbt generate` folder), or a `pbt filter` "
                                          "folder (its manifest holds the diagnostics of its trees).")],
    json_out: o.JsonOut = False,
) -> None:
    from pbt_cli.data.trees import read_trees
    from pbt_cli.pipeline.diagnostics import tree_diagnostics

    if not trees.exists():
        raise PbtError(f"{trees} does not exist; give a trees file or folder, or a `pbt filter` folder")
    manifest_path = trees / "manifest.json" if trees.is_dir() else None
    stored = None
    if manifest_path is not None and manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            manifest = {}
        if isinstance(manifest, dict) and manifest.get("stage") == "filter":
            stored = manifest.get("diagnostics")
            if not stored:
                raise PbtError(f"{trees} was made by an earlier `pbt filter` without diagnostics; give its trees "
                               "folder instead")
    result = stored or tree_diagnostics(read_trees(trees))
    if not result.get("trees"):
        raise PbtError(f"{trees} holds no trees")
    if json_out:
        print(json.dumps(result, indent=2))
        return
    console.stdout.print(diagnostics_table(result, f"tree diagnostics of {trees}"))
