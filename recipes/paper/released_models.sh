#!/usr/bin/env bash
# Evaluate the paper's released PBT checkpoints, no training: download, then the three evaluations.
#
#   bash recipes/paper/released_models.sh
#
# flipflop needs balanced test data rendered for each model's tokenizer: make it with
# recipes/paper/prepare_data.sh, or point DATA_ROOT at data you already have.
set -euo pipefail
RESULTS=${RESULTS:-results/released}
DATA_ROOT=${DATA_ROOT:-data}

pbt download-models all

for PAIR in "pbt-llama-3.1-8b llama-3.1-8b-instruct" "pbt-mistral-7b mistral-7b-instruct-v0.2"; do
    read -r MODEL FAMILY <<< "$PAIR"
    pbt eval flipflop --model $MODEL --data "$DATA_ROOT/$FAMILY/dpo_balanced" --split test --out "$RESULTS"
    pbt eval ays --model $MODEL --questions trivia_qa:validation --limit 1000 --out "$RESULTS"
done
pbt eval team --model-x pbt-llama-3.1-8b --model-y mistral-7b-instruct-v0.2 \
    --questions trivia_qa:validation --limit 1000 --out "$RESULTS"
pbt eval report "$RESULTS"
