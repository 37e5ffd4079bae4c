"""Options shared by several commands, defined once so they are spelled the same everywhere.

Each alias is an `Annotated` type a command uses as a parameter annotation; the `*_from` builders
turn the parsed values (`ctx.params`) into the frozen specs the pipelines take.
"""

from __future__ import annotations

import errno
import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from pbt_cli import console
from pbt_cli.config import check_config_keys, dump_yaml
from pbt_cli.errors import PbtError
from pbt_cli.models.backends import BackendOptions
from pbt_cli.models.backends.base import Sampling
from pbt_cli.models.spec import LoadOptions, ModelSpec, QuantizationSpec

LOADING = "Model loading (every model of the command)"
BACKEND = "Generation backend"
SAMPLING = "Sampling"
RUN = "Run control"

# --- run control ---------------------------------------------------------------------------------
ConfigFile = Annotated[Path | None, typer.Option(
    "--config", help="YAML file of option values (keys as option names); flags on the command line win.",
    rich_help_panel=RUN)]
DryRun = Annotated[bool, typer.Option(
    "--dry-run/--no-dry-run", help="Resolve and check the configuration, print it, and exit without loading any model.",
    rich_help_panel=RUN)]
Estimate = Annotated[bool, typer.Option(
    "--estimate/--no-estimate", help="A dry run that also loads the models and times a few real requests, for a "
    "wall-clock estimate of the whole run.", rich_help_panel=RUN)]
Overwrite = Annotated[bool, typer.Option(
    "--overwrite/--no-overwrite", help="Replace an existing output made with other settings (otherwise refused).",
    rich_help_panel=RUN)]
ShardIdx = Annotated[int | None, typer.Option(
    "--shard-idx", help="Which shard of the items to run, 0-based (item i is in shard i mod --num-shards; default: "
    "torchrun's RANK, or the SLURM array task when --num-shards is given, else 0).", rich_help_panel=RUN)]
NumShards = Annotated[int | None, typer.Option(
    "--num-shards", help="Split the items into this many shards, one process each (default: the launch's size, "
    "else 1).", rich_help_panel=RUN)]
Seed = Annotated[int, typer.Option("--seed", help="Random seed (question order, personas, sampling, splits).",
                                   rich_help_panel=RUN)]
# docs/method.md §8.7: `paper` follows the paper's described method; `original-code` reproduces what the
# released code that produced the paper's numbers did (recipes/paper/ use it).
Protocol = Annotated[Literal["paper", "original-code"], typer.Option(
    "--protocol", help="paper: the method as the paper describes it; original-code: what the original release did "
    "(its prompts, answer matching, stopping, kinds and scoring; docs/method.md §8.7).", rich_help_panel=RUN)]


def seed_option(what: str) -> Any:
    """`--seed` with what it seeds in this command (it differs: trees, splits, training, evaluations)."""
    return Annotated[int, typer.Option("--seed", help=f"Random seed ({what}).", rich_help_panel=RUN)]


JsonOut = Annotated[bool, typer.Option("--json/--no-json", help="Print the results JSON to stdout instead of a table.",
                                       rich_help_panel=RUN)]

# --- tracking (every stage) ------------------------------------------------------------------------
TRACKING = "Tracking"
ReportTo = Annotated[Literal["none", "wandb", "tensorboard", "trackio"], typer.Option(
    "--report-to", help="Where to send metrics (and, for evaluations, a table of samples).",
    rich_help_panel=TRACKING)]
RunName = Annotated[str | None, typer.Option("--run-name", help="The run's name in the tracker.",
                                             rich_help_panel=TRACKING)]
Project = Annotated[str | None, typer.Option("--project", help="The tracker's project (wandb, trackio).",
                                             rich_help_panel=TRACKING)]
Tags = Annotated[list[str] | None, typer.Option("--tags", help="Tags of the run (repeat the flag; wandb).",
                                                rich_help_panel=TRACKING)]
