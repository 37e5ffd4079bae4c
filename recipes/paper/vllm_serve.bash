# Sourced by the served-model recipes: `serve GPU PORT MODEL [vllm options]` starts `vllm serve` in
# the background on 127.0.0.1:PORT (GPU: the CUDA device index to pin it to, or - to leave
# CUDA_VISIBLE_DEVICES as the scheduler set it), then waits until the server lists its models (loading
# takes minutes), and stops every server it started when the script exits. `--generation-config vllm`:
# neutral sampling defaults, not the model's generation_config.json (pbt sends temperature, top_p,
# seeds and lengths with every request). `--tokenizer-mode hf`: the Hugging Face tokenizer and its chat
# template, as pbt's in-process vLLM backend uses (vLLM's default switches repositories with Mistral's
# native files to its Mistral tokenizer, which ignores the chat template). SERVE=0, or no vllm on PATH:
# the servers are expected to run elsewhere already, and only a note is printed.
SERVE=${SERVE:-1}
SERVERS=()
trap 'kill ${SERVERS[@]+"${SERVERS[@]}"} 2>/dev/null || true' EXIT
serve() {
    local gpu=$1 port=$2
    shift 2
    if [[ $SERVE != 1 ]] || ! command -v vllm >/dev/null; then
        echo "note: not starting vllm serve $* on port $port (SERVE=$SERVE; vllm: $(command -v vllm || echo not installed))"
        return 0
    fi
    mkdir -p logs
    if [[ $gpu == - ]]; then
        vllm serve "$@" --host 127.0.0.1 --port "$port" --generation-config vllm --max-model-len 4096 \
            --tokenizer-mode hf \
            > "logs/vllm-$port.log" 2>&1 &
    else
        CUDA_VISIBLE_DEVICES=$gpu vllm serve "$@" --host 127.0.0.1 --port "$port" --generation-config vllm \
            --max-model-len 4096 --tokenizer-mode hf > "logs/vllm-$port.log" 2>&1 &
    fi
    SERVERS+=($!)
    until python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)" \
            "http://127.0.0.1:$port/v1/models" 2>/dev/null; do
        kill -0 "${SERVERS[-1]}" 2>/dev/null || { echo "vllm serve $1 exited: see logs/vllm-$port.log" >&2; exit 1; }
        sleep 10
    done
}
