"""Fixtures for the served-model backend: a real `transformers serve` on 127.0.0.1, and the stub server.

`transformers serve` (transformers' own OpenAI-compatible server, the `transformers[serving]` extra:
fastapi, uvicorn, openai) is started once per session on the tiny test model, on CPU, on a free port,
and stopped at the end; without the extra the tests that need it are skipped with the reason. The
stub server (stub_server.py) answers at once or misbehaves on request, for the fault tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_process import ServedModel, transformers_serve
from stub_server import StubServer

from pbt_cli.models.backends import served


@pytest.fixture(scope="session")
def served_tiny(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedModel]:
    """The tiny random Llama behind `transformers serve`, for the whole session."""
    with transformers_serve(tiny_model_dir, tmp_path_factory.mktemp("serve") / "serve.log") as model:
        yield model


@pytest.fixture
def stub() -> Iterator[object]:
    """`stub(**options)` starts a StubServer (see stub_server.py); every one is stopped after the test."""
    servers: list[StubServer] = []

    def start(**options: object) -> StubServer:
        server = StubServer(**options).start()  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(autouse=True)
def _quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries wait milliseconds here, not seconds (a Retry-After header is still honoured)."""
    monkeypatch.setattr(served, "BACKOFF_BASE_S", 0.01)
    monkeypatch.setattr(served, "BACKOFF_CAP_S", 0.05)


@pytest.fixture(autouse=True)
def _no_ambient_server_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own OPENAI_* variables must not leak into the tests."""
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
