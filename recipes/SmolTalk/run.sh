#!/usr/bin/env bash
# Stage 2 of MoST: instruction tuning from a stage-1 model on SmolTalk dialogues turned into speech
# instructions (user turns spoken by a local TTS engine or by the stage-1 model itself), text instructions,
# and ASR / TTS replay from stage 1, mixed 0.4 / 0.4 / 0.1 / 0.1 (hparams/stage2.yaml); then spoken QA.
#
#   bash run.sh --smoltalk_dir /data/smoltalk/data/all --stage1_recipe ../LibriHeavy --stage1_tag stage1 \
#       --questions /data/webquestions/test.json --hubert_dir ../LibriHeavy/exp/mhubert25 --ngpu 8
#
# Stages: 0 check inputs, 1 SmolTalk -> dialogue manifests (most-prepare-data smoltalk), 2 speak the user
# turns (--tts local: --voice; --tts most: the stage-1 export), 3 encoder features for the spoken
# instructions and the stage-1 replay, 4 task manifests, 5 train (train.py hparams/stage2.yaml from the stage-1
# model), 6 spoken QA (most-score build-qa, most-decode qa, most-score qa) on WebQuestions-format questions
# (--dev_qa_limit N: and on the first N held-out spoken instructions).
set -euo pipefail
cd "$(dirname "$0")"
. ../../tools/recipe_utils.sh

stage=0
stop_stage=6
datadir=data
dumpdir=dump
expdir=exp
device=cpu
ngpu=0
smoltalk_dir=             # SmolTalk rows (*.jsonl / *.parquet with "messages")
dev_dialogues=500         # the last N training dialogues are held out for validation
limit=0                   # use the first N dialogues (0: all)
max_words=40              # longest user turn that is spoken
tts=local                 # local (espeak-ng / flite, --voice) | most (the stage-1 export speaks)
voice=espeak-ng:en-us
stage1_recipe=../LibriHeavy   # where stage 1 ran: its data/tasks (replay), exp/<tag>/{train/model,export}
stage1_tag=stage1
stage1_data_root=         # what {data_root} stands for in the stage-1 manifests (its corpus folder)
encoder=hubert            # must match stage 1 (its export's most.json): hubert | phonetic | fbank | mfcc
hubert_dir=
hubert_layer=11
phonetic_dir=             # encoder=phonetic: stage 1's encoder (default $stage1_recipe/exp/phonetic_encoder)
unit_rate=                # units per second of the stage-1 units (default: the stage-1 export's most.json)
hparams=hparams/stage2.yaml
train_args=
tag=stage2
questions=                # WebQuestions-format JSON / JSONL (qId, qText, answers) for spoken QA
qa_limit=200
qa_voice=flite:awb
dev_qa_limit=0            # stage 6 also answers the first N held-out spoken instructions, scored as spoken QA
                          # (gold answer contained in the output: for short answers such as the mini dialogues')

parse_options "$@"
s1_exp=$stage1_recipe/exp/$stage1_tag
phonetic_dir=${phonetic_dir:-$stage1_recipe/exp/phonetic_encoder}
s1_model=$s1_exp/train/model
exp=$expdir/$tag
mkdir -p "$exp"
timings=$exp/timings.tsv
finish() { printf '%s\t%s\t%s\n' "$1" "$(stage_time)" "$2" >> "$timings"; log "Stage $1 done in $(stage_time) s"; }

if run_stage 0 "check inputs"; then
  [ -n "$smoltalk_dir" ] || die "give --smoltalk_dir"
  require "$smoltalk_dir" "$s1_model/config.json" "$stage1_recipe/data/tasks/asr_train.jsonl"
  [ "$tts" != most ] || require "$s1_exp/export/most.json"
  [ "$encoder" != hubert ] || [ -d "$hubert_dir" ] || die "--encoder hubert needs --hubert_dir"
  [ "$encoder" != phonetic ] || require "$phonetic_dir/model.safetensors"
  finish 0 "check inputs"
fi

if run_stage 1 "SmolTalk -> dialogue manifests"; then
  if ! is_done "$datadir/manifests"; then
    most-prepare-data smoltalk --input "$smoltalk_dir" --out "$datadir/manifests" --split train --skip-invalid
    all=$datadir/manifests/smoltalk_train.jsonl
    [ "$limit" -gt 0 ] && { head -n "$limit" "$all" > "$all.tmp"; mv "$all.tmp" "$all"; }
    n=$(wc -l < "$all")
    [ "$n" -gt "$dev_dialogues" ] || die "$all has $n dialogues, not more than --dev_dialogues $dev_dialogues"
    head -n $((n - dev_dialogues)) "$all" > "$datadir/dialogues_train.jsonl"
    tail -n "$dev_dialogues" "$all" > "$datadir/dialogues_dev.jsonl"
    mark_done "$datadir/manifests"
  fi
  finish 1 "dialogue manifests"
