#!/usr/bin/env bash
# PEGS `small` against the LLM + sticker tool baseline on a simulator-generated dataset, run by hand:
#
#   bench/pegs_retrieval.sh RUN_DIR PACK_DIR OUT_DIR [STEPS] [RATIOS]
#
# RUN_DIR: a `stickerconv generate` run folder (conversations.jsonl); PACK_DIR: the indexed sticker
# library it used; STEPS: optimiser steps per alignment stage (default 80; the joint stage gets 30, its
# dialogue batches take about 16 s a step on 2 cores). The heads learn at 3e-3 (--head-lr). RATIOS: the
# train/validation/test split by persona (default 0.75,0,0.25). Everything goes through the
# `stickerconv` commands a user would run: split by persona, per-turn samples, PEGS training
# (vision, perception, retrieval, joint, distill), then the retrieval protocols (1+9 and full pool) on the
# held-out assistant turns for three scorers: the index retriever over the dialogue text, the tool
# baseline's forced query, and PEGS's forced [IMG] block. Each writes OUT_DIR/retrieval-NAME.json.
set -euo pipefail
run=${1:?run folder}; pack=${2:?sticker library}; out=${3:?output folder}; steps=${4:-80}; ratios=${5:-0.75,0,0.25}
sc="$(dirname "$0")/../.venv/bin/stickerconv"
mkdir -p "$out"
"$sc" data split "$run/conversations.jsonl" --out "$out/split" --ratios "$ratios" --seed 0
for part in train test; do
    "$sc" data convert "$out/split/$part.jsonl" --to samples --out "$out/$part.json" --stickers "$pack"
done
/usr/bin/time -v "$sc" pegs train --preset small --stickers "$pack" --data "$out/train.json" --out "$out/pegs" \
    --steps "$steps" --joint-steps 30 --head-lr 3e-3 --batch-size 8 2> >(tee "$out/train.time" >&2)
"$sc" eval retrieval --data "$out/test.json" --stickers "$pack" --train "$out/train.json" \
    --out "$out/retrieval-index.json"
"$sc" eval retrieval --data "$out/test.json" --stickers "$pack" --train "$out/train.json" --scorer tool \
    --out "$out/retrieval-tool.json"
"$sc" eval retrieval --data "$out/test.json" --stickers "$pack" --train "$out/train.json" \
    --checkpoint "$out/pegs/final" --out "$out/retrieval-pegs.json"
