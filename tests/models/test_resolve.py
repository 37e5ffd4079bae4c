import json
from pathlib import Path

import pytest

from pbt_cli.errors import PbtError
from pbt_cli.models import registry
from pbt_cli.models.resolve import check_spec, resolve
from pbt_cli.models.spec import LoadOptions, ModelSpec, QuantizationSpec


def test_parse_splits_revision_unless_local_path(tmp_path):
    spec = ModelSpec.parse("meta-llama/Llama-3.1-8B-Instruct@v1")
    assert (spec.name, spec.revision) == ("meta-llama/Llama-3.1-8B-Instruct", "v1")
    folder = tmp_path / "model@2"
    folder.mkdir()
    assert ModelSpec.parse(str(folder)).name == str(folder)
    with pytest.raises(PbtError, match="names revision"):
        ModelSpec.parse("owner/name@a", revision="b")


def test_quantization_conflicts_and_choices():
    with pytest.raises(PbtError, match="exclusive"):
        QuantizationSpec(load_in_8bit=True, load_in_4bit=True)
    with pytest.raises(PbtError, match="nf4, fp4"):
        QuantizationSpec(load_in_4bit=True, bnb_4bit_quant_type="int4")
    with pytest.raises(PbtError, match="--dtype"):
        LoadOptions(dtype="float8")


def test_unknown_short_name_lists_known_and_suggests():
    with pytest.raises(PbtError) as error:
        check_spec(ModelSpec.parse("smollm2-13m"))
    message = str(error.value)
    assert 'did you mean "smollm2-135m"' in message
    for name in registry.REGISTRY:
        assert name in message


def test_released_models_are_registered():
    ids = {entry.hub_id for entry in registry.released_models()}
    assert ids == {"esteng/pbt_llama_3.1_8B", "esteng/pbt_llama_3.1_70B", "esteng/pbt_mistral_7B"}


def test_missing_paths_are_clear(tmp_path):
    with pytest.raises(PbtError, match="does not exist"):
        check_spec(ModelSpec.parse(str(tmp_path / "nope")))
    with pytest.raises(PbtError, match="does not exist"):
        check_spec(ModelSpec.parse("runs/demo/sft"))  # more than owner/name: a path, not a hub id
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PbtError, match="neither config.json"):
        check_spec(ModelSpec.parse(str(empty)))


def test_local_full_model_and_gguf(tiny_model_dir, tmp_path):
    resolved = resolve(ModelSpec.parse(str(tiny_model_dir)))
    assert (resolved.kind, resolved.base, resolved.adapter) == ("full", str(tiny_model_dir), None)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    resolved = resolve(ModelSpec.parse(str(gguf)))
    assert (resolved.kind, resolved.base, resolved.gguf_file) == ("gguf", str(tmp_path), "m.gguf")


def test_adapter_folder_names_its_base(tiny_model_dir, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model_dir)}))
    with pytest.raises(PbtError, match="no weights"):  # a config alone is not an adapter
        resolve(ModelSpec.parse(str(adapter)))
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    resolved = resolve(ModelSpec.parse(str(adapter)))
    assert resolved.kind == "adapter"
    assert resolved.base == str(tiny_model_dir)
    assert resolved.adapter == str(adapter)
    # the same adapter given with --adapter on top of its base
    resolved = resolve(ModelSpec.parse(str(tiny_model_dir), adapter=str(adapter)))
    assert (resolved.kind, resolved.adapter) == ("adapter", str(adapter))
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(PbtError, match="names no base model"):
        resolve(ModelSpec.parse(str(adapter)))


def test_offline_hub_id_not_in_cache_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(PbtError, match="not in the local Hugging Face cache and offline mode is on"):
        resolve(ModelSpec.parse("meta-llama/Llama-3.1-8B-Instruct"))


def test_hub_unreachable_fails_fast(monkeypatch):
    from pbt_cli.models import resolve as resolve_module

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(resolve_module, "_endpoint_resolves", lambda host: False)
    monkeypatch.setattr(resolve_module, "try_to_load_from_cache", None, raising=False)
    with pytest.raises(PbtError, match="cannot reach the Hugging Face hub"):
        resolve(ModelSpec.parse("some-owner/some-model-not-cached-anywhere"))


def test_demo_model_resolves_from_converted_cache_folder(tmp_path, monkeypatch, tiny_model_dir):
    import shutil

    monkeypatch.setenv("PBT_HOME", str(tmp_path))
    target = tmp_path / "models" / "smollm2-135m"
    shutil.copytree(tiny_model_dir, target)
    resolved = resolve(ModelSpec.parse("smollm2-135m"))
    assert (resolved.kind, resolved.base) == ("full", str(target))


@pytest.fixture
def loads_as_saved(monkeypatch):
    """transformers' loaders replaced by objects whose save_pretrained writes a bare config.json."""
    import transformers

    class Saved:
        def save_pretrained(self, folder):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "config.json").write_text("{}")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: Saved())
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: Saved())


def test_two_ranks_converting_the_demo_model_at_once_both_succeed(tmp_path, monkeypatch, loads_as_saved):
    """Every rank of a sharded launch converts the packaged GGUF on first use; the one whose rename comes
    second finds the other's folder in place (the rename fails: the target is not empty) and uses it."""
    import errno

    from pbt_cli.models import resolve as resolve_module

    folder = tmp_path / "models" / "smollm2-135m"

    def other_rank_first(source, target):
        Path(target).mkdir(parents=True)
        (Path(target) / "config.json").write_text('{"by": "the other rank"}')
        raise OSError(errno.ENOTEMPTY, "Directory not empty")

    monkeypatch.setattr(resolve_module.os, "replace", other_rank_first)
    resolve_module.convert_gguf_to_folder(tmp_path / "model.gguf", folder)
    assert json.loads((folder / "config.json").read_text()) == {"by": "the other rank"}
    assert [p.name for p in folder.parent.iterdir()] == ["smollm2-135m"]  # no staging copy left


def test_a_failed_demo_model_rename_with_no_folder_in_place_is_raised(tmp_path, monkeypatch, loads_as_saved):
    import errno

    from pbt_cli.models import resolve as resolve_module

    def full_disk(source, target):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(resolve_module.os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        resolve_module.convert_gguf_to_folder(tmp_path / "model.gguf", tmp_path / "models" / "smollm2-135m")
    assert list((tmp_path / "models").iterdir()) == []
