#!/usr/bin/env bash
# From the trees to training data for each model family, as the original runs made it
# (docs/method.md §7.2-7.3): filter once (with the paper's judge), then render, per tokenizer, an
# SFT and a DPO dataset for each of the three mixes. Sizes follow the original --balance: both
# kinds are cut to the smaller kind's count m, so the balanced mix (PBT) has 2m pairs and the
# accept-only and resist-only mixes m each.
#
#   bash recipes/paper/prepare_data.sh              # after recipes/paper/generate_trees.sbatch
#   EQUAL_SIZE=1 bash recipes/paper/prepare_data.sh # ablation: every mix cut to the same m pairs
set -euo pipefail
PROTOCOL=${PROTOCOL:-original-code}   # as the original release did it (docs/method.md §8.7); paper: as described
TREES=${TREES:-data/trees}
PAIRS=${PAIRS:-data/pairs}
DATA=${DATA:-data}
JUDGE=${JUDGE:-llama-3-8b-instruct}   # the paper's judge of answer sameness and pair kinds
EQUAL_SIZE=${EQUAL_SIZE:-0}
FAMILIES=${FAMILIES:-llama-3.1-8b-instruct mistral-7b-instruct-v0.2 llama-3.1-70b-instruct}

pbt filter --trees "$TREES" --out "$PAIRS" --judge $JUDGE --backend vllm --protocol "$PROTOCOL"

# m, the smaller kind's count in the train split (1 while the pairs do not exist yet: a --dry-run)
M=$(python3 -c "import json,sys; c=json.load(open(sys.argv[1]))['counts']['train']; print(min(c['accept'], c['resist']))" \
    "$PAIRS/manifest.json" 2>/dev/null || echo 1)
LIMIT=()
if [ "$EQUAL_SIZE" = 1 ]; then
    LIMIT=(--limit "$M")   # balanced: m/2 of each kind, accept-only and resist-only: m
fi

for FAMILY in $FAMILIES; do
    for MIX in balanced accept resist; do
        # each mix gets its own SFT data: the preferred responses of its own pairs
        pbt preprocess --pairs "$PAIRS" --tokenizer $FAMILY --format sft --mix $MIX ${LIMIT[@]+"${LIMIT[@]}"} \
            --max-length 1024 --out "$DATA/$FAMILY/sft_$MIX"
        pbt preprocess --pairs "$PAIRS" --tokenizer $FAMILY --format dpo --mix $MIX ${LIMIT[@]+"${LIMIT[@]}"} \
            --max-length 1000 --max-prompt-length 512 --out "$DATA/$FAMILY/dpo_$MIX"
    done
done
