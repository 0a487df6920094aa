#!/usr/bin/env bash
# Stage-1 MoST on LibriHeavy (cuts + Libri-Light audio), or on the synthetic mini corpus with --mini true.
#
#   bash run.sh --mini true                          # everything on a generated mini corpus, CPU, ~30 min
#   bash run.sh --libriheavy_dir /data/libriheavy \  # full setup (GPUs): see README.md
#       --hubert_dir exp/mhubert25 --init_dir exp/most_init --hparams hparams/stage1.yaml --ngpu 8
#   bash run.sh --stage 8 --stop_stage 8 --train_args "--number_of_epochs=1"    # one stage, extra overrides
#
# Stages: 0 check inputs (mini: make the corpus), 1 prepare manifests, 2 filter/normalise, 3 encoder features,
# 4 learn k-means, 5 units for all splits, 6 tokenizer + token layout + task manifests, 7 vocoder,
# 8 train (train.py <hparams>), 9 decode (ASR, TTS, spoken-LM pairs on an inference export),
# 10 score, 11 export + RESULTS.md. Finished steps leave a .done marker and are skipped on reruns.
set -euo pipefail
cd "$(dirname "$0")"
. ../../tools/recipe_utils.sh

# ------------------------------------------------------------------ options (each is a --name value override)
stage=0
stop_stage=11
mini=false                # true: generate and use the mini corpus with light (fbank) features
datadir=data              # manifests, tokenizer, task manifests
dumpdir=dump              # features and units
expdir=exp                # k-means, vocoder, training, decoding, scores
nj=2                      # parallel jobs: corpus generation, feature dumping, pair synthesis, TTS judging
device=cpu                # cpu, cuda, cuda:0 ...
ngpu=0                    # > 1: training through torchrun (DDP) or deepspeed (engine in the hparams)
# corpus
libriheavy_dir=           # LibriHeavy folder: libriheavy_cuts_<split>.jsonl.gz and download/librilight/...
data_root=                # what {data_root} stands for in audio paths (default: --libriheavy_dir)
librispeech_dir=          # optional: LibriSpeech folder for the test-clean / test-other test sets
train_split=small         # small | medium | large
dev_split=dev
test_sets="test_clean test_other"
text_form=cased           # cased (MoST) | normalized (upper case, no punctuation)
min_dur=0.5
max_dur=30
mini_num_train=4800   # 2400 before: ASR 16.7 -> 12.9 % on the same test audio (RESULTS.md)
mini_num_dev=100
mini_num_test=100
mini_lm_sentences=20000   # extra text-LM sentences from the mini grammar (training split only)
# features and units
encoder=hubert            # hubert | phonetic (a CTC encoder trained in stage 3) | fbank | mfcc
hubert_dir=               # converted mHuBERT directory (most-convert-hubert)
hubert_layer=11
phonetic_dir=             # encoder=phonetic: its directory (default $expdir/phonetic_encoder)
phonetic_args=            # extra most-train-phonetic-encoder options (e.g. "--steps 800")
nclusters=500
km_max_frames=1000000
km_n_init=20              # k-means++ restarts (fairseq's HuBERT recipe: 20)
km_feature_norm=none       # k-means input: none | utterance (per-utterance mean/variance; raw filterbanks)
km_frame_stack=1          # k-means clusters this many stacked frames: unit_rate = encoder frame rate / it
# model and training
hparams=hparams/stage1.yaml
tokenizer_dir=            # default: --init_dir (converted DeepSeek-V2 tokenizer) or $datadir/tokenizer
init_dir=                 # converted DeepSeek-V2(-Lite) MoST checkpoint (most-convert-deepseek)
vocab_size=1000           # SentencePiece size when a tokenizer is trained here
frame_stack=1             # the model's audio_frame_stack (LM positions = frames / stack)
vocoder_hparams=hparams/vocoder_conv_mel.yaml   # CPU vocoder (minutes); on GPUs a unit HiFi-GAN
vocoder_args=             # extra --key=value overrides for most-train-vocoder (e.g. "--number_of_steps=300")
unit_rate=50              # units per second before deduplication (encoder frame rate / km_frame_stack)
train_args=               # extra --key=value overrides for train.py
tag=stage1                # experiment name: $expdir/$tag
# decoding and scoring
decode_limit=0            # decode at most this many utterances per test set (0: all)
asr_beam_size=1           # ASR beam (1: greedy)
asr_ctc_weight=0          # joint CTC/attention ASR decoding weight (models with a CTC head)
tts_limit=100
tts_temperature=0.8       # TTS sampling temperature (top-k 50, top-p 0.95)
tts_candidates=1          # best-of-N TTS: N samples per sentence, the --tts_reranker keeps one
tts_reranker=self         # self: the model's own ASR | encoder_ctc: the speech encoder's CTC head (phonetic) | self+encoder_ctc
tts_draft_gl_iters=0      # best-of-N with a Griffin-Lim vocoder: rank drafts of this many iterations (0: off)
judge=whisper             # TTS intelligibility judge (whisper | pocketsphinx | ctc:DIR)
slm_voices="flite:awb espeak-ng:en-us+steph2 espeak-ng:en-gb+m6 espeak-ng:en-us+quincy"   # held-out voices of the spoken-LM pairs (test-split voices, never training ones)
results=RESULTS.md
evals="asr tts slm_sentences"   # what stages 9-10 decode and score: asr tts resynth slm_sentences slm
                                # (resynth: the test units voiced, the vocoder's ceiling; slm*: mini only)
