#!/usr/bin/env bash
# Preference pairs with the paper's judge (Llama-3-8B-Instruct) behind a vLLM server, then the datasets
# for one model family, as recipes/paper/prepare_data.sh makes them with an in-process judge.
#
#   bash recipes/paper/filter_served_judge.sh                # after serve_and_generate.sbatch
#   SERVE=0 JUDGE_URL=http://gpu-node:8003/v1 bash recipes/paper/filter_served_judge.sh
#
# The judge's answers are cached in $PAIRS/judge_cache.jsonl as they come, so a killed run asks only
# what it has not asked yet.
set -euo pipefail
PROTOCOL=${PROTOCOL:-original-code}   # as the original release did it (docs/method.md §8.7); paper: as described
TREES=${TREES:-data/trees_served}
PAIRS=${PAIRS:-data/pairs_served}
DATA=${DATA:-data}
JUDGE_MODEL=${JUDGE_MODEL:-meta-llama/Meta-Llama-3-8B-Instruct}
JUDGE_URL=${JUDGE_URL:-http://127.0.0.1:8003/v1}
FAMILY=${FAMILY:-llama-3.1-8b-instruct}
SERVE=${SERVE:-1}

source recipes/paper/vllm_serve.bash   # serve GPU PORT MODEL [vllm options], stopped on exit
serve - 8003 "$JUDGE_MODEL"

pbt filter --trees "$TREES" --out "$PAIRS" --judge "openai:$JUDGE_MODEL@$JUDGE_URL" --max-concurrency 128 --protocol "$PROTOCOL"

# the datasets are rendered with the family's own tokenizer (pbt loads only the tokenizer here)
pbt preprocess --pairs "$PAIRS" --tokenizer $FAMILY --format sft --mix balanced --max-length 1024 \
    --out "$DATA/$FAMILY/sft_balanced_served"
pbt preprocess --pairs "$PAIRS" --tokenizer $FAMILY --format dpo --mix balanced --max-length 1000 \
    --max-prompt-length 512 --out "$DATA/$FAMILY/dpo_balanced_served"
