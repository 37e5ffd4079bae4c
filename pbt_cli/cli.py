"""The `pbt` root: registers one command (or command group) per stage, and the global options. Nothing else."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from pbt_cli import __version__, console
from pbt_cli.commands import download, env, eval, generate, hub, preprocess, train, view
from pbt_cli.commands import filter as filter_command
from pbt_cli.config import find_config_argument, load_config_file, nest_default_map
from pbt_cli.errors import PbtError, did_you_mean

app = typer.Typer(
    name="pbt",
    help="Persuasion-Balanced Training: dialogue trees -> preference pairs -> SFT + DPO -> evaluations.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals can hold tokens
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command("generate", help=generate.HELP, epilog=generate.EXAMPLE)(generate.generate)
app.command("filter", help=filter_command.HELP, epilog=filter_command.EXAMPLE)(filter_command.filter_trees)
app.command("preprocess", help=preprocess.HELP, epilog=preprocess.EXAMPLE)(preprocess.preprocess)
app.command("sft", help=train.SFT_HELP, epilog=train.SFT_EXAMPLE)(train.sft)
app.command("dpo", help=train.DPO_HELP, epilog=train.DPO_EXAMPLE)(train.dpo)
app.command("select-checkpoint", help=train.SELECT_HELP, epilog=train.SELECT_EXAMPLE)(train.select_checkpoint)
app.command("export", help=train.EXPORT_HELP, epilog=train.EXPORT_EXAMPLE)(train.export)
app.add_typer(eval.app, name="eval", help=eval.HELP, epilog=eval.EXAMPLE)
app.command("view", help=view.HELP, epilog=view.EXAMPLE)(view.view)
app.command("diagnostics", help=view.DIAGNOSTICS_HELP, epilog=view.DIAGNOSTICS_EXAMPLE)(view.diagnostics)
app.command("download-models", help=download.HELP, epilog=download.EXAMPLE)(download.download_models)
app.command("card", help=hub.CARD_HELP, epilog=hub.CARD_EXAMPLE)(hub.card)
app.command("push", help=hub.PUSH_HELP, epilog=hub.PUSH_EXAMPLE)(hub.push)
app.command("env", help=env.HELP, epilog=env.EXAMPLE)(env.env)

# `pbt --help` lists the commands in the order a run uses them (Typer puts command groups last)
PIPELINE_ORDER = ("generate", "filter", "preprocess", "sft", "dpo", "select-checkpoint", "export", "eval", "view",
                  "diagnostics", "download-models", "card", "push", "env")

# Options that belong to the root but that users naturally type after the subcommand.
GLOBAL_FLAGS = {"-v", "-vv", "-vvv", "--verbose", "-q", "--quiet", "--offline", "--version"}
GLOBAL_OPTIONS = {"--log-every", "--log-file"}  # these take a value
COMPLETION_OPTIONS = {"--show-completion", "--install-completion"}  # an optional shell name may follow
SHELLS = {"bash", "zsh", "fish", "powershell", "pwsh"}


def _version(value: bool) -> None:
    if value:
        print(f"pbt {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    verbose: Annotated[int, typer.Option("-v", "--verbose", count=True, show_default=False,
                                         help="More logs and tracebacks on errors; -vv: the libraries' own logs "
                                         "and progress bars too (repeat the flag; it takes no number).")] = 0,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Warnings and errors only.")] = False,
    log_every: Annotated[float, typer.Option(
        "--log-every", min=1, help="Seconds between progress lines when stderr is not a terminal (SLURM logs).")
    ] = console.DEFAULT_LOG_EVERY,
    log_file: Annotated[Path | None, typer.Option(
        "--log-file", help="Also write every log line (progress included) to this file.", dir_okay=False)] = None,
    offline: Annotated[bool, typer.Option("--offline", help="Never touch the network: use local files and the "
                                          "Hugging Face cache (same as HF_HUB_OFFLINE=1).")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    if log_file is not None:
        check_log_file(log_file)
    console.setup_logging(-1 if quiet else verbose, log_file=log_file, every=log_every)
    if offline:
        # Read by huggingface_hub, transformers and datasets when first imported (always later than here).
        for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            os.environ[variable] = "1"


def check_log_file(path: Path) -> None:
    """--log-file must be writable now: a log that fails half-way through a run prints tracebacks."""
    path = path.expanduser()
    if path.exists() and not path.is_file() and not path.is_char_device():
        raise typer.BadParameter(f"{path} is not a file; give a file path", param_hint="'--log-file'")
    existing = next(folder for folder in (path, *path.absolute().parents) if folder.exists())
    if not existing.is_dir() and existing != path:
        raise typer.BadParameter(f"{path} lies inside {existing}, which is a file; give another path",
                                 param_hint="'--log-file'")
    import tempfile

    try:  # a probe, not the log file itself: that is made at the first line, after the stage's checks
        if existing == path:
            open(path, "a").close()  # appending nothing changes nothing
        else:
            tempfile.NamedTemporaryFile(dir=existing, prefix=".pbt-probe-").close()
    except OSError as exc:
        raise typer.BadParameter(f"{path} cannot be written ({exc.strerror} in {existing}); give a writable path",
                                 param_hint="'--log-file'") from None


def hoist_global_flags(argv: Sequence[str]) -> list[str]:
    """Move -v/-q/--offline/--log-every/--log-file found after the subcommand to the front, where the
    root parses them."""
    argv = list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    front: list[str] = []
    rest: list[str] = []
    position = 0
    while position < cut:
        token = argv[position]
        if token in GLOBAL_FLAGS or token.split("=", 1)[0] in GLOBAL_OPTIONS and "=" in token:
            front.append(token)
        elif token in GLOBAL_OPTIONS and position + 1 < cut:
            front.extend(argv[position: position + 2])
            position += 1
        else:
            rest.append(token)
        position += 1
    return front + rest + argv[cut:]


# TRL's and lm-eval's names for options pbt spells otherwise
ECOSYSTEM_ALIASES = {"--output-dir": "--out", "--output-path": "--out", "--model-name-or-path": "--model"}


def underscores_to_dashes(argv: Sequence[str]) -> list[str]:
    """`--learning_rate 1e-4` as TRL's and lm-eval's users type it: pbt's options are spelled with dashes
    (`--learning-rate`), and none has an underscore, so an option name's underscores become dashes;
    `--output_dir` and `--output_path` mean `--out`, `--model_name_or_path` means `--model`."""
    argv = list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    for position, token in enumerate(argv[:cut]):
        if token.startswith("--"):
            name, sep, value = token.partition("=")
            name = name.replace("_", "-")
            argv[position] = ECOSYSTEM_ALIASES.get(name, name) + sep + value
    return argv


def check_verbosity_count(argv: Sequence[str]) -> None:
    """`-v 2` reads as a command named 2; say what was meant instead."""
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag in ("-v", "--verbose") and value.isdigit():
            raise PbtError(f"{flag} takes no number: repeat it instead (-v{'v' * (int(value) - 1)} for {value})"
                           if int(value) > 0 else f"{flag} takes no number; leave it out for the default")


def command_path(argv: Sequence[str]) -> list[str]:
    """The subcommand names at the start of the arguments (after root flags)."""
    path: list[str] = []
    skip_value = False
    previous = ""
    for token in argv:
        previous, token_before = token, previous
        if skip_value:  # the value of a root option such as --log-every
            skip_value = False
            continue
        if token_before in COMPLETION_OPTIONS and token in SHELLS:  # --show-completion bash
            continue
        if token.startswith("-"):
            if path:
                break
            skip_value = token in GLOBAL_OPTIONS
            continue
        path.append(token)
        if token != "eval":  # the only command group
            break
    return path


def check_command_names(path: Sequence[str]) -> None:
    """An unknown (sub)command: one line with the known names and a close match."""
    import typer.main

    command = typer.main.get_command(app)
    for depth, name in enumerate(path):
        known = getattr(command, "commands", None)
        if not known:
            return
        if name not in known:
            where = "pbt " + " ".join(path[:depth]) if depth else "pbt"
            raise PbtError(f"unknown command {name!r} for `{where}`{did_you_mean(name, known)}; known: "
                           f"{', '.join(known)}")
        command = known[name]


def built_command() -> Any:
    """The click command of `app`, with two changes to how help reads: flags (on/off and -v counts)
    show no value type (Typer prints `<bool>`, `<int>`), and commands come in pipeline order."""
    import typer.main

    command = typer.main.get_command(app)

    def fix(node: Any) -> None:
        for param in getattr(node, "params", ()):
            if getattr(param, "is_flag", False) or getattr(param, "count", False):
                param.metavar = ""
        make_help_option = node.get_help_option

        def help_option(ctx: Any, make: Any = make_help_option) -> Any:  # -h/--help is made on demand
            option = make(ctx)
            if option is not None:
                option.metavar = ""
            return option

        node.get_help_option = help_option
        for child in getattr(node, "commands", {}).values():
            fix(child)

    fix(command)
    known = command.commands
    ordered = {name: known[name] for name in PIPELINE_ORDER if name in known}
    command.commands = {**ordered, **{name: c for name, c in known.items() if name not in ordered}}
    return command


def _error(message: str, code: int = 2) -> None:
    console.stderr.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True, markup=True)
    sys.exit(code)


def click_module() -> Any:
    """The click that Typer runs on: its own copy since Typer 0.22 (`typer._click`), before that click."""
    try:
        import typer._click as vendored

        return vendored
    except ImportError:
        import click

        return click


def usage_error_line(exc: Any, config_path: str | None) -> str:
    """Click's usage error as one line; a bad value that came from the --config file names the file and key."""
    ParameterSource = click_module().core.ParameterSource  # noqa: N806 (an enum class)

    ctx, param = getattr(exc, "ctx", None), getattr(exc, "param", None)
    message = exc.format_message()
    if ctx is not None and param is not None and config_path:
        if ctx.get_parameter_source(param.name) == ParameterSource.DEFAULT_MAP:
            value = (ctx.default_map or {}).get(param.name)
            detail = message.split(":", 1)[-1].strip() if ":" in message else message
            return f"config file {config_path}: key '{param.name}' has a bad value {value!r} ({detail})"
    where = f"`{ctx.command_path}`" if ctx is not None else "`pbt`"
    hint = f"{ctx.command_path} --help" if ctx is not None else "pbt --help"
    return f"{message.rstrip('.')} (in {where}; see `{hint}`)"


