#!/usr/bin/env bash
# The whole PBT pipeline on the demo model and the embedded questions, on a laptop CPU.
#
#   bash recipes/demo.sh [RUN_DIR]          # default RUN_DIR=runs/demo; 10-19 min on 2 CPU cores
#
# Every step is a `pbt` command you can type yourself. Running the script again resumes or reuses
# finished stages instead of redoing them. SmolLM2-135M is weak: the numbers show that the plumbing
# works end to end, not what PBT does for a 7-8B model (see recipes/paper/ for the paper's runs).
set -euo pipefail

RUN=${1:-runs/demo}
MODEL=smollm2-135m
RESULTS=$RUN/results

# What a stage's manifest counts: `count FILE KEY...` (1 while FILE does not exist: a --dry-run)
count() {
    [ -f "$1" ] || { echo 1; return; }
    python3 -c 'import json, sys
value = json.load(open(sys.argv[1]))
for key in sys.argv[2:]: value = value[key]
print(value)' "$@"
}

echo "== 1/7 dialogue trees (both agents and the extractor are $MODEL)"
# 8 extraction tokens, not 16: an answer is a word or two, and the demo model's rambling extractions
# read as no answer either way (measured: a third less extraction time; README, Performance)
pbt generate --model-a $MODEL --model-b $MODEL --questions embedded:train-easy --limit 64 \
    --max-new-tokens 40 --extraction-max-new-tokens 8 --trees-per-batch 64 --out $RUN/trees

echo "== 2/7 preference pairs"
# A third of the trees each for valid and test: a 135M model makes few resist and accept pairs, and the
# flipflop evaluation (and DPO's choice of epoch) needs some of each held out
pbt filter --trees $RUN/trees --out $RUN/pairs --valid-fraction 0.3 --test-fraction 0.3

# A 135M model rarely gets an answer right, so resist and accept pairs are few; when the train
# split lacks one kind, the demo trains on every pair instead of the balanced mix (a 7-8B model
# gives thousands of each: see recipes/paper/).
MIX=balanced
if [ "$(count $RUN/pairs/manifest.json counts train resist)" -eq 0 ] \
        || [ "$(count $RUN/pairs/manifest.json counts train accept)" -eq 0 ]; then
    echo "note: no resist or no accept pairs in the train split; using --mix all"
    MIX=all
fi

echo "== 3/7 rendered datasets for $MODEL's chat template"
# --no-balance-eval: valid and test keep every held-out resist and accept pair (the paper cuts them to equal
# counts; with the demo's few pairs that would leave nothing); the report shows resisting and accepting apart
pbt preprocess --pairs $RUN/pairs --tokenizer $MODEL --format sft --mix $MIX --no-balance-eval --out $RUN/sft_data
pbt preprocess --pairs $RUN/pairs --tokenizer $MODEL --format dpo --mix $MIX --no-balance-eval --out $RUN/dpo_data

VALID=$(count $RUN/dpo_data/manifest.json counts valid)
TEST=$(count $RUN/dpo_data/manifest.json counts test)
EVAL=epoch
CHOICE="best epoch by flipflop accuracy on the valid split ($VALID pairs)"
if [ "$VALID" -eq 0 ]; then
    echo "note: the valid split has no flipflop pairs; DPO runs without per-epoch evaluation"
    EVAL=no
    CHOICE="no valid pairs, so the last epoch"
fi

echo "== 4/7 SFT on the preferred responses"
# a 135M model fits without gradient checkpointing, which would compute every forward pass twice
pbt sft --model $MODEL --data $RUN/sft_data --out $RUN/sft --max-steps 16 \
    --per-device-train-batch-size 4 --gradient-accumulation-steps 1 --warmup-steps 2 \
    --learning-rate 2e-4 --save-steps 8 --logging-steps 4 --no-gradient-checkpointing

echo "== 5/7 DPO from the SFT adapter, $CHOICE"
pbt dpo --model $MODEL --adapter $RUN/sft --data $RUN/dpo_data --out $RUN/dpo --num-train-epochs 2 \
    --per-device-train-batch-size 4 --gradient-accumulation-steps 1 --warmup-steps 2 \
    --learning-rate 2e-4 --save-steps 8 --logging-steps 4 --eval-strategy $EVAL --eval-limit 16 \
    --eval-max-new-tokens 40 --no-gradient-checkpointing

echo "== 6/7 evaluations of the base model and the trained one"
# Every answer is read by the base model (an evaluation's default extractor is the evaluated model's
# base: the trained adapter's base with the adapter switched off), so the two models are scored alike.
for M in $MODEL $RUN/dpo; do
    if [ "$TEST" -gt 0 ]; then
        pbt eval flipflop --model $M --data $RUN/dpo_data --split test --max-new-tokens 40 \
            --extraction-max-new-tokens 8 --out $RESULTS
    else
        echo "note: the test split has no flipflop pairs; skipping eval flipflop"
    fi
    pbt eval ays --model $M --questions embedded:validation-easy --limit 24 --max-new-tokens 40 \
        --extraction-max-new-tokens 8 --out $RESULTS
    # resistance to misinformation on the small Farm sample shipped with pbt (the real Farm: see README)
    pbt eval farm --model $M --farm embedded:farm-sample --reply-max-new-tokens 48 --out $RESULTS
done
pbt eval team --model-x $MODEL --model-y $MODEL --questions embedded:validation-easy --limit 16 \
    --max-new-tokens 40 --extraction-max-new-tokens 8 --out $RESULTS
pbt eval team --model-x $RUN/dpo --model-y $MODEL --questions embedded:validation-easy --limit 16 \
    --max-new-tokens 40 --extraction-max-new-tokens 8 --out $RESULTS

echo "== 7/7 comparison: each model, the trained one minus the base (paired intervals), plots"
pbt eval report $RESULTS
# the adapter's model card gains its evaluation results (the embedded sample sets are shown, marked,
# and kept out of the model-index metadata)
pbt card $RUN/dpo --results $RESULTS
# the same results in lm-eval's results layout and as Inspect eval logs (`inspect view`)
pbt eval export $RESULTS --format lm-eval
pbt eval export $RESULTS --format inspect

cat <<DONE

Artifacts:
  trees          $RUN/trees/trees.jsonl (+ manifest.json)
  pairs          $RUN/pairs/{train,valid,test}.jsonl
  datasets       $RUN/sft_data  $RUN/dpo_data   (Parquet splits + card: datasets.load_dataset(FOLDER))
  adapters       $RUN/sft  $RUN/dpo             (PEFT adapters with model cards; checkpoints/, log_history.jsonl)
  results        $RESULTS/<eval>/<model>/results.json and samples.jsonl
  report         $RESULTS/report/report.{csv,md,json}, report_vs_base.csv and report_*.png (flipflop:
                 resist vs accept, when the test split has flipflop pairs; team accuracy by order; Farm
                 accuracy by persuasion turn)
  exports        $RESULTS/export-lm-eval/<model>/results_pbt.json, $RESULTS/export-inspect/*.json
DONE