fi

if run_stage 2 "speak the user turns ($tts)"; then
  tts_opts=(--voice "$voice")
  [ "$tts" = most ] && tts_opts=(--tts-export "$s1_exp/export")
  for s in train dev; do
    [ -f "$datadir/tasks/speech_instruction_$s.jsonl" ] && continue
    python3 -m most_speech.recipes.smoltalk --dialogues "$datadir/dialogues_$s.jsonl" --out "$datadir/tasks" \
      --split "$s" --wav-dir "$datadir/speech_instructions/$s" --max-words "$max_words" "${tts_opts[@]}"
  done
  finish 2 "spoken instructions"
fi

feats=$dumpdir/feats/stage2
if run_stage 3 "encoder features ($encoder)"; then
  if ! is_done "$feats"; then
    # one store for the spoken instructions and the stage-1 ASR replay (features are looked up by id)
    cat "$datadir/tasks/speech_instruction_train.jsonl" "$datadir/tasks/speech_instruction_dev.jsonl" \
      "$stage1_recipe/data/tasks/asr_train.jsonl" > "$datadir/feature_manifest.jsonl"
    encoder_options dump
    most-dump-features --manifest "$datadir/feature_manifest.jsonl" \
      ${stage1_data_root:+--data-root "$stage1_data_root"} \
      "${enc_opts[@]}" --device "${device%%:*}" --out "$feats"
    mark_done "$feats"
  fi
  finish 3 "features"
fi

if run_stage 4 "task manifests (speech / text instructions + ASR / TTS replay)"; then
  for t in asr tts; do
    cp "$stage1_recipe/data/tasks/${t}_train.jsonl" "$datadir/tasks/${t}_train.jsonl"
  done
  finish 4 "task manifests"
fi

if run_stage 5 "train ($hparams from $s1_model)"; then
  args=("$hparams" --output_folder="$exp/train" --data_folder="$datadir" --init_from="$s1_model"
        --audio_features_store="$feats")
  if [ "$ngpu" -gt 1 ]; then launcher=(torchrun --standalone --nproc_per_node="$ngpu"); else
    launcher=(python3); args+=(--device="$device"); fi
  # shellcheck disable=SC2206
  run_logged "$exp/train_stdout.log" "${launcher[@]}" train.py "${args[@]}" $train_args
  finish 5 "train"
fi

if run_stage 6 "spoken QA"; then
  [ -n "$questions" ] || die "give --questions (WebQuestions-format JSON) for spoken QA"
  encoder_options export
  voc_opts=()
  [ -d "$stage1_recipe/exp/vocoder/vocoder" ] && voc_opts=(--vocoder "$stage1_recipe/exp/vocoder/vocoder" \
    --kmeans "$stage1_recipe/exp/kmeans/kmeans.safetensors")
  if [ -z "$unit_rate" ]; then
    s1_info=$stage1_recipe/exp/$stage1_tag/export/most.json
    [ -f "$s1_info" ] || die "give --unit_rate (no stage-1 export info at $s1_info)"
    unit_rate=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["unit_rate"])' "$s1_info")
  fi
  most-export "$exp/train/model" "$exp/export" --speech-input continuous "${enc_opts[@]}" "${voc_opts[@]}" \
    --unit-rate "$unit_rate" --overwrite
  qa_dir=$datadir/spoken_qa
  [ -f "$qa_dir/questions.jsonl" ] || most-score build-qa --questions "$questions" --limit "$qa_limit" \
    --voice "$qa_voice" --out "$qa_dir"
  most-decode qa "$exp/export" --manifest "$qa_dir/questions.jsonl" --device "$device" --out "$qa_dir/answers.jsonl"
  most-score qa --questions "$qa_dir/questions.jsonl" --pred "$qa_dir/answers.jsonl" --out "$exp/score/qa_webq"
  if [ "$dev_qa_limit" -gt 0 ]; then
    dev_manifest=$datadir/tasks/speech_instruction_dev.jsonl
    most-decode qa "$exp/export" --manifest "$dev_manifest" --limit "$dev_qa_limit" --device "$device" \
      --out "$exp/score/qa_dev/answers.jsonl"
    most-score qa --questions "$dev_manifest" --limit "$dev_qa_limit" --pred "$exp/score/qa_dev/answers.jsonl" \
      --out "$exp/score/qa_dev"
  fi
  finish 6 "spoken QA"
fi
log "done: stages $stage..$stop_stage"
