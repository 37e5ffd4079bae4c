"""`pbt download-models`: the paper's released PBT checkpoints (docs/method.md §7.7)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from pbt_cli import console
from pbt_cli.commands import options as o
from pbt_cli.models import registry
from pbt_cli.models.download import cached_kind, download, released_names

HELP = "Download the released PBT models (or `all`) into the Hugging Face cache or --local-dir."
EXAMPLE = "Example: pbt download-models --list; pbt download-models pbt-llama-3.1-8b"


@o.pbt_command
def download_models(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(help="Short names (see --list) or `all`.")] = None,
    list_models: Annotated[bool, typer.Option("--list/--no-list", help="Print the registry and exit.")] = False,
    local_dir: Annotated[Path | None, typer.Option(
        "--local-dir", help="Download into <local-dir>/<name> instead of the Hugging Face cache.")] = None,
    revision: Annotated[str | None, typer.Option("--revision", help="Hub revision (branch, tag or commit).")] = None,
    json_out: Annotated[bool, typer.Option("--json/--no-json", help="Print what was downloaded as JSON.")] = False,
    config: o.ConfigFile = None,
    dry_run: o.DryRun = False,
) -> None:
    if list_models:
        table = Table(title="models pbt knows by short name", box=box.SIMPLE_HEAD, pad_edge=False)  # 80 cols
        table.add_column("name", no_wrap=True)
        table.add_column("hub id", no_wrap=True)
        table.add_column("PBT", no_wrap=True)  # one of the paper's released PBT models
        table.add_column("cached", no_wrap=True, min_width=7)  # full / adapter (read from the cached files) / no
        for entry in registry.REGISTRY.values():
            kind = cached_kind(entry.hub_id) or "no"
            table.add_row(entry.name, entry.hub_id, "yes" if entry.released else "", kind)
        console.stdout.print(table)
        return
    entries = released_names(list(names or []))
    if dry_run:
        o.print_dry_run("pbt download-models", {"models": [e.hub_id for e in entries], "revision": revision,
                                                 "local_dir": local_dir})
        return
    downloaded = []
    for entry in entries:
        console.stderr.print(f"downloading {entry.name} ({entry.hub_id}) ...", highlight=False)
        model = download(entry, revision=revision, local_dir=local_dir, token=os.environ.get("HF_TOKEN"))
        downloaded.append(model)
        base = f" on base {model.base}" if model.base else ""
        article = "an" if model.kind == "adapter" else "a"
        console.stderr.print(f"[green]done[/]: {model.name} is {article} {model.kind} model{base} -> {model.path}",
                             highlight=False)
    if json_out:
        print(json.dumps([m.to_dict() for m in downloaded], indent=2))