TRACKING_PARAMETERS: list[tuple[str, Any, Any]] = [
    ("report_to", ReportTo, "none"),
    ("run_name", RunName, None),
    ("project", Project, None),
    ("tags", Tags, None),
]

# --- model loading -------------------------------------------------------------------------------
Revision = Annotated[str | None, typer.Option(
    "--revision", help="Hub revision (branch, tag or commit) of the model; `owner/name@revision` works too.")]
Adapter = Annotated[str | None, typer.Option(
    "--adapter", help="PEFT adapter (folder or hub id) to load on top of --model.")]
ChatTemplate = Annotated[Path | None, typer.Option(
    "--chat-template", help="Jinja chat template file that replaces the tokenizer's own.")]
Dtype = Annotated[Literal["auto", "float32", "bfloat16", "float16"], typer.Option(
    "--dtype", help="Weight and compute dtype; auto = bfloat16 on GPUs that support it, and for CPU inference on "
    "CPUs that compute it natively (AVX512-BF16, AMX); float32 otherwise.",
    rich_help_panel=LOADING)]
DeviceMap = Annotated[Literal["auto", "cpu", "cuda"], typer.Option(
    "--device-map", help="Where weights go; auto spreads over the visible GPUs, or uses the CPU without one.",
    rich_help_panel=LOADING)]
LoadIn8bit = Annotated[bool, typer.Option("--load-in-8bit/--no-load-in-8bit", help="Quantize base weights to 8-bit (bitsandbytes).",
                                          rich_help_panel=LOADING)]
LoadIn4bit = Annotated[bool, typer.Option("--load-in-4bit/--no-load-in-4bit", help="Quantize base weights to 4-bit (bitsandbytes).",
                                          rich_help_panel=LOADING)]
QuantType = Annotated[Literal["nf4", "fp4"], typer.Option("--bnb-4bit-quant-type", help="4-bit data type.",
                                                          rich_help_panel=LOADING)]
ComputeDtype = Annotated[Literal["auto", "float32", "bfloat16", "float16"], typer.Option(
    "--bnb-4bit-compute-dtype", help="Compute dtype of 4-bit layers (auto = --dtype's).", rich_help_panel=LOADING)]
DoubleQuant = Annotated[bool, typer.Option("--bnb-4bit-use-double-quant/--no-bnb-4bit-use-double-quant",
                                           help="Also quantize the 4-bit quantization constants.",
                                           rich_help_panel=LOADING)]
TrustRemoteCode = Annotated[bool, typer.Option("--trust-remote-code/--no-trust-remote-code",
                                               help="Allow model code from the hub to run (off by default).",
                                               rich_help_panel=LOADING)]
DynamicInt8 = Annotated[bool, typer.Option(
    "--dynamic-int8/--no-dynamic-int8", help="CPU inference: Linear layers in int8 with activations quantized on the "
    "fly (torch dynamic quantization); faster than float32 but it changes a small model's answers (measured on "
    "the demo model), so not recommended for small models (see README, Performance).",
    rich_help_panel=LOADING)]
AttnImplementation = Annotated[str | None, typer.Option(
    "--attn-implementation", help="transformers attention kernel (sdpa, eager, flash_attention_2).",
    rich_help_panel=LOADING)]

# --- generation backend --------------------------------------------------------------------------
Backend = Annotated[Literal["transformers", "vllm"], typer.Option(
    "--backend", help="transformers (batched, KV cache) or vllm (pip install 'pbt_cli\\[vllm]').",
    rich_help_panel=BACKEND)]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Most conversations in one generate call.",
                                        rich_help_panel=BACKEND)]
MaxBatchTokens = Annotated[int | None, typer.Option(
    "--max-batch-tokens", help="Cap on rows x (longest prompt + max new tokens) per generate call.",
    rich_help_panel=BACKEND)]
