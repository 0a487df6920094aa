#!/usr/bin/env bash
# Stages 3-11 shared by every most_speech recipe (ESPnet's TEMPLATE/asr.sh idea): sourced by a recipe's
# run.sh after its corpus-specific stages 0-2 wrote $datadir/<split>.jsonl for the splits
# $train_split $dev_split $test_sets (JSONL manifests: id, audio with {data_root}, start/duration, text).
#
# Stages: 3 encoder features (all splits, by utterance id), 4 k-means, 5 units, 6 tokenizer + token layout +
# task manifests, 7 unit vocoder, 8 train ($train_py $hparams), 9 decode on an inference export (ASR on every
# test set, TTS and resynthesis on the first, spoken-LM pairs in mini mode), 10 score, 11 RESULTS.md section
# "$tag"; stages 9-10 do what $evals names.
# Variables it reads (the recipe defines them as options): see recipes/LibriHeavy/run.sh.

feats=$dumpdir/feats/all
units=$dumpdir/units/all.jsonl
km=$expdir/kmeans/kmeans.safetensors
exp=$expdir/$tag
export=$exp/export
train_py=${train_py:-train.py}
lm_text=${lm_text:-}
speech_input=${speech_input:-}   # the export's speech input: continuous | units (empty: the model's template.json)
export_template=${export_template:-"{}"}   # TemplateConfig fields over the model's template.json (prompts, dedup)
slm_num_words=${slm_num_words:-0}   # spoken-LM pair test: at most this many words (0: the whole vocabulary)
phonetic_dir=${phonetic_dir:-$expdir/phonetic_encoder}   # encoder=phonetic: where stage 3 trains it

if [ "$stop_stage" -ge 3 ] && [ "$stage" -le 5 ] && [ ! -f "$datadir/all.jsonl" ]; then
  # one manifest over every split: features and units are stored by utterance id
  for s in $train_split $dev_split $test_sets; do cat "$datadir/$s.jsonl"; done > "$datadir/.all.jsonl.tmp"
  mv "$datadir/.all.jsonl.tmp" "$datadir/all.jsonl"
fi

dump_features() {  # dump_features OUT ENCODER_OPTS...: every split's frames, by utterance id
  local out=$1 r; shift
  # shards run one after the other here; on a cluster, submit one job per --rank
  for ((r = 0; r < nj; r++)); do
    most-dump-features --manifest "$datadir/all.jsonl" --data-root "$data_root" "$@" \
      --device "${device%%:*}" --nj "$nj" --rank "$r" --out "$out"
  done
}

if run_stage 3 "encoder features ($encoder)"; then
  if ! is_done "$feats"; then
    if [ "$encoder" = phonetic ]; then  # HuBERT's stand-in: a CTC encoder trained here on the training filterbanks
      is_done "$dumpdir/feats/fbank" || { dump_features "$dumpdir/feats/fbank" --encoder fbank
                                          mark_done "$dumpdir/feats/fbank"; }
      if [ ! -f "$phonetic_dir/model.safetensors" ]; then
        # shellcheck disable=SC2086
        run_logged "$expdir/phonetic_encoder.log" most-train-phonetic-encoder --feats "$dumpdir/feats/fbank" \
          --train "$datadir/$train_split.jsonl" --valid "$datadir/$dev_split.jsonl" --out "$phonetic_dir" \
          ${phonetic_args:-}
      fi
    fi
    encoder_options dump
    dump_features "$feats" "${enc_opts[@]}"
    mark_done "$feats"
  fi
  finish 3 "encoder features"
fi

if run_stage 4 "learn k-means (K=$nclusters)"; then
  if [ ! -f "$km" ]; then
    most-learn-kmeans --feats "$feats" --k "$nclusters" --out "$km" --max-frames "$km_max_frames" \
      --feature-norm "${km_feature_norm:-none}" --frame-stack "${km_frame_stack:-1}" --n-init "${km_n_init:-20}"
  fi
  finish 4 "learn k-means"
fi

if run_stage 5 "units for all splits"; then
  if ! is_done "$dumpdir/units"; then
    most-dump-units --feats "$feats" --km "$km" --out "$units"
    mark_done "$dumpdir/units"
  fi
  finish 5 "units"
fi

