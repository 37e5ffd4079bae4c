"""Content fingerprints in every reuse key (pbt_cli/fingerprints.py): a changed adapter, chat template or data
file is never passed off as the one the stored results came from."""

from __future__ import annotations

import json
from pathlib import Path

from pbt_cli import fingerprints
from pbt_cli.fingerprints import CACHE_NAME, path_fingerprint, spec_fingerprint
from pbt_cli.models.spec import ModelSpec


def adapter_folder(path: Path, weights: bytes = b"weights-1") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "owner/base"}))
    (path / "adapter_model.safetensors").write_bytes(weights)
    (path / "README.md").write_text("card")
    (path / "manifest.json").write_text("{}")
    return path


def test_a_folder_fingerprint_follows_the_weights_not_the_bookkeeping(tmp_path):
    folder = adapter_folder(tmp_path / "adapter")
    first = path_fingerprint(folder)
    assert first.startswith("sha256:") and path_fingerprint(folder) == first
    (folder / "README.md").write_text("a refreshed card")  # `pbt card` rewrites it: not another model
    (folder / "manifest.json").write_text('{"pushed_to": "x"}')
    (folder / "checkpoints").mkdir()
    assert path_fingerprint(folder) == first
    (folder / "adapter_model.safetensors").write_bytes(b"weights-2, retrained")
    assert path_fingerprint(folder) != first


def test_an_adapter_on_a_local_base_fingerprints_the_base_too(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "model.safetensors").write_bytes(b"base-1")
    folder = adapter_folder(tmp_path / "adapter")
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    before = path_fingerprint(folder)
    (base / "model.safetensors").write_bytes(b"base-2 replaced")
    assert path_fingerprint(folder) != before


def test_a_hub_model_is_named_by_its_revision_never_hashed(tmp_path):
    assert spec_fingerprint(ModelSpec("owner/model", revision="abc123")) == {"model": "owner/model@abc123"}
    assert spec_fingerprint(ModelSpec("owner/model")) == {"model": "owner/model@unpinned"}
    template = tmp_path / "chat.jinja"
    template.write_text("{{ messages }}")
    found = spec_fingerprint(ModelSpec("owner/model", adapter=str(adapter_folder(tmp_path / "a")),
                                       chat_template=template))
    assert set(found) == {"model", "adapter", "chat_template"}


def test_files_are_hashed_once_then_read_from_the_cache(tmp_path, monkeypatch):
    folder = adapter_folder(tmp_path / "adapter", b"x" * 1000)
    fingerprints.fingerprints([folder])
    cache = json.loads((Path(fingerprints._cache_path())).read_text())
    assert str((folder / "adapter_model.safetensors").resolve()) in cache
    assert fingerprints._cache_path().name == CACHE_NAME

    def no_reading(*args, **kwargs):
        raise AssertionError("a file with an unchanged size, mtime and inode was hashed again")

    monkeypatch.setattr(fingerprints, "open", no_reading, raising=False)
    assert fingerprints.fingerprints([folder])[str(folder)] == path_fingerprint(folder, cache)


def test_a_rendered_dataset_is_fingerprinted_by_the_files_in_its_subfolders(tmp_path):
    """`pbt preprocess` keeps its Parquet files in data/: re-rendering them is another dataset."""
    folder = tmp_path / "dpo_data"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "test-00000-of-00001.parquet").write_bytes(b"rows-1")
    (folder / "manifest.json").write_text("{}")
    before = path_fingerprint(folder)
    (folder / "runs").mkdir()
    (folder / "runs" / "events").write_bytes(b"tracker log")
    assert path_fingerprint(folder) == before  # a by-product folder is not the data
    (folder / "data" / "test-00000-of-00001.parquet").write_bytes(b"rows-2, re-rendered")
    assert path_fingerprint(folder) != before