TensorParallel = Annotated[int, typer.Option("--tensor-parallel-size", help="GPUs per vLLM engine.",
                                             rich_help_panel=BACKEND)]
GpuMemory = Annotated[float | None, typer.Option(
    "--gpu-memory-utilization", help="Share of GPU memory for all vLLM engines, split evenly (default 0.9).",
    rich_help_panel=BACKEND)]
MaxModelLen = Annotated[int | None, typer.Option("--max-model-len", help="vLLM context length cap (-1: what fits).",
                                                 rich_help_panel=BACKEND)]
SERVED = "Served models (openai:MODEL_ID[@BASE_URL] in any model option)"
BaseUrl = Annotated[str | None, typer.Option(
    "--base-url", help="OpenAI-compatible server of `openai:` models named without @URL (default: $OPENAI_BASE_URL, "
    "else http://127.0.0.1:8000/v1).", rich_help_panel=SERVED)]
ApiKeyEnv = Annotated[str, typer.Option(
    "--api-key-env", help="Name of the environment variable holding the server's API key (the key itself never "
    "goes on the command line, in manifests or logs).", rich_help_panel=SERVED)]
MaxConcurrency = Annotated[int, typer.Option("--max-concurrency", help="Requests in flight per server.",
                                             rich_help_panel=SERVED)]
RequestTimeout = Annotated[float, typer.Option("--request-timeout", help="Seconds one request may take.",
                                               rich_help_panel=SERVED)]
MaxRetries = Annotated[int, typer.Option(
    "--max-retries", help="Retries of a request on 429, 5xx, resets and timeouts (exponential back-off, jitter).",
    rich_help_panel=SERVED)]

# --- sampling ------------------------------------------------------------------------------------
Temperature = Annotated[float, typer.Option("--temperature", help="0 = greedy.", rich_help_panel=SAMPLING)]
TopP = Annotated[float, typer.Option("--top-p", rich_help_panel=SAMPLING)]
TopK = Annotated[int, typer.Option("--top-k", help="0 = no top-k filtering.", rich_help_panel=SAMPLING)]
MaxNewTokens = Annotated[int, typer.Option("--max-new-tokens", rich_help_panel=SAMPLING)]
MinNewTokens = Annotated[int, typer.Option("--min-new-tokens", rich_help_panel=SAMPLING)]
EvalMinNewTokens = Annotated[int | None, typer.Option(
    "--min-new-tokens", help="At least this many new tokens per reply (default: 8 as in the trees, or "
    "--max-new-tokens when that is smaller).", rich_help_panel=SAMPLING)]
DEFAULT_MIN_NEW_TOKENS = 8


def min_new_tokens_for(min_new_tokens: int | None, max_new_tokens: int) -> int:
    return min(DEFAULT_MIN_NEW_TOKENS, max_new_tokens) if min_new_tokens is None else min_new_tokens


# --- option groups, added to a command's signature by `shared_options` ------------------------------

LOAD_PARAMETERS: list[tuple[str, Any, Any]] = [
    ("dtype", Dtype, "auto"),
    ("device_map", DeviceMap, "auto"),
    ("load_in_8bit", LoadIn8bit, False),
    ("load_in_4bit", LoadIn4bit, False),
    ("bnb_4bit_quant_type", QuantType, "nf4"),
    ("bnb_4bit_compute_dtype", ComputeDtype, "auto"),
    ("bnb_4bit_use_double_quant", DoubleQuant, False),
    ("trust_remote_code", TrustRemoteCode, False),
    ("attn_implementation", AttnImplementation, None),
    ("dynamic_int8", DynamicInt8, False),
]
BACKEND_PARAMETERS: list[tuple[str, Any, Any]] = [
    ("backend", Backend, "transformers"),
    ("batch_size", BatchSize, 64),
    ("max_batch_tokens", MaxBatchTokens, None),
    ("tensor_parallel_size", TensorParallel, 1),
    ("gpu_memory_utilization", GpuMemory, None),
    ("max_model_len", MaxModelLen, None),
    ("base_url", BaseUrl, None),
    ("api_key_env", ApiKeyEnv, "OPENAI_API_KEY"),
    ("max_concurrency", MaxConcurrency, 64),
    ("request_timeout", RequestTimeout, 600.0),
    ("max_retries", MaxRetries, 5),
]
SINGLE_MODEL_PARAMETERS: list[tuple[str, Any, Any]] = [  # commands that load one model (plus an extractor)
    ("revision", Revision, None),
    ("adapter", Adapter, None),
    ("chat_template", ChatTemplate, None),
]
RUN_PARAMETERS: list[tuple[str, Any, Any]] = [
    ("config", ConfigFile, None),
    ("dry_run", DryRun, False),
]


