#!/usr/bin/env bash
# The MoST ablation at equal compute on the mini corpus: dense vs vanilla MoE vs MAMoE vs MAMoE without the
# shared expert (hparams/ablation_*.yaml; each file explains how the activated compute per token is matched).
# Reuses the mini run's data (stages 0-7 of `run.sh --mini true`, run here first if missing), trains each
# variant for the same number of steps, decodes and scores ASR and the spoken-LM pairs, and writes the
# "ablation" section of RESULTS.md.
#
#   bash local/ablation.sh [--epochs 3] [--variants "dense moe mamoe mamoe_noshared"] [any run.sh option]
set -euo pipefail
cd "$(dirname "$0")/.."
. ../../tools/recipe_utils.sh

epochs=3                  # x steps_per_epoch (200) optimizer steps per variant (RESULTS.md: 3)
variants="dense moe mamoe mamoe_noshared"
expdir=exp
results=RESULTS.md
evals="asr slm"
rest=()
# our own options first; everything else goes to run.sh
while [ $# -gt 0 ]; do
  case "$1" in
    --epochs|--variants|--expdir|--results|--evals) printf -v "${1#--}" '%s' "$2"; shift 2 ;;
    *) rest+=("$1"); shift ;;
  esac
done

bash run.sh --mini true --expdir "$expdir" --stage 0 --stop_stage 7 "${rest[@]}"
runs=()
for v in $variants; do
  log "ablation: $v"
  bash run.sh --mini true --expdir "$expdir" --stage 8 --stop_stage 10 --hparams "hparams/ablation_$v.yaml" \
    --tag "ablation/$v" --evals "$evals" --train_args "--number_of_epochs=$epochs" "${rest[@]}"
  runs+=(--run "$v=$expdir/ablation/$v")
done
python3 -m most_speech.recipes.report ablation "${runs[@]}" --results "$results" --section ablation \
  --title "Ablation at equal activated compute (mini corpus, $epochs x 200 steps each)" --notes local/ablation_notes.md
log "ablation table written to $results"
