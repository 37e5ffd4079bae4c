"""`pbt card` and `pbt push`: publishing what pbt made (pbt_cli/hub.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pbt_cli import console
from pbt_cli.commands import options as o

CARD_HELP = "Write or refresh the README.md card of a pbt artifact folder (model card, dataset card)."
PUSH_HELP = ("Publish an adapter, exported model, dataset, pairs, trees or results folder to the Hugging Face Hub, "
             "with its card.")
CARD_EXAMPLE = "Example: pbt card models/dpo_balanced --results results/"
PUSH_EXAMPLE = "Example: pbt push models/dpo_balanced me/pbt-llama-3.1-8b --dry-run"

Results = Annotated[Path | None, typer.Option(
    "--results", help="A results root (the --out of `pbt eval`): the card of a model shows its evaluations there.")]


@o.pbt_command
def card(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="The folder: a --out of sft, dpo, export, preprocess, filter, "
                                              "generate, or an evaluation's results folder.")],
    results: Results = None,
    repo_id: Annotated[str | None, typer.Option("--repo-id", help="The Hub name to show in the loading example.")
                       ] = None,
    config: o.ConfigFile = None,
    dry_run: o.DryRun = False,
) -> None:
    from pbt_cli import hub

    if dry_run and not Path(path).exists():  # a recipe's dry run, before the stage that makes PATH
        o.check_input(path, "PATH", dry_run=True)
        o.print_dry_run("pbt card", {"path": path, "results": results})
        return
    artifact = hub.read_artifact(path)
    rows = hub.results_for(artifact, results)
    if dry_run:
        o.print_dry_run("pbt card", {"path": path, "stage": artifact.stage, "results_rows": len(rows)})
        return
    written = hub.write_card(artifact, rows, repo_id)
    console.stderr.print(f"[green]done[/]: {written} ({artifact.repo_type} card of a `pbt {artifact.stage}` output"
                         + (f", {len(rows)} result rows" if rows else "") + ")", highlight=False)


@o.pbt_command
def push(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="The folder to publish (a finished pbt output).")],
    repo_id: Annotated[str, typer.Argument(help="The Hub repository, OWNER/NAME (created if missing).")],
    private: Annotated[bool, typer.Option("--private/--no-private", help="Create the repository as private.")
                       ] = False,
    revision: Annotated[str | None, typer.Option("--revision", help="Branch to push to (created if missing).")
                        ] = None,
    commit_message: Annotated[str | None, typer.Option("--commit-message", help="The commit's message.")] = None,
    include_checkpoints: Annotated[bool, typer.Option(
        "--include-checkpoints/--no-include-checkpoints", help="Also upload checkpoints/ (left out by default).")
    ] = False,
    results: Results = None,
    config: o.ConfigFile = None,
    dry_run: o.DryRun = False,
) -> None:
    from pbt_cli import hub

    hub.check_repo_id(repo_id)
    artifact = hub.read_artifact(path)
    rows = hub.results_for(artifact, results)
    files = hub.upload_list(artifact, include_checkpoints)
    if dry_run:
        console.stderr.print(f"[bold]dry run[/]: would create the {artifact.repo_type} repository {repo_id}"
                             f"{' (private)' if private else ''}{f' branch {revision}' if revision else ''}, write "
                             f"{path / 'README.md'} and upload {len(files)} files; nothing was written or sent",
                             highlight=False)
        for name in files:
            console.stdout.print(name, highlight=False, markup=False)
        return
    hub.require_token()
    card = path / "README.md"
    card_before = card.read_bytes() if card.is_file() else None
    hub.write_card(artifact, rows, repo_id)
    try:
        url = hub.push(artifact, repo_id, private=private, revision=revision, commit_message=commit_message,
                       include_checkpoints=include_checkpoints)
    except BaseException:
        hub.restore_card(artifact, card_before)  # a push that failed leaves the folder as it was
        raise
    console.stderr.print(f"[green]pushed[/]: {path} -> {repo_id} ({len(files)} files): {url}", highlight=False)
