"""What a user asks for when naming a model, as frozen data (no loading happens here)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from pbt_cli.errors import PbtError, require_one_of

DTYPES = ("auto", "float32", "bfloat16", "float16")
SERVED_PREFIX = "openai:"  # a model behind an OpenAI-compatible server: `openai:MODEL_ID[@BASE_URL]`
DEVICE_MAPS = ("auto", "cpu", "cuda")
QUANT_TYPES = ("nf4", "fp4")


@dataclass(frozen=True)
class QuantizationSpec:
    """bitsandbytes quantization of the base weights (the names follow transformers' BitsAndBytesConfig)."""

    load_in_8bit: bool = False
    load_in_4bit: bool = False
    bnb_4bit_quant_type: str = "nf4"
    # "auto" = the model's compute dtype (bfloat16 on GPUs that have it, float32 on CPU)
    bnb_4bit_compute_dtype: str = "auto"
    bnb_4bit_use_double_quant: bool = False

    def __post_init__(self) -> None:
        if self.load_in_8bit and self.load_in_4bit:
            raise PbtError("--load-in-8bit and --load-in-4bit are exclusive; choose one")
        require_one_of("--bnb-4bit-quant-type", self.bnb_4bit_quant_type, QUANT_TYPES)
        require_one_of("--bnb-4bit-compute-dtype", self.bnb_4bit_compute_dtype, DTYPES)

    @property
    def enabled(self) -> bool:
        return self.load_in_8bit or self.load_in_4bit

    @property
    def label(self) -> str:
        if self.load_in_8bit:
            return "8bit"
        if self.load_in_4bit:
            return f"4bit-{self.bnb_4bit_quant_type}"
        return "none"


@dataclass(frozen=True)
class LoadOptions:
    """How to load weights; shared by every model a command loads (agents, extractor, judge)."""

    dtype: str = "auto"
    device_map: str = "auto"
    quantization: QuantizationSpec = field(default_factory=QuantizationSpec)
    trust_remote_code: bool = False
    attn_implementation: str | None = None
    # every Linear layer in int8, activations quantized on the fly (torch's CPU kernels; inference only)
    dynamic_int8: bool = False

    def __post_init__(self) -> None:
        require_one_of("--dtype", self.dtype, DTYPES)
        require_one_of("--device-map", self.device_map, DEVICE_MAPS)
        if self.dynamic_int8 and self.quantization.enabled:
            raise PbtError("--dynamic-int8 and --load-in-8bit/--load-in-4bit are exclusive; choose one")
        if self.dynamic_int8 and self.dtype not in ("auto", "float32"):
            raise PbtError(f"--dynamic-int8 computes in float32 between its int8 layers; drop --dtype {self.dtype}")
        if self.dynamic_int8 and self.device_map == "cuda":
            raise PbtError("--dynamic-int8 is a CPU inference path; on a GPU use --dtype bfloat16 (or 8/4-bit)")

    @property
    def weights_label(self) -> str:
        """How the weights are stored, for manifests: none, 8bit, 4bit-nf4, dynamic-int8."""
        return "dynamic-int8" if self.dynamic_int8 else self.quantization.label


@dataclass(frozen=True)
class ModelSpec:
    """A model as named by the user.

    `name` is a registry short name (`smollm2-135m`, `pbt-llama-3.1-8b`), a hub id (optionally
    `owner/name@revision`), a local model folder, a local adapter folder (its base is read from
    `adapter_config.json`), or a `.gguf` file.
    """

    name: str
    revision: str | None = None
    adapter: str | None = None
    chat_template: Path | None = None
    load: LoadOptions = field(default_factory=LoadOptions)

    @classmethod
    def parse(cls, reference: str, *, load: LoadOptions | None = None, revision: str | None = None,
              adapter: str | None = None, chat_template: Path | str | None = None) -> ModelSpec:
        """Build a spec from a `--model` value; `name@revision` is split unless the name is a local path."""
        reference = reference.strip()
        if not reference:
            raise PbtError("a model name is empty; give a short name, hub id or local path")
        if reference.startswith(SERVED_PREFIX):  # `openai:MODEL_ID[@BASE_URL]`: the server names its models
            if len(reference) == len(SERVED_PREFIX) or reference[len(SERVED_PREFIX):].startswith("@"):
                raise PbtError(f"model {reference!r} names no model id; write openai:MODEL_ID or "
                               "openai:MODEL_ID@http://HOST:PORT/v1")
            if revision or adapter:
                raise PbtError(f"model {reference!r} is served: the server decides its revision and adapters "
                               "(--revision and --adapter apply to models pbt loads itself)")
            return cls(name=reference, chat_template=Path(chat_template) if chat_template else None,
                       load=load or LoadOptions())
        name = reference
        if "@" in reference and not Path(reference).expanduser().exists():
            name, _, at_revision = reference.rpartition("@")
            if revision and revision != at_revision:
                raise PbtError(f"model {reference!r} names revision {at_revision!r} but --revision says {revision!r}")
            revision = at_revision
        return cls(name=name, revision=revision or None, adapter=adapter or None,
                   chat_template=Path(chat_template) if chat_template else None, load=load or LoadOptions())

    def with_load(self, load: LoadOptions) -> ModelSpec:
        return replace(self, load=load)

    @property
    def display_name(self) -> str:
        """A short name for folders and tables: the last path component (of the normalised path, so
        `runs/x/..` is `runs`), plus the adapter's if any."""

        def last_part(name: str) -> str:
            path = Path(name).expanduser()
            if path.exists() or name.startswith(("/", ".", "~")):
                return path.resolve().name or "model"
            return name.rstrip("/").split("/")[-1]

        base = last_part(self.name)
        if self.name.startswith(SERVED_PREFIX):
            base = last_part(self.name[len(SERVED_PREFIX):].split("@", 1)[0])
        if self.adapter:
            return f"{base}+{last_part(self.adapter)}"
        return base

    @property
    def is_served(self) -> bool:
        """A model behind an OpenAI-compatible server (`openai:MODEL_ID[@BASE_URL]`)."""
        return self.name.startswith(SERVED_PREFIX)

    @property
    def served_model(self) -> tuple[str, str | None]:
        """(model id, base URL or None) of a served spec; the URL follows the last `@http`."""
        rest = self.name[len(SERVED_PREFIX):]
        at = rest.rfind("@http")
        return (rest[:at], rest[at + 1:]) if at > 0 else (rest, None)

    def local_paths(self) -> list[str]:
        """The files and folders on this machine the spec reads (an output must never overwrite them)."""
        names = (self.adapter, self.chat_template) if self.is_served else (self.name, self.adapter, self.chat_template)
        return [str(p) for p in names if p and Path(p).expanduser().exists()]

    def cache_key(self) -> tuple:
        """Two specs with the same key are served by one loaded model."""
        return (self.name, self.revision, self.adapter, str(self.chat_template) if self.chat_template else None,
                self.load)