def shared_options(*groups: list[tuple[str, Any, Any]]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Append option groups to a command's signature, so every command spells them the same way.

    The command takes them through `**shared` (or reads them from `ctx.params`); Typer reads the
    extended `__signature__` to build the options and their help.
    """

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(function)
        # with `from __future__ import annotations` the signature holds strings; Typer needs the types
        hints = typing.get_type_hints(function, include_extras=True)
        parameters = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()
                      if p.kind is not inspect.Parameter.VAR_KEYWORD]
        for group in groups:
            for name, annotation, default in group:
                parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                                    default=default))
        function.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        return function

    return decorate


# --- builders ------------------------------------------------------------------------------------


def load_options_from(params: dict[str, Any]) -> LoadOptions:
    quantization = QuantizationSpec(
        load_in_8bit=params.get("load_in_8bit", False), load_in_4bit=params.get("load_in_4bit", False),
        bnb_4bit_quant_type=params.get("bnb_4bit_quant_type", "nf4"),
        bnb_4bit_compute_dtype=params.get("bnb_4bit_compute_dtype", "auto"),
        bnb_4bit_use_double_quant=params.get("bnb_4bit_use_double_quant", False),
    )
    return LoadOptions(dtype=params.get("dtype", "auto"), device_map=params.get("device_map", "auto"),
                       quantization=quantization, trust_remote_code=params.get("trust_remote_code", False),
                       attn_implementation=params.get("attn_implementation"),
                       dynamic_int8=params.get("dynamic_int8", False))


def backend_options_from(params: dict[str, Any]) -> BackendOptions:
    return BackendOptions(backend=params.get("backend", "transformers"), batch_size=params.get("batch_size", 64),
                          max_batch_tokens=params.get("max_batch_tokens"),
                          tensor_parallel_size=params.get("tensor_parallel_size", 1),
                          gpu_memory_utilization=params.get("gpu_memory_utilization"),
                          max_model_len=params.get("max_model_len"), base_url=params.get("base_url"),
                          api_key_env=params.get("api_key_env") or "OPENAI_API_KEY",
                          max_concurrency=params.get("max_concurrency", 64),
                          request_timeout=params.get("request_timeout", 600.0),
                          max_retries=params.get("max_retries", 5))


def tracking_from(params: dict[str, Any]) -> Any:
    from pbt_cli.tracking import TrackingOptions

    return TrackingOptions(report_to=params.get("report_to") or "none", run_name=params.get("run_name"),
                           project=params.get("project"), tags=tuple(params.get("tags") or ()))


def sampling_from(params: dict[str, Any], seed: int | None = None) -> Sampling:
    return Sampling(temperature=params["temperature"], top_p=params.get("top_p", 1.0), top_k=params.get("top_k", 0),
                    max_new_tokens=params["max_new_tokens"],
                    min_new_tokens=min_new_tokens_for(params.get("min_new_tokens"), params["max_new_tokens"]),
                    seed=seed)


def model_spec_from(params: dict[str, Any], key: str, *, with_overrides: bool = False) -> ModelSpec | None:
    """The ModelSpec for option `key`; `with_overrides` applies --revision/--adapter/--chat-template."""
    name = params.get(key)
    if not name:
        return None
    load = load_options_from(params)
    if with_overrides:
        return ModelSpec.parse(name, load=load, revision=params.get("revision"), adapter=params.get("adapter"),
                               chat_template=params.get("chat_template"))
    return ModelSpec.parse(name, load=load)


# --- the command wrapper -------------------------------------------------------------------------


def check_finite_numbers(ctx: typer.Context) -> None:
    """No number option may be nan or inf: NaN passes every `<= 0` check and would train or wait forever."""
    import math

    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if isinstance(value, float) and not math.isfinite(value):
            flag = max(param.opts, key=len) if param.opts else param.name
            raise PbtError(f"{flag} must be a finite number, got {value}")


def pbt_command(function: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command body with the project's error conventions.

    A `PbtError` prints one line on stderr and exits with code 2 (a traceback too with -v).
    SIGTERM and Ctrl-C (pbt_cli/stops.py) end the stage with its files complete and its manifest
    marked `interrupted`; this prints the command that resumes and exits with 143 or 130.
    The wrapped function must take `ctx: typer.Context` first.
    """
    from pbt_cli import stops
    from pbt_cli.artifacts import command_line

    @functools.wraps(function)
    def wrapper(ctx: typer.Context, *args: Any, **kwargs: Any) -> Any:
        try:
            check_config_keys(ctx)
            check_finite_numbers(ctx)
            return function(ctx, *args, **kwargs)
        except PbtError as exc:
            if console.verbosity() > 0:
                console.stderr.print_exception(show_locals=False)
            console.stderr.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            if console.verbosity() > 0:
                console.stderr.print_exception(show_locals=False)
            console.stderr.print(f"[bold red]error:[/] no space left on the disk (writing {exc.filename or 'the output'})"
                                 f"; free some space and run the same command again: it resumes",
                                 highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except (stops.StopRequested, KeyboardInterrupt) as exc:
            code = exc.exit_code if isinstance(exc, stops.StopRequested) else 130
            name = str(exc) if isinstance(exc, stops.StopRequested) else "SIGINT"
            console.stderr.print(f"[yellow]stopped[/] ({name}); every file is complete. Resume with the same "
                                 f"command: {command_line()}", highlight=False, soft_wrap=True, markup=True)
            raise typer.Exit(code) from None

    return wrapper


def check_input(path: Path, flag: str, *, dry_run: bool, check: Callable[[Path], Any] | None = None) -> None:
    """Validate an input made by an earlier stage. A dry run of a whole recipe meets inputs that the
    earlier stages have not made yet: then a missing path is a warning, not an error."""
    if dry_run and not Path(path).exists():
        console.stderr.print(f"[yellow]note[/]: {flag} {path} does not exist yet (made by an earlier stage?)",
                             highlight=False)
        return
    if check is not None:
        check(Path(path))
    elif not Path(path).exists():
        raise PbtError(f"{flag} {path} does not exist")


def check_models(*specs: ModelSpec | None, dry_run: bool) -> None:
    """Validate model names offline; in a dry run, a model folder an earlier stage will make is a note."""
    from pbt_cli.models.resolve import check_spec, looks_like_path

    for spec in specs:
        if spec is None:
            continue
        missing = [name for name in (spec.name, spec.adapter) if name and looks_like_path(name)
                   and not Path(name).expanduser().exists()]
        if dry_run and missing:
            for name in missing:
                console.stderr.print(f"[yellow]note[/]: model {name} does not exist yet (made by an earlier stage?)",
                                     highlight=False)
            continue
        check_spec(spec)


def print_dry_run(title: str, config: Any) -> None:
    console.stderr.print(f"[bold]dry run[/]: {title} (configuration is valid; nothing was loaded)")
    console.stdout.print(dump_yaml(config), end="", highlight=False, markup=False, soft_wrap=True)
