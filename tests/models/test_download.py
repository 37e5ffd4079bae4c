"""`pbt download-models` and the released models' short names (docs/method.md §7.7).

The hub is faked at its boundary: `huggingface_hub.snapshot_download` is replaced by a function that
writes a folder holding either an adapter (adapter_config.json naming a base) or full weights
(config.json) and returns its path, and the reachability check is a no-op. Whether a model is an
adapter must be read from those files, never assumed.

For evaluations, a short name resolves through the local Hugging Face cache: the tests build the
cache layout (refs/main, snapshots/<commit>/..., .no_exist/<commit>/...) in tmp_path and point
huggingface_hub at it.
"""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import pytest
from helpers import run_cli
from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

from pbt_cli.errors import PbtError
from pbt_cli.models import download as download_module
from pbt_cli.models import registry
from pbt_cli.models.download import cached_kind, download, inspect_folder, released_names
from pbt_cli.models.resolve import resolve
from pbt_cli.models.spec import ModelSpec

LLAMA_8B_BASE = "meta-llama/Llama-3.1-8B-Instruct"
RELEASED = {"pbt-llama-3.1-8b": "esteng/pbt_llama_3.1_8B", "pbt-llama-3.1-70b": "esteng/pbt_llama_3.1_70B",
            "pbt-mistral-7b": "esteng/pbt_mistral_7B"}
# What the fake hub serves: an adapter on its base, or full weights.
HUB = {
    "esteng/pbt_llama_3.1_8B": ("adapter", LLAMA_8B_BASE),
    "esteng/pbt_llama_3.1_70B": ("adapter", "meta-llama/Llama-3.1-70B-Instruct"),
    "esteng/pbt_mistral_7B": ("full", None),
}


