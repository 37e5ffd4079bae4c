#!/usr/bin/env bash
# Evaluate the paper's released PBT checkpoints, no training: download, then the three evaluations.
#
#   bash recipes/paper/released_models.sh
#
# flipflop needs balanced test data rendered for each model's tokenizer: make it with
# recipes/paper/prepare_data.sh, or point DATA_ROOT at data you already have. One extractor
# (EXTRACTOR, default Mistral-7B-Instruct-v0.2, the original runs' reader) reads every model's answers. The 70B model is
# downloaded too (`pbt download-models pbt-llama-3.1-70b`) but evaluated only on a multi-GPU node:
# add it to the loop with `--tensor-parallel-size 4 --backend vllm`.
set -euo pipefail
PROTOCOL=${PROTOCOL:-original-code}   # as the original release did it (docs/method.md §8.7); paper: as described
RESULTS=${RESULTS:-results/released}
DATA_ROOT=${DATA_ROOT:-data}
EXTRACTOR=${EXTRACTOR:-mistral-7b-instruct-v0.2}

pbt download-models pbt-llama-3.1-8b pbt-mistral-7b

for PAIR in "pbt-llama-3.1-8b llama-3.1-8b-instruct" "pbt-mistral-7b mistral-7b-instruct-v0.2"; do
    read -r MODEL FAMILY <<< "$PAIR"
    pbt eval flipflop --model $MODEL --data "$DATA_ROOT/$FAMILY/dpo_balanced" --split test \
        --protocol "$PROTOCOL" \
        --extractor-model $EXTRACTOR --out "$RESULTS"
    pbt eval ays --model $MODEL --questions trivia_qa:validation --limit 1000 \
        --protocol "$PROTOCOL" \
        --extractor-model $EXTRACTOR --out "$RESULTS"
done
pbt eval team --model-x pbt-llama-3.1-8b --model-y mistral-7b-instruct-v0.2 \
    --questions trivia_qa:validation --limit 1000 --extractor-model $EXTRACTOR --out "$RESULTS"
pbt eval report "$RESULTS"
