#!/usr/bin/env bash
# Llama-3.1-70B-Instruct: QLoRA (4-bit NF4) sharded with FSDP over 8 GPUs, DPO for 2 epochs.
#
#   bash recipes/paper/train_70b.sh
#
# FSDP shards the 4-bit weights, so flipflop evaluation inside training (which generates with
# the whole model) is off here: evaluate the saved epochs afterwards with `pbt eval flipflop`.
set -euo pipefail
DATA=${DATA:-data/llama-3.1-70b-instruct}
OUT=${OUT:-models/llama-3.1-70b-instruct}
SEED=${SEED:-42}
LAUNCH="accelerate launch --config_file recipes/accelerate/fsdp_qlora.yaml -m pbt_cli"

$LAUNCH sft --config recipes/configs/sft_70b.yaml --model llama-3.1-70b-instruct --seed $SEED \
    --data "$DATA/sft_balanced" --out "$OUT/sft_seed$SEED"
$LAUNCH dpo --config recipes/configs/dpo_70b.yaml --model llama-3.1-70b-instruct --seed $SEED \
    --adapter "$OUT/sft_seed$SEED" --data "$DATA/dpo_balanced" --out "$OUT/dpo_balanced_seed$SEED"
