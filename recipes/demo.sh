#!/usr/bin/env bash
# The whole PBT pipeline on the demo model and the embedded questions, on a laptop CPU.
#
#   bash recipes/demo.sh [RUN_DIR]          # default RUN_DIR=runs/demo; ~15 min on 2 CPU cores
#
# Every step is a `pbt` command you can type yourself. Running the script again resumes or reuses
# finished stages instead of redoing them. SmolLM2-135M is weak: the numbers show that the plumbing
# works end to end, not what PBT does for a 7-8B model (see recipes/paper/ for the paper's runs).
set -euo pipefail

RUN=${1:-runs/demo}
MODEL=smollm2-135m
RESULTS=$RUN/results

echo "== 1/7 dialogue trees (both agents and the extractor are $MODEL)"
pbt generate --model-a $MODEL --model-b $MODEL --questions embedded:train --limit 24 \
    --max-new-tokens 48 --trees-per-batch 24 --out $RUN/trees

echo "== 2/7 preference pairs"
pbt filter --trees $RUN/trees --out $RUN/pairs

echo "== 3/7 rendered datasets for $MODEL's chat template"
pbt preprocess --pairs $RUN/pairs --tokenizer $MODEL --format sft --mix balanced --out $RUN/sft_data
pbt preprocess --pairs $RUN/pairs --tokenizer $MODEL --format dpo --mix balanced --out $RUN/dpo_data

echo "== 4/7 SFT on the preferred responses"
pbt sft --model $MODEL --data $RUN/sft_data --out $RUN/sft --max-steps 16 \
    --per-device-train-batch-size 4 --gradient-accumulation-steps 1 --warmup-steps 2 \
    --learning-rate 2e-4 --save-steps 8 --logging-steps 4

echo "== 5/7 DPO from the SFT adapter, best epoch by flipflop accuracy on the valid split"
pbt dpo --model $MODEL --adapter $RUN/sft --data $RUN/dpo_data --out $RUN/dpo --num-train-epochs 2 \
    --per-device-train-batch-size 4 --gradient-accumulation-steps 1 --warmup-steps 2 \
    --learning-rate 2e-4 --save-steps 8 --logging-steps 4 --eval-limit 16 --eval-max-new-tokens 48

echo "== 6/7 evaluations of the base model and the trained one"
for M in $MODEL $RUN/dpo; do
    pbt eval flipflop --model $M --data $RUN/dpo_data --split test --max-new-tokens 48 --out $RESULTS
    pbt eval ays --model $M --questions embedded:validation --limit 24 --max-new-tokens 48 --out $RESULTS
done
pbt eval team --model-x $MODEL --model-y $MODEL --questions embedded:validation --limit 16 \
    --max-new-tokens 48 --out $RESULTS
pbt eval team --model-x $RUN/dpo --model-y $MODEL --questions embedded:validation --limit 16 \
    --max-new-tokens 48 --out $RESULTS

echo "== 7/7 comparison"
pbt eval report $RESULTS

cat <<DONE

Artifacts:
  trees          $RUN/trees/trees.jsonl (+ manifest.json)
  pairs          $RUN/pairs/{train,valid,test}.jsonl
  datasets       $RUN/sft_data  $RUN/dpo_data   (Hugging Face datasets, save_to_disk)
  adapters       $RUN/sft  $RUN/dpo             (PEFT adapters, checkpoints/, log_history.jsonl)
  results        $RESULTS/<eval>/<model>/results.json and samples.jsonl
  plots          $RESULTS/report_flipflop.png  $RESULTS/report_team.png
DONE
