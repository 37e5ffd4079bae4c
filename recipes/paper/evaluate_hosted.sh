#!/usr/bin/env bash
# The paper's three evaluations of a hosted model behind any OpenAI-compatible API (here OpenAI's own),
# with answers read by an open model on a local vLLM server, so that the scores compare with those of
# the open models read by the same extractor (recipes/paper/evaluate_served.sh).
#
#   OPENAI_API_KEY=... bash recipes/paper/evaluate_hosted.sh
#   HOSTED=openai:MODEL_ID@https://api.example.com/v1 KEY_ENV=EXAMPLE_API_KEY bash recipes/paper/evaluate_hosted.sh
#   EXTRACTOR=self bash recipes/paper/evaluate_hosted.sh      # the hosted model reads its own answers
#
# The key is read from the variable KEY_ENV names (--api-key-env); it never goes on a command line or
# into a file pbt writes. Hosted APIs limit request rates: a few requests in flight and more retries
# (429 answers are retried after the server's Retry-After). They take neither min_tokens nor a
# prefix to continue: pbt says so in one warning line each and leaves them out (see the README).
set -euo pipefail
PROTOCOL=${PROTOCOL:-original-code}   # as the original release did it (docs/method.md §8.7); paper: as described
RESULTS=${RESULTS:-results/hosted}
DATA=${DATA:-data/llama-3.1-8b-instruct/dpo_balanced}   # any preprocess output: flipflop sends its dialogues
HOSTED=${HOSTED:-openai:gpt-4o-mini@https://api.openai.com/v1}
KEY_ENV=${KEY_ENV:-OPENAI_API_KEY}
READER=${READER:-mistralai/Mistral-7B-Instruct-v0.2}   # the paper's one reader (docs/method.md §7.6)
READER_URL=${READER_URL:-http://127.0.0.1:8000/v1}
PARTNER=${PARTNER:-$READER}    # the team partner, on the reader's server
EXTRACTOR=${EXTRACTOR:-openai:$READER@$READER_URL}
[[ $EXTRACTOR == self ]] && EXTRACTOR=$HOSTED
SERVE=${SERVE:-1}
HOSTED_LIMITS=(--api-key-env "$KEY_ENV" --max-concurrency 8 --max-retries 8 --request-timeout 120)

source recipes/paper/vllm_serve.bash   # serve GPU PORT MODEL [vllm options], stopped on exit
serve - 8000 "$READER"

# Every model option of one command shares --api-key-env: the local server ignores the key it is sent
pbt eval flipflop --model "$HOSTED" --data "$DATA" --split test --extractor-model "$EXTRACTOR" \
    --protocol "$PROTOCOL" \
    "${HOSTED_LIMITS[@]}" --out "$RESULTS"
pbt eval ays --model "$HOSTED" --questions trivia_qa:validation --limit 1000 --extractor-model "$EXTRACTOR" \
    --protocol "$PROTOCOL" \
    "${HOSTED_LIMITS[@]}" --out "$RESULTS"
pbt eval team --model-x "$HOSTED" --model-y "openai:$PARTNER@$READER_URL" --questions trivia_qa:validation \
    --limit 1000 --extractor-model "$EXTRACTOR" "${HOSTED_LIMITS[@]}" --out "$RESULTS"
pbt eval report "$RESULTS"
