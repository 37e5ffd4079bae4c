#!/usr/bin/env bash
# SFT then DPO for the 7-8B models, for PBT (balanced) and the accept-only / resist-only
# baselines, three seeds each, with the paper's settings: LoRA r 16, alpha 32,
# dropout 0.05, base in 8-bit, lr 5e-4 cosine with 100 warm-up steps; SFT 240 steps at 8 x 10;
# DPO 5 epochs at 7 x 5 with beta 0.1, the best epoch kept by flipflop accuracy on valid.
#
#   bash recipes/paper/train.sh                     # one GPU, every run in turn
#   MODELS=mistral-7b-instruct-v0.2 SEEDS=42 bash recipes/paper/train.sh   # a subset
#
# Multi-GPU: the same commands under `accelerate launch --config_file recipes/accelerate/ddp.yaml
# -m pbt_cli ...` (see README, "Multi-GPU training").
set -euo pipefail
DATA=${DATA:-data}
MODELS=${MODELS:-llama-3.1-8b-instruct mistral-7b-instruct-v0.2}
SEEDS=${SEEDS:-12 42 64}
OUT=${OUT:-models}

for MODEL in $MODELS; do
    for SEED in $SEEDS; do
        pbt sft --config recipes/configs/sft_8b.yaml --model $MODEL --seed $SEED \
            --data "$DATA/$MODEL/sft_balanced" --out "$OUT/$MODEL/sft_seed$SEED"
        for MIX in balanced accept resist; do
            pbt dpo --config recipes/configs/dpo_8b.yaml --model $MODEL --seed $SEED \
                --adapter "$OUT/$MODEL/sft_seed$SEED" --data "$DATA/$MODEL/dpo_$MIX" \
                --out "$OUT/$MODEL/dpo_${MIX}_seed$SEED"
        done
    done
done
