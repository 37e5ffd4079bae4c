#!/usr/bin/env bash
# Llama-3.1-70B-Instruct (docs/method.md §7.5): 4-bit QLoRA sharded with FSDP over 8 GPUs, SFT then
# DPO for 2 epochs. FSDP cannot generate inside training, so every epoch is saved and
# `pbt select-checkpoint` afterwards scores each epoch with the same flipflop code (1000 valid
# pairs, the EXTRACTOR reading) and installs the best as the run's adapter, as the 8B runs do
# inside training. Each checkpoint is saved as FSDP shards and gets its adapter files read back from
# them; the final adapter is gathered from every rank (docs/method.md §5.6). DPO keeps --reference base
# (the paper's): --reference sft is refused under FSDP.
#
#   bash recipes/paper/train_70b.sh
set -euo pipefail
DATA=${DATA:-data/llama-3.1-70b-instruct}
OUT=${OUT:-models/llama-3.1-70b-instruct}
SEED=${SEED:-42}
MIX=${MIX:-balanced}
EXTRACTOR=${EXTRACTOR:-mistral-7b-instruct-v0.2}
LAUNCH="accelerate launch --config_file recipes/accelerate/fsdp_qlora.yaml -m pbt_cli"

$LAUNCH sft --config recipes/configs/sft_70b.yaml --model llama-3.1-70b-instruct --seed $SEED \
    --data "$DATA/sft_$MIX" --out "$OUT/sft_${MIX}_seed$SEED"
$LAUNCH dpo --config recipes/configs/dpo_70b.yaml --model llama-3.1-70b-instruct --seed $SEED \
    --adapter "$OUT/sft_${MIX}_seed$SEED" --data "$DATA/dpo_$MIX" --out "$OUT/dpo_${MIX}_seed$SEED"
# one process, the 4-bit base on the visible GPUs: the best epoch becomes the run's adapter
pbt select-checkpoint --run "$OUT/dpo_${MIX}_seed$SEED" --extractor-model $EXTRACTOR --eval-limit 1000
