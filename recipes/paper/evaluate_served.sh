#!/usr/bin/env bash
# The paper's three evaluations of the released PBT Llama model and its base, both served by one vLLM
# server (the PBT adapter as a LoRA module on the base), Mistral-7B-Instruct-v0.2 as the team partner on a
# second server, which also reads every answer, as in the original runs: one extractor for every model
# compared (docs/method.md §7.6).
#
#   bash recipes/paper/evaluate_served.sh           # a node with 2 GPUs; flipflop data from prepare_data.sh
#   SERVE=0 URL=http://gpu-node:8000/v1 PARTNER_URL=http://gpu-node:8002/v1 bash recipes/paper/evaluate_served.sh
#
# The released checkpoint is served as a LoRA adapter of its base (`--enable-lora --lora-modules
# NAME=REPO`); a checkpoint with full weights would be served on its own (`vllm serve REPO`) instead.
# `pbt eval report` groups the results by extractor: keep the extractor's server address the same
# across runs that are compared (the address is part of a served model's name).
set -euo pipefail
PROTOCOL=${PROTOCOL:-original-code}   # as the original release did it (docs/method.md §8.7); paper: as described
RESULTS=${RESULTS:-results/served}
DATA_ROOT=${DATA_ROOT:-data}
BASE=${BASE:-meta-llama/Llama-3.1-8B-Instruct}
PBT_NAME=${PBT_NAME:-pbt-llama-3.1-8b}
PBT_REPO=${PBT_REPO:-esteng/pbt_llama_3.1_8B}
PARTNER=${PARTNER:-mistralai/Mistral-7B-Instruct-v0.2}
URL=${URL:-http://127.0.0.1:8000/v1}
PARTNER_URL=${PARTNER_URL:-http://127.0.0.1:8002/v1}
SERVE=${SERVE:-1}

source recipes/paper/vllm_serve.bash   # serve GPU PORT MODEL [vllm options], stopped on exit

serve 0 8000 "$BASE" --enable-lora --lora-modules "$PBT_NAME=$PBT_REPO" --max-lora-rank 64
serve 1 8002 "$PARTNER"

EXTRACTOR="openai:$PARTNER@$PARTNER_URL"   # Mistral-7B-Instruct-v0.2, the paper's one reader
for MODEL in "openai:$PBT_NAME@$URL" "openai:$BASE@$URL"; do
    # flipflop sends the test pairs' dialogues (message lists); the data's rendering is for the tokenizer
    pbt eval flipflop --model "$MODEL" --data "$DATA_ROOT/llama-3.1-8b-instruct/dpo_balanced" --split test \
        --protocol "$PROTOCOL" \
        --extractor-model "$EXTRACTOR" --out "$RESULTS"
    pbt eval ays --model "$MODEL" --questions trivia_qa:validation --limit 1000 \
        --protocol "$PROTOCOL" \
        --extractor-model "$EXTRACTOR" --out "$RESULTS"
    pbt eval team --model-x "$MODEL" --model-y "openai:$PARTNER@$PARTNER_URL" \
        --questions trivia_qa:validation --limit 1000 --extractor-model "$EXTRACTOR" --out "$RESULTS"
done
pbt eval report "$RESULTS"
