#!/usr/bin/env bash
# The MoST ablation at equal compute on the mini corpus: dense vs vanilla MoE vs MAMoE vs MAMoE without the
# shared expert (hparams/ablation_*.yaml; each file explains how the activated compute per token is matched).
# Reuses the mini run's data (stages 0-7 of `run.sh --mini true`, run here first if missing), trains each
# variant for the same number of steps, decodes and scores ASR and the spoken-LM pairs, and writes the
# "ablation" section of RESULTS.md. With several --seeds every variant is trained once per seed (the seed
# sets the initialisation and the batch order) and the table gives means ± standard deviations and each
# seed's figures. Runs go to $expdir/ablation/<variant>/seed<seed>: adding seeds later reuses finished runs
# (delete a run's folder to retrain it, e.g. after changing --epochs).
#
#   bash local/ablation.sh [--epochs 10] [--seeds "1986 1987 1988"] [--variants "dense moe mamoe mamoe_noshared"]
#       [any run.sh option; --train_args "..." is added after this script's own overrides]
set -euo pipefail
cd "$(dirname "$0")/.."
. ../../tools/recipe_utils.sh

epochs=10                 # x the yaml's steps_per_epoch: 4000 optimizer steps per variant, the mini run's budget (RESULTS.md);
                          # after 600 steps the audio CTC is not learnt yet and joint CTC/attention ASR reads ~80 % WER
variants="dense moe mamoe mamoe_noshared"
seeds=1986                # one or more training seeds (the hparams' default is 1986)
train_args=
expdir=exp
results=RESULTS.md
evals="asr slm_sentences"   # the mini run's pair test: one word of each test and dev sentence swapped for its pseudoword
rest=()
# our own options first; everything else goes to run.sh
while [ $# -gt 0 ]; do
  case "$1" in
    --epochs|--variants|--seeds|--train_args|--expdir|--results|--evals) printf -v "${1#--}" '%s' "$2"; shift 2 ;;
    *) rest+=("$1"); shift ;;
  esac
done

bash run.sh --mini true --expdir "$expdir" --stage 0 --stop_stage 7 "${rest[@]}"
# the table's title says how many steps each variant trained: the yaml's steps_per_epoch, or --train_args's
steps_per_epoch=$(sed -n 's/^steps_per_epoch: *\([0-9][0-9]*\).*/\1/p' "hparams/ablation_${variants%% *}.yaml")
if [[ " $train_args " =~ --steps_per_epoch=([0-9]+) ]]; then steps_per_epoch=${BASH_REMATCH[1]}; fi
read -r -a seed_list <<< "$seeds"
runs=()
for v in $variants; do
  for seed in "${seed_list[@]}"; do
    tag=ablation/$v/seed$seed
    log "ablation: $v, seed $seed"
    bash run.sh --mini true --expdir "$expdir" --stage 8 --stop_stage 10 --hparams "hparams/ablation_$v.yaml" \
      --tag "$tag" --evals "$evals" --train_args "--number_of_epochs=$epochs --seed=$seed $train_args" "${rest[@]}"
    runs+=(--run "$v=$expdir/$tag")
  done
done
python3 -m most_speech.recipes.report ablation "${runs[@]}" --results "$results" --section ablation \
  --title "Ablation at equal activated compute (mini corpus, $epochs x $steps_per_epoch steps each, seeds $seeds)" \
  --notes local/ablation_notes.md
log "ablation table written to $results"
