#!/usr/bin/env bash
# Prepare the wheelhouse that benchmarks/gpu_check.sh installs on a lent GPU machine (no network there).
#
#   bash benchmarks/gpu_wheelhouse.sh            # -> .whl/ (ignored by git; carry it: carry [".whl"])
#
# That machine has torch, transformers, peft, accelerate, pandas, pyarrow and httpx, but not trl,
# datasets, openai, fastapi or uvicorn (nor bitsandbytes or vllm, whose CUDA wheels do not fit the
# 64 MiB a call may carry: 4-bit on GPU and in-process vLLM stay unchecked). So the wheelhouse holds
# what pbt's GPU tests, `transformers serve` and pbt itself need beyond that: pure-Python wheels and a
# few small compiled ones (pydantic-core, jiter, xxhash, pyyaml) for CPython 3.12 on manylinux x86-64.
# Versions are the ones installed in this checkout's .venv (what CI tests), so the set is consistent;
# gpu_check.sh installs only those the machine lacks.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
DEST=${DEST:-.whl}
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
LIMIT_MIB=48  # of the 64 MiB a device call carries, the repository itself needs the rest

# trl and datasets (training), openai + fastapi + uvicorn (transformers serve), pbt's own small
# dependencies, pytest, and everything they need that the machine's torch / transformers stack lacks
PACKAGES=(
    trl datasets dill multiprocess xxhash fsspec
    fastapi starlette uvicorn annotated-doc opentelemetry-api h11
    pydantic pydantic-core annotated-types typing-inspection typing-extensions
    openai jiter httpx2 httpcore2 anyio sniffio
    jsonlines attrs typer click shellingham rich markdown-it-py mdurl pygments gguf pyyaml tqdm
    requests urllib3 charset-normalizer idna certifi truststore
    pytest pluggy iniconfig packaging
)

pinned=()
for name in "${PACKAGES[@]}"; do
    version=$("$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" 2>/dev/null || true)
    pinned+=("${name}${version:+==$version}")
done

rm -rf "$DEST"
mkdir -p "$DEST"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$DEST" \
    --python-version "$PYTHON_VERSION" --implementation cp --abi "cp${PYTHON_VERSION/./}" --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any "${pinned[@]}"

count=$(ls "$DEST"/*.whl | wc -l)
size_kib=$(du -sk "$DEST" | cut -f1)
echo "wheelhouse: $count wheels, $((size_kib / 1024)) MiB in $DEST"
if (( size_kib > LIMIT_MIB * 1024 )); then
    echo "the wheelhouse is over ${LIMIT_MIB} MiB: it will not travel with the repository" >&2
    exit 1
fi