def write_model_files(folder: Path, kind: str, base: str | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "adapter":
        (folder / "adapter_config.json").write_text(json.dumps(
            {"base_model_name_or_path": base, "peft_type": "LORA", "r": 16, "lora_alpha": 32}))
        (folder / "adapter_model.safetensors").write_bytes(b"weights")
    else:
        (folder / "config.json").write_text(json.dumps({"model_type": "mistral"}))
        (folder / "model.safetensors").write_bytes(b"weights")


class FakeHub:
    def __init__(self, root: Path, served: dict | None = None) -> None:
        self.root = root
        self.served = HUB if served is None else served
        self.calls: list[dict] = []
        self.reachability_checks: list[str] = []
        self.error: Exception | None = None

    def snapshot_download(self, repo_id, *, revision=None, local_dir=None, token=None, **kwargs):
        self.calls.append({"repo_id": repo_id, "revision": revision, "local_dir": local_dir, "token": token})
        if self.error is not None:
            raise self.error
        folder = Path(local_dir) if local_dir else self.root / "snapshots" / repo_id.replace("/", "--")
        write_model_files(folder, *self.served[repo_id])
        return str(folder)

    def require_hub_reachable(self, repo_id: str) -> None:
        self.reachability_checks.append(repo_id)


@pytest.fixture
def hub(tmp_path, monkeypatch) -> FakeHub:
    fake = FakeHub(tmp_path / "fake-hub")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
    monkeypatch.setattr(download_module, "require_hub_reachable", fake.require_hub_reachable)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    return fake


def hub_error(cls, message: str) -> Exception:
    """An HTTP error of huggingface_hub without a real HTTP response behind it."""
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    return error


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


# --- downloading ------------------------------------------------------------------------------------------


def test_short_name_downloads_the_hub_id_and_reads_adapter_from_the_files(capsys, hub):
    result = run_cli(capsys, "download-models", "pbt-llama-3.1-8b")
    assert result.exit_code == 0, result.stderr
    assert [c["repo_id"] for c in hub.calls] == ["esteng/pbt_llama_3.1_8B"]
    assert hub.calls[0]["local_dir"] is None and hub.calls[0]["revision"] is None
    assert hub.reachability_checks == ["esteng/pbt_llama_3.1_8B"]
    stderr = " ".join(result.stderr.split())  # undo the console's line wrapping
    assert f"adapter model on base {LLAMA_8B_BASE}" in stderr


def test_full_weights_are_detected_from_the_files(capsys, hub):
    result = run_cli(capsys, "download-models", "pbt-mistral-7b", "--json")
    assert result.exit_code == 0, result.stderr
    [model] = json.loads(result.stdout)
    assert model["kind"] == "full" and model["base"] is None
    assert "full model" in " ".join(result.stderr.split()) and "on base" not in result.stderr


def test_the_kind_follows_the_files_not_the_name(capsys, tmp_path, hub):
    # The same name served as full weights one day and as an adapter another: the files decide.
    hub.served = {**HUB, "esteng/pbt_llama_3.1_8B": ("full", None)}
    result = run_cli(capsys, "download-models", "pbt-llama-3.1-8b", "--json", "--local-dir", tmp_path / "a")
    assert json.loads(result.stdout)[0]["kind"] == "full"
    hub.served = {**HUB, "esteng/pbt_mistral_7B": ("adapter", "mistralai/Mistral-7B-Instruct-v0.2")}
    result = run_cli(capsys, "download-models", "pbt-mistral-7b", "--json", "--local-dir", tmp_path / "b")
    assert json.loads(result.stdout)[0] == {
        "name": "pbt-mistral-7b", "hub_id": "esteng/pbt_mistral_7B", "kind": "adapter",
        "base": "mistralai/Mistral-7B-Instruct-v0.2", "path": str(tmp_path / "b" / "pbt-mistral-7b")}


def test_all_downloads_the_three_released_models(capsys, hub):
    result = run_cli(capsys, "download-models", "all", "--json")
    assert result.exit_code == 0, result.stderr
    assert [c["repo_id"] for c in hub.calls] == list(RELEASED.values())
    printed = json.loads(result.stdout)
    assert [m["name"] for m in printed] == list(RELEASED)
    assert [m["hub_id"] for m in printed] == list(RELEASED.values())
    assert [m["kind"] for m in printed] == ["adapter", "adapter", "full"]
    assert [m["base"] for m in printed] == [LLAMA_8B_BASE, "meta-llama/Llama-3.1-70B-Instruct", None]
    for model in printed:
        assert Path(model["path"]).is_dir()
    # a name given twice (or also covered by `all`) is downloaded once
    hub.calls.clear()
    assert run_cli(capsys, "download-models", "pbt-mistral-7b", "all", "pbt-mistral-7b").exit_code == 0
    assert sorted(c["repo_id"] for c in hub.calls) == sorted(RELEASED.values())


def test_local_dir_downloads_into_a_folder_per_name(capsys, tmp_path, hub):
    target = tmp_path / "models"
    result = run_cli(capsys, "download-models", "pbt-llama-3.1-8b", "pbt-mistral-7b", "--local-dir", target, "--json")
    assert result.exit_code == 0, result.stderr
    assert [c["local_dir"] for c in hub.calls] == [target / "pbt-llama-3.1-8b", target / "pbt-mistral-7b"]
    printed = json.loads(result.stdout)
    assert [m["path"] for m in printed] == [str(target / "pbt-llama-3.1-8b"), str(target / "pbt-mistral-7b")]
    assert (target / "pbt-llama-3.1-8b" / "adapter_config.json").is_file()
    assert (target / "pbt-mistral-7b" / "config.json").is_file()


def test_revision_and_token_reach_the_hub(capsys, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    result = run_cli(capsys, "download-models", "pbt-mistral-7b", "--revision", "v1")
    assert result.exit_code == 0, result.stderr
    assert (hub.calls[0]["revision"], hub.calls[0]["token"]) == ("v1", "hf_secret")
    assert "hf_secret" not in result.stdout + result.stderr


def test_json_prints_kind_base_and_path(capsys, hub):
    result = run_cli(capsys, "download-models", "pbt-llama-3.1-8b", "--json")
    assert result.exit_code == 0, result.stderr
    [model] = json.loads(result.stdout)  # stdout holds the JSON only
    assert set(model) == {"name", "hub_id", "path", "kind", "base"}
    assert (model["kind"], model["base"]) == ("adapter", LLAMA_8B_BASE)
    assert (Path(model["path"]) / "adapter_config.json").is_file()


def test_dry_run_downloads_nothing(capsys, hub):
    result = run_cli(capsys, "download-models", "all", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert hub.calls == []
    for hub_id in RELEASED.values():
        assert hub_id in result.stdout


# --- the registry listing ---------------------------------------------------------------------------------


def test_list_prints_every_name_and_hub_id(capsys, hub, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # a standard terminal, and the width when the output is piped
    result = run_cli(capsys, "download-models", "--list")
    assert result.exit_code == 0, result.stderr
    assert hub.calls == []
    for entry in registry.REGISTRY.values():
        assert entry.name in result.stdout and entry.hub_id in result.stdout
    for name in RELEASED:
        line = next(line for line in result.stdout.splitlines() if f" {name} " in line)
        assert "yes" in line  # marked as a released PBT model


def list_rows(stdout: str) -> dict[str, str]:
    """The table's lines keyed by their first word, the short name."""
    from pbt_cli.models.registry import REGISTRY

    return {line.split()[0]: line for line in stdout.splitlines() if line.split() and line.split()[0] in REGISTRY}


def test_list_shows_what_the_cache_holds(capsys, tmp_path, hub, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    cache = tmp_path / "hf-cache"
    cache_repo(cache, "esteng/pbt_llama_3.1_8B", {"adapter_config.json": adapter_config(LLAMA_8B_BASE)})
    cache_repo(cache, "esteng/pbt_mistral_7B", {"config.json": "{}"}, missing=["adapter_config.json"])
    result = run_cli(capsys, "download-models", "--list")
    assert result.exit_code == 0, result.stderr
    rows = list_rows(result.stdout)
    assert "adapter" in rows["pbt-llama-3.1-8b"]
    assert "full" in rows["pbt-mistral-7b"]
    assert "adapter" not in rows["pbt-llama-3.1-70b"] and "full" not in rows["pbt-llama-3.1-70b"]


def test_list_at_80_columns_shows_the_cached_kind_in_full(capsys, tmp_path, hub, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    cache_repo(tmp_path / "hf-cache", "esteng/pbt_llama_3.1_8B", {"adapter_config.json": adapter_config(LLAMA_8B_BASE)})
    result = run_cli(capsys, "download-models", "--list")
    assert result.exit_code == 0, result.stderr
    assert "adapter" in list_rows(result.stdout)["pbt-llama-3.1-8b"]


# --- bad input ------------------------------------------------------------------------------------------


def test_unknown_name_lists_the_known_names_and_a_close_match(capsys, hub):
    result = run_cli(capsys, "download-models", "pbt-llama-3.1-8")
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert 'did you mean "pbt-llama-3.1-8b"' in lines[0]
    for name in RELEASED:
        assert name in lines[0]
    assert hub.calls == []


def test_no_name_is_one_line(capsys, hub):
    result = run_cli(capsys, "download-models")
    assert result.exit_code == 2
    assert "--list" in error_lines(result)[0] and len(error_lines(result)) == 1


def test_offline_without_the_files_says_how_to_download(capsys, hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.error = LocalEntryNotFoundError("Cannot find the requested files in the disk cache")
    result = run_cli(capsys, "download-models", "pbt-llama-3.1-8b")
    assert result.exit_code == 2
    lines = [line for line in error_lines(result) if not line.startswith("downloading ")]
    assert len(lines) == 1, result.stderr
    assert "offline mode is on" in lines[0] and "esteng/pbt_llama_3.1_8B" in lines[0]
    assert "download it first" in lines[0] and "pbt download-models" in lines[0]
    assert hub.reachability_checks == []  # offline: no network probe at all


def test_offline_with_the_files_in_the_cache_succeeds(capsys, hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = run_cli(capsys, "download-models", "pbt-mistral-7b", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)[0]["kind"] == "full"
    assert hub.reachability_checks == []


@pytest.mark.parametrize(("error", "message"), [
    (LocalEntryNotFoundError("connection failed"), "cannot reach the Hugging Face hub"),
    (hub_error(GatedRepoError, "gated"), "is gated"),
    (hub_error(RepositoryNotFoundError, "404"), "was not found on the hub"),
])
def test_hub_errors_are_one_line(capsys, hub, error, message):
    hub.error = error
    result = run_cli(capsys, "download-models", "pbt-mistral-7b")
    assert result.exit_code == 2
    lines = [line for line in error_lines(result) if not line.startswith("downloading ")]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "esteng/pbt_mistral_7B" in lines[0]


def test_a_damaged_adapter_config_is_one_line(tmp_path):
    folder = tmp_path / "damaged"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{not json")
    with pytest.raises(PbtError, match="not valid JSON"):
        inspect_folder(folder)
    assert inspect_folder(tmp_path) == ("full", None)


def test_released_names():
    assert [e.hub_id for e in released_names(["all"])] == list(RELEASED.values())
    assert [e.name for e in released_names(["PBT-Mistral-7B"])] == ["pbt-mistral-7b"]  # case does not matter
    with pytest.raises(PbtError, match="at least one"):
        released_names([])
    with pytest.raises(PbtError, match="unknown model name"):
        released_names(["pbt-gpt-5"])


def test_download_function_returns_what_it_found(tmp_path, hub):
    entry = registry.lookup("pbt-llama-3.1-70b")
    model = download(entry, local_dir=tmp_path / "d")
    assert (model.name, model.hub_id, model.kind, model.base) == (
        "pbt-llama-3.1-70b", "esteng/pbt_llama_3.1_70B", "adapter", "meta-llama/Llama-3.1-70B-Instruct")
    assert model.path == tmp_path / "d" / "pbt-llama-3.1-70b"


# --- short names in evaluations: resolving through the local cache -------------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def adapter_config(base: str) -> str:
    return json.dumps({"base_model_name_or_path": base, "peft_type": "LORA"})


def cache_repo(cache: Path, repo_id: str, files: dict[str, str], missing: tuple[str, ...] | list[str] = ()) -> Path:
    """huggingface_hub's cache layout: refs/main -> a commit, the files in its snapshot, known-missing files."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (snapshot / name).write_text(content)
    for name in missing:
        (repo / ".no_exist" / COMMIT).mkdir(parents=True, exist_ok=True)
        (repo / ".no_exist" / COMMIT / name).touch()
    return snapshot


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # resolving must not need the network when the cache knows
    return cache


def test_a_released_adapter_resolves_onto_its_base(hf_cache):
    cache_repo(hf_cache, "esteng/pbt_llama_3.1_8B", {"adapter_config.json": adapter_config(LLAMA_8B_BASE)})
    cache_repo(hf_cache, LLAMA_8B_BASE, {"config.json": "{}"}, missing=["adapter_config.json"])
    resolved = resolve(ModelSpec.parse("pbt-llama-3.1-8b"))
    assert resolved.kind == "adapter"
    assert resolved.adapter == "esteng/pbt_llama_3.1_8B"
    assert resolved.base == LLAMA_8B_BASE and resolved.adapter_base_name == LLAMA_8B_BASE
    assert cached_kind("esteng/pbt_llama_3.1_8B") == "adapter"
    assert cached_kind(LLAMA_8B_BASE) == "full"


def test_an_adapter_whose_base_is_cached_without_a_no_exist_marker(hf_cache):
    # Offline, a base that only has config.json in the cache is taken as a full model.
    cache_repo(hf_cache, "esteng/pbt_llama_3.1_8B", {"adapter_config.json": adapter_config(LLAMA_8B_BASE)})
    cache_repo(hf_cache, LLAMA_8B_BASE, {"config.json": "{}"})
    resolved = resolve(ModelSpec.parse("pbt-llama-3.1-8b"))
    assert (resolved.kind, resolved.base, resolved.adapter) == ("adapter", LLAMA_8B_BASE, "esteng/pbt_llama_3.1_8B")


@pytest.mark.parametrize("marker", [True, False])
def test_a_released_full_model_resolves_to_itself(hf_cache, marker):
    cache_repo(hf_cache, "esteng/pbt_mistral_7B", {"config.json": "{}"},
               missing=["adapter_config.json"] if marker else [])
    resolved = resolve(ModelSpec.parse("pbt-mistral-7b"))
    assert (resolved.kind, resolved.base, resolved.adapter) == ("full", "esteng/pbt_mistral_7B", None)
    assert cached_kind("esteng/pbt_mistral_7B") == "full"


def test_a_released_model_not_in_the_cache_offline_says_how_to_download(hf_cache):
    with pytest.raises(PbtError, match="offline mode is on.*pbt download-models"):
        resolve(ModelSpec.parse("pbt-llama-3.1-70b"))
    assert cached_kind("esteng/pbt_llama_3.1_70B") is None


def test_resolution_follows_the_cache_lookup(tmp_path, monkeypatch):
    # The same decisions with huggingface_hub's cache lookup itself faked: an adapter_config.json the
    # cache holds makes an adapter; one the cache knows to be missing makes a full model.
    from huggingface_hub import _CACHED_NO_EXIST

    adapter_file = tmp_path / "snapshot" / "adapter_config.json"
    adapter_file.parent.mkdir()
    adapter_file.write_text(adapter_config(LLAMA_8B_BASE))
    answers = {("esteng/pbt_llama_3.1_8B", "adapter_config.json"): str(adapter_file),
               (LLAMA_8B_BASE, "adapter_config.json"): _CACHED_NO_EXIST}
    looked_up = []

    def fake_lookup(repo_id, filename, revision=None, **kwargs):
        looked_up.append((repo_id, filename))
        return answers.get((repo_id, filename))

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", fake_lookup)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolved = resolve(ModelSpec.parse("pbt-llama-3.1-8b"))
    assert (resolved.kind, resolved.adapter, resolved.base) == ("adapter", "esteng/pbt_llama_3.1_8B", LLAMA_8B_BASE)
    assert ("esteng/pbt_llama_3.1_8B", "adapter_config.json") in looked_up

    answers[("esteng/pbt_llama_3.1_8B", "adapter_config.json")] = _CACHED_NO_EXIST
    resolved = resolve(ModelSpec.parse("pbt-llama-3.1-8b"))
    assert (resolved.kind, resolved.adapter, resolved.base) == ("full", None, "esteng/pbt_llama_3.1_8B")

    del answers[("esteng/pbt_llama_3.1_8B", "adapter_config.json")]  # nothing cached, offline
    with pytest.raises(PbtError, match="offline mode is on"):
        resolve(ModelSpec.parse("pbt-llama-3.1-8b"))


def test_a_downloaded_local_folder_resolves_like_the_short_name(capsys, tmp_path, hub, monkeypatch):
    result = run_cli(capsys, "download-models", "pbt-llama-3.1-8b", "--local-dir", tmp_path / "models")
    assert result.exit_code == 0, result.stderr
    cache = Path(huggingface_hub.constants.HF_HUB_CACHE)
    cache_repo(cache, LLAMA_8B_BASE, {"config.json": "{}"}, missing=["adapter_config.json"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "models" / "pbt-llama-3.1-8b"
    resolved = resolve(ModelSpec.parse(str(folder)))
    assert (resolved.kind, resolved.adapter, resolved.base) == ("adapter", str(folder), LLAMA_8B_BASE)


def test_evaluations_accept_the_short_names(capsys):
    # --dry-run validates the names offline (no download, no loading)
    for name in RELEASED:
        result = run_cli(capsys, "eval", "ays", "--model", name, "--limit", "3", "--dry-run")
        assert result.exit_code == 0, result.stderr
        assert name in result.stdout
    result = run_cli(capsys, "eval", "team", "--model-x", "pbt-llama-3.1-8b", "--model-y", "pbt-mistral-7b",
                     "--extractor-model", "pbt-llama-3.1-70b", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "pbt-llama-3.1-8b" in result.stdout and "pbt-mistral-7b" in result.stdout