slm_num_words=0           # spoken-LM pairs: at most this many vocabulary words (0: all)
speech_input=             # the export's speech input (continuous | units; empty: what training used)
export_template="{}"      # TemplateConfig fields over the ones training used (the model's template.json), JSON

parse_options "$@"

if true_value "$mini"; then
  # The mini run: everything from the generated corpus on CPU. No HuBERT weights offline: stage 3 trains a
  # small CTC phonetic encoder on the training split instead (800 steps, ~5 min), whose 25 Hz frames are the
  # model's input and, through k-means, its units. These are its defaults; options given on the command
  # line still win (second parse_options).
  libriheavy_dir=$datadir/mini_corpus
  encoder=phonetic; phonetic_args="--steps 800 --targets phonemes --layer 3"; frame_stack=2; text_form=normalized
  nclusters=64; km_n_init=5; unit_rate=25    # 25 Hz units of the phonetic encoder's layer 3; K=64: dev TTS
                                            # judge 69.7 % against 76.5 % with K=256 (RESULTS.md)
  asr_beam_size=4; asr_ctc_weight=0.7   # joint CTC/attention decoding (weight chosen on the dev split)
  tts_temperature=0.3                   # chosen on the dev split (40 sentences: 0.8 / 0.5 / 0.3 / greedy)
  tts_candidates=8; tts_reranker=self+encoder_ctc   # best of 8 by the model's ASR + the encoder's CTC,
  tts_draft_gl_iters=8                  # ranked on 8-iteration Griffin-Lim drafts (RESULTS.md, Best of N)
  hparams=hparams/mini.yaml; test_sets=test_clean; tag=mini; vocab_size=400
  parse_options "$@"
fi
[ -n "$libriheavy_dir" ] || die "give --libriheavy_dir (or --mini true)"
data_root=${data_root:-$libriheavy_dir}
tokenizer_dir=${tokenizer_dir:-${init_dir:-$datadir/tokenizer}}
exp=$expdir/$tag
mkdir -p "$exp"
timings=$exp/timings.tsv
finish() { printf '%s\t%s\t%s\n' "$1" "$(stage_time)" "$2" >> "$timings"; log "Stage $1 done in $(stage_time) s"; }
require_cmd most-prepare-data most-dump-features most-learn-kmeans most-dump-units most-train-vocoder \
  most-export most-decode most-score

if run_stage 0 "check inputs"; then
  if true_value "$mini" && ! is_done "$libriheavy_dir"; then
    require_cmd most-make-mini-corpus espeak-ng flite
    log "generating the mini corpus in $libriheavy_dir (${mini_num_train}/${mini_num_dev}/${mini_num_test} utts)"
    most-make-mini-corpus "$libriheavy_dir" --num-train "$mini_num_train" --num-dev "$mini_num_dev" \
      --num-test "$mini_num_test" --jobs "$nj" --formats libriheavy
    mark_done "$libriheavy_dir"
  fi
  for s in $train_split $dev_split $test_sets; do
    [ -e "$libriheavy_dir/libriheavy_cuts_$s.jsonl.gz" ] || [ -e "$libriheavy_dir/libriheavy_cuts_$s.jsonl" ] || \
      [ -n "$librispeech_dir" ] || die "no cuts for split $s in $libriheavy_dir"
  done
  [ "$encoder" != hubert ] || [ -d "$hubert_dir" ] || die "--encoder hubert needs --hubert_dir (most-convert-hubert)"
  finish 0 "check inputs"
fi

if run_stage 1 "prepare manifests"; then
  if ! is_done "$datadir/manifests"; then
    ls_sets=; lh_sets=
    for s in $train_split $dev_split $test_sets; do
      if [ -n "$librispeech_dir" ] && [[ $s == test_* ]]; then ls_sets="$ls_sets ${s//_/-}"; else lh_sets="$lh_sets $s"; fi
    done
    most-prepare-data libriheavy --cuts-dir "$libriheavy_dir" --out "$datadir/manifests" --splits $lh_sets \
      --text-form "$text_form" --data-root "$data_root"
    if [ -n "$ls_sets" ]; then
      most-prepare-data librispeech --corpus-dir "$librispeech_dir" --out "$datadir/manifests" --splits $ls_sets
    fi
    mark_done "$datadir/manifests"
  fi
  finish 1 "prepare manifests"
fi

manifest_of() {  # prepared manifest of a split (LibriHeavy or LibriSpeech naming)
  local m
  for m in "$datadir/manifests/libriheavy_$1.jsonl" "$datadir/manifests/librispeech_${1//_/-}.jsonl" \
           "$datadir/manifests/librispeech_$1.jsonl"; do
    [ -f "$m" ] && { echo "$m"; return; }
  done
  die "no prepared manifest for split $1 in $datadir/manifests"
}

if run_stage 2 "filter / normalise"; then
  if ! is_done "$datadir/filtered"; then
    for s in $train_split $dev_split $test_sets; do
      most-prepare-data filter --in "$(manifest_of "$s")" --out "$datadir/$s.jsonl" --min-dur "$min_dur" \
        --max-dur "$max_dur" --stats-json "$datadir/filtered/$s.stats.json"
    done
    mark_done "$datadir/filtered"
  fi
  finish 2 "filter / normalise"
fi

. ../../tools/most_stages.sh
log "done: stages $stage..$stop_stage"
