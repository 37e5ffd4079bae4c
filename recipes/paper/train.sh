#!/usr/bin/env bash
# The paper's training protocol for the 7-8B models (docs/method.md §7.4): for PBT (balanced) and
# the accept-only and resist-only baselines, each mix's own SFT, then DPO from that SFT adapter, at
# seeds 12, 42 and 64. LoRA r 16, alpha 32, dropout 0.05, base in 8-bit, lr 5e-4 cosine with 100
# warm-up steps; SFT 240 steps at 8 x 10; DPO 5 epochs at 7 x 5 with beta 0.1. Each DPO epoch is
# scored by flipflop accuracy on up to 1000 valid pairs of the mix's own kinds, read by one
# extractor (EXTRACTOR), and the best epoch is kept.
#
#   bash recipes/paper/train.sh                     # one GPU, every run in turn
#   MODELS=mistral-7b-instruct-v0.2 SEEDS=42 MIXES=balanced bash recipes/paper/train.sh   # a subset
#
# Multi-GPU: the same commands under `torchrun --nproc_per_node N -m pbt_cli ...` or `accelerate launch
# --config_file recipes/accelerate/ddp.yaml -m pbt_cli ...` (README, "Multi-GPU training"); per-device
# batch x accumulation x N is then the global batch.
set -euo pipefail
DATA=${DATA:-data}
MODELS=${MODELS:-llama-3.1-8b-instruct mistral-7b-instruct-v0.2}
SEEDS=${SEEDS:-12 42 64}
MIXES=${MIXES:-balanced accept resist}
OUT=${OUT:-models}
EXTRACTOR=${EXTRACTOR:-mistral-7b-instruct-v0.2}   # the one reader of the original runs

for MODEL in $MODELS; do
    for SEED in $SEEDS; do
        for MIX in $MIXES; do
            pbt sft --config recipes/configs/sft_8b.yaml --model $MODEL --seed $SEED \
                --data "$DATA/$MODEL/sft_$MIX" --out "$OUT/$MODEL/sft_${MIX}_seed$SEED"
            pbt dpo --config recipes/configs/dpo_8b.yaml --model $MODEL --seed $SEED \
                --adapter "$OUT/$MODEL/sft_${MIX}_seed$SEED" --data "$DATA/$MODEL/dpo_$MIX" \
                --extractor-model $EXTRACTOR --out "$OUT/$MODEL/dpo_${MIX}_seed$SEED"
        done
    done
done
