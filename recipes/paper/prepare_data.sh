#!/usr/bin/env bash
# From the trees to training data for each model family: filter once (with the paper's judge),
# then render SFT and DPO datasets per tokenizer, for the balanced (PBT), accept-only and
# resist-only mixes. The single-sided mixes get the same training size as the paper uses: the
# number of accept pairs (--limit, read from the pairs' manifest).
#
#   bash recipes/paper/prepare_data.sh              # after recipes/paper/generate_trees.sbatch
set -euo pipefail
TREES=${TREES:-data/trees}
PAIRS=${PAIRS:-data/pairs}
DATA=${DATA:-data}

pbt filter --trees "$TREES" --out "$PAIRS" --judge llama-3-8b-instruct --backend vllm

# accept pairs in the train split: the size of every mix, for a fair comparison
ACCEPT=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['counts']['train']['accept'])" \
    "$PAIRS/manifest.json" 2>/dev/null || echo 1000)

for FAMILY in llama-3.1-8b-instruct mistral-7b-instruct-v0.2 llama-3.1-70b-instruct; do
    pbt preprocess --pairs "$PAIRS" --tokenizer $FAMILY --format sft --mix balanced \
        --max-length 1024 --out "$DATA/$FAMILY/sft_balanced"
    for MIX in balanced accept resist; do
        pbt preprocess --pairs "$PAIRS" --tokenizer $FAMILY --format dpo --mix $MIX --limit "$ACCEPT" \
            --max-length 1000 --max-prompt-length 512 --out "$DATA/$FAMILY/dpo_$MIX"
    done
done