km_tag=$( [ -f "${units%.jsonl}.km_tag" ] && cat "${units%.jsonl}.km_tag" || true)

if run_stage 6 "tokenizer + token layout + task manifests"; then
  if ! is_done "$datadir/tasks"; then
    lm_opts=()
    if true_value "$mini" && [ -z "$lm_text" ]; then
      lm_text=$datadir/lm_text.txt
      case_opt=(--cased); [ "${text_form:-cased}" = normalized ] && case_opt=()   # same form as the transcripts
      python3 -m most_speech.recipes.mini lm-text --num "$mini_lm_sentences" "${case_opt[@]}" --out "$lm_text"
    fi
    [ -n "$lm_text" ] && lm_opts=(--lm-text "$lm_text")
    python3 -m most_speech.recipes.tasks --train "$datadir/$train_split.jsonl" --valid "$datadir/$dev_split.jsonl" \
      --units "$units" --feats "$feats" --frame-stack "$frame_stack" --tokenizer-dir "$tokenizer_dir" \
      --vocab-size "$vocab_size" --num-units "$nclusters" --out "$datadir/tasks" "${lm_opts[@]}"
    mark_done "$datadir/tasks"
  fi
  finish 6 "tokenizer + task manifests"
fi

if run_stage 7 "unit vocoder ($vocoder_hparams)"; then
  # stage 5's units store (km_tag in its header file), joined to the train split by utterance id
  if [ ! -f "$expdir/vocoder/vocoder/config.json" ]; then
    # shellcheck disable=SC2086
    run_logged "$expdir/vocoder/log.txt" most-train-vocoder "$vocoder_hparams" --output_folder="$expdir/vocoder" \
      --train_manifest="$datadir/$train_split.jsonl" --train_units="$units" --km_tag="$km_tag" \
      --num_units="$nclusters" --unit_rate="$unit_rate" --data_root="$data_root" --device="$device" ${vocoder_args:-}
  fi
  finish 7 "vocoder"
fi

if run_stage 8 "train ($hparams)"; then
  args=("$hparams" --output_folder="$exp/train" --data_folder="$datadir" --tokenizer_dir="$tokenizer_dir"
        --audio_features_store="$feats" --data_root="$data_root")
  [ -n "$init_dir" ] && args+=(--init_from="$init_dir")
  if [ "$ngpu" -gt 1 ]; then
    launcher=(torchrun --standalone --nproc_per_node="$ngpu")
  else
    launcher=(python3); args+=(--device="$device")
  fi
  # shellcheck disable=SC2206
  run_logged "$exp/train_stdout.log" "${launcher[@]}" "$train_py" "${args[@]}" $train_args
  finish 8 "train"
fi