def main(argv: Sequence[str] | None = None) -> None:
    from pbt_cli import stops

    exceptions = click_module().exceptions

    args = hoist_global_flags(underscores_to_dashes(sys.argv[1:] if argv is None else argv))
    extra = {}
    try:
        check_verbosity_count(args)
        check_command_names(command_path(args))
    except PbtError as exc:
        _error(str(exc), exc.exit_code)
    config_path = find_config_argument(args)
    if config_path:
        try:
            extra["default_map"] = nest_default_map(command_path(args), load_config_file(config_path))
        except PbtError as exc:
            _error(str(exc), exc.exit_code)
    # Typer 0.22+ runs on its own copy of click, whose Exit and Abort are Typer's
    exit_types = tuple({getattr(exceptions, "Exit", typer.Exit), typer.Exit})
    abort_types = tuple({getattr(exceptions, "Abort", typer.Abort), typer.Abort})
    code: Any = 0
    with stops.handling_signals():
        try:
            # without standalone mode click returns an Exit's code instead of leaving
            code = built_command()(args, prog_name="pbt", standalone_mode=False, **extra)
        except exceptions.NoArgsIsHelpError as exc:
            exc.show()  # `pbt` or `pbt eval` alone: the help text, not an error
            code = 0
        except exceptions.UsageError as exc:
            _error(usage_error_line(exc, config_path), exc.exit_code)
        except exit_types as exc:
            code = exc.exit_code
        except abort_types:
            code = 130
    if isinstance(code, int) and code:
        sys.exit(code)

if __name__ == "__main__":
    main()