if run_stage 9 "decode (ASR, TTS, spoken-LM pairs)"; then
  encoder_options export
  most-export "$exp/train/model" "$export" ${speech_input:+--speech-input "$speech_input"} \
    --template "$export_template" "${enc_opts[@]}" --kmeans "$km" \
    --vocoder "$expdir/vocoder/vocoder" --unit-rate "$unit_rate" --overwrite
  for s in $test_sets; do
    [[ " $evals " == *" asr "* ]] || continue
    most-decode asr "$export" --manifest "$datadir/$s.jsonl" --data-root "$data_root" --limit "$decode_limit" \
      --beam-size "${asr_beam_size:-1}" --ctc-weight "${asr_ctc_weight:-0}" --device "$device" \
      --out "$exp/decode/asr_$s/hyp.jsonl"
  done
  s=${test_sets%% *}
  if [[ " $evals " == *" tts "* ]]; then
    # synth.jsonl pairs each synthesized wav with the real recording (segments cut to tts_$s/real/)
    most-decode tts "$export" --manifest "$datadir/$s.jsonl" --data-root "$data_root" --limit "$tts_limit" \
      --temperature "${tts_temperature:-0.8}" --candidates "${tts_candidates:-1}" --reranker "${tts_reranker:-self}" \
      --draft-griffin-lim-iters "${tts_draft_gl_iters:-0}" \
      --rerank-ctc-weight "${asr_ctc_weight:-0}" --device "$device" --out-dir "$exp/decode/tts_$s"
  fi
  if [[ " $evals " == *" resynth "* ]]; then
    # the same sentences voiced from their real units: the ceiling the vocoder and units put on TTS (it does not
    # depend on the trained model: opt-in, ~1.5 min of a mini run)
    most-decode resynth "$export" --manifest "$datadir/$s.jsonl" --units "$units" --limit "$tts_limit" \
      --device "$device" --out-dir "$exp/decode/tts_${s}_resynth"
  fi
  # spoken-LM pairs, each spoken by every held-out voice, pseudowords matched to their words in phonemes so
  # that length cannot decide: slm_sentences, one word of each test and dev sentence swapped for its
  # pseudoword; slm, the mini vocabulary's words alone (out of the training domain: every utterance is a sentence)
  for set_name in slm slm_sentences; do
    true_value "$mini" && [[ " $evals " == *" $set_name "* ]] || continue
    slm_dir=$datadir/${set_name/slm/slm_swuggy}
    limit=$slm_num_words; sentences=()   # in sentences, the test and dev splits bound the set, not the word list
    [ "$set_name" = slm ] || { limit=0; sentences=(--sentences "$datadir/$s.jsonl" "$datadir/$dev_split.jsonl"); }
    # shellcheck disable=SC2206  # one argument per voice
    build=(--words "$slm_dir/words.txt" "${sentences[@]}" --match-phonemes --voice $slm_voices --out "$slm_dir")
    stamp="${build[*]}"; [ "$set_name" = slm ] || stamp+=" $(cat "${sentences[@]:1}" | md5sum)"
    if [ ! -f "$slm_dir/pairs.csv" ] || [ "$(cat "$slm_dir/build_stamp.txt" 2>/dev/null)" != "$stamp" ]; then
      python3 -m most_speech.recipes.mini words --limit "$limit" --out "$slm_dir/words.txt"
      most-score build-swuggy "${build[@]}" --jobs "$nj"
      echo "$stamp" > "$slm_dir/build_stamp.txt"   # rebuilt when the voices, options or sentences change
    fi
    most-decode slm-pairs "$export" --pairs "$slm_dir/pairs.csv" --device "$device" \
      --out "$exp/decode/$(basename "$slm_dir")/pairs.jsonl"
  done
  finish 9 "decode"
fi

if run_stage 10 "score"; then   # what $evals names, as stage 9 decoded it (a rerun for one eval scores that one)
  for s in $test_sets; do
    [[ " $evals " == *" asr "* ]] && [ -f "$exp/decode/asr_$s/hyp.jsonl" ] || continue
    ref=$datadir/$s.jsonl
    if [ "$decode_limit" -gt 0 ]; then   # score only what was decoded
      mkdir -p "$exp/score"; ref=$exp/score/asr_$s.ref.jsonl; head -n "$decode_limit" "$datadir/$s.jsonl" > "$ref"
    fi
    most-score wer --ref "$ref" --hyp "$exp/decode/asr_$s/hyp.jsonl" --out "$exp/score/asr_$s"
  done
  for synth in "$exp"/decode/tts_*/synth.jsonl; do
    name=$(basename "$(dirname "$synth")"); kind=tts; [[ $name == *_resynth ]] && kind=resynth
    [[ " $evals " == *" $kind "* ]] && [ -f "$synth" ] || continue
    most-score intelligibility --manifest "$synth" --judge "$judge" --jobs "$nj" --out "$exp/score/$name"
  done
  for p in "$exp"/decode/slm_*/pairs.jsonl; do
    name=$(basename "$(dirname "$p")")
    [[ " $evals " == *" ${name/slm_swuggy/slm} "* ]] && [ -f "$p" ] || continue
    bos=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['bos_id'])" "$export/tokenizer/token_layout.json")
    most-score slm --pairs "$p" --model "$export/model" --bos-id "$bos" --device "$device" --out "$exp/score/$name"
  done
  finish 10 "score"
fi

if run_stage 11 "export + $results"; then
  python3 -m most_speech.recipes.report results --exp "$exp" --results "$results" --section "$tag" \
    --title "$tag: $(basename "$hparams") on $( true_value "$mini" && echo "the mini corpus" || echo "LibriHeavy $train_split")"
  log "inference export: $export (most-transcribe / most-synthesize / MoSTASR.from_pretrained)"
  finish 11 "export + results"
fi
