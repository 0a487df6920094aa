#!/usr/bin/env bash
# A minimal most_speech recipe to copy for a new corpus:
#   cp -r templates recipes/MyCorpus && cd recipes/MyCorpus && edit stages 0-2 below
#
# The only corpus-specific work is stages 0-2: end with one JSONL manifest per split in $datadir/<split>.jsonl,
# one utterance a line: {"id", "audio": "{data_root}/...", "start"?, "duration", "text", "spk_id"?, "lang"?}.
# Stages 3-11 (features, k-means units, tokenizer + task manifests, vocoder, training, decoding, scoring,
# RESULTS.md) are shared by every recipe: ../../tools/most_stages.sh.
#
#   bash run.sh --kaldi_dir /corpora/mycorpus/data --data_root /corpora/mycorpus        # Kaldi data dirs
#   bash run.sh --stage 8 --stop_stage 8 --train_args "--number_of_epochs=1"           # one stage
set -euo pipefail
cd "$(dirname "$0")"
root=../..                       # the repository root, seen from recipes/<name>/ (or from templates/ itself)
[ -f "$root/tools/recipe_utils.sh" ] || root=..
. "$root/tools/recipe_utils.sh"  # parse_options, run_stage, log, is_done / mark_done, require, run_logged

# ---------------------------------------------------------------- options: every line is a --name value
stage=0
stop_stage=11
mini=false                # no mini corpus for a new corpus; kept because the shared stages read it
datadir=data
dumpdir=dump
expdir=exp
nj=2
device=cpu
ngpu=0
kaldi_dir=                # EDIT: where your corpus is (here: Kaldi data dirs <kaldi_dir>/<split>/{wav.scp,text})
data_root=                # what {data_root} stands for in the manifests' audio paths
train_split=train
dev_split=dev
test_sets=test
min_dur=0.5
max_dur=30
lm_text=                  # optional extra text-LM sentences, one a line
# features, units, model (see recipes/LibriHeavy/README.md for what each means)
encoder=phonetic          # hubert (with --hubert_dir) for the real thing; phonetic (a CTC encoder stage 3 trains
                          # on your transcripts), fbank, mfcc need no weights
hubert_dir=
hubert_layer=11
phonetic_dir=             # encoder=phonetic: its directory (default $expdir/phonetic_encoder)
phonetic_args="--steps 800 --targets phonemes --layer 3"   # most-train-phonetic-encoder options
nclusters=64              # k-means units; 64 beat 256 and 32 on the LibriHeavy mini TTS (HuBERT: 500)
km_max_frames=1000000
km_n_init=5               # k-means++ restarts (fairseq's HuBERT recipe: 20)
km_feature_norm=none      # k-means input: none (HuBERT, phonetic) | utterance (per-utterance mean/variance: fbank)
km_frame_stack=1          # k-means clusters this many stacked frames (fbank: 4 -> 25 units/s; HuBERT: 1)
hparams=../LibriHeavy/hparams/mini.yaml      # a stage-1 config: mini.yaml (CPU), stage1_small.yaml, stage1.yaml
tokenizer_dir=
init_dir=                 # a converted DeepSeek-V2 checkpoint (most-convert-deepseek) to post-train instead
vocab_size=500
frame_stack=2             # the hparams' audio_frame_stack (mini.yaml: 2 phonetic frames per LM position)
vocoder_hparams=../LibriHeavy/hparams/vocoder_conv_mel.yaml
vocoder_args=             # extra --key=value overrides for most-train-vocoder (e.g. "--number_of_steps=300")
unit_rate=25              # units per second: encoder frame rate (fbank/mfcc 100, HuBERT-base 50, mHuBERT and
                          # phonetic 25) / km_frame_stack
train_args=
tag=stage1
decode_limit=0
asr_beam_size=1           # ASR beam (1: greedy)
asr_ctc_weight=0          # joint CTC/attention ASR decoding weight (models with a CTC head)
tts_limit=100
tts_temperature=0.8       # TTS sampling temperature (top-k 50, top-p 0.95)
tts_candidates=1          # best-of-N TTS: N samples per sentence, the --tts_reranker keeps one
tts_reranker=self         # self: the model's own ASR | encoder_ctc: the speech encoder's CTC head (phonetic) | self+encoder_ctc
tts_draft_gl_iters=0      # best-of-N with a Griffin-Lim vocoder: rank drafts of this many iterations (0: off)
judge=whisper
slm_voices="flite:awb espeak-ng:en-us+steph2 espeak-ng:en-gb+m6 espeak-ng:en-us+quincy"   # held-out voices of the spoken-LM pairs (test-split voices, never training ones)
results=RESULTS.md
evals="asr tts"

parse_options "$@"
[ -n "$kaldi_dir" ] || die "give --kaldi_dir (or edit stages 0-2 for your corpus's format)"
data_root=${data_root:-$kaldi_dir}
tokenizer_dir=${tokenizer_dir:-${init_dir:-$datadir/tokenizer}}
exp=$expdir/$tag
mkdir -p "$exp"
timings=$exp/timings.tsv
finish() { printf '%s\t%s\t%s\n' "$1" "$(stage_time)" "$2" >> "$timings"; log "Stage $1 done in $(stage_time) s"; }

# ---------------------------------------------------------------- stage 0: check (or download / make) the corpus
if run_stage 0 "check inputs"; then
  for s in $train_split $dev_split $test_sets; do require "$kaldi_dir/$s/wav.scp" "$kaldi_dir/$s/text"; done
  finish 0 "check inputs"
fi

# ---------------------------------------------------------------- stage 1: corpus -> JSONL manifests
# EDIT: use the preparer of your format (most-prepare-data libriheavy | librispeech | commonvoice |
# kaldi-import), or write a small local/prepare.py that emits the manifest fields listed at the top.
if run_stage 1 "prepare manifests"; then
  for s in $train_split $dev_split $test_sets; do
    most-prepare-data kaldi-import --kaldi-dir "$kaldi_dir/$s" --data-root "$data_root" \
      --out "$datadir/manifests/$s.jsonl"
  done
  finish 1 "prepare manifests"
fi

# ---------------------------------------------------------------- stage 2: filter (duration, empty text)
if run_stage 2 "filter"; then
  for s in $train_split $dev_split $test_sets; do
    most-prepare-data filter --in "$datadir/manifests/$s.jsonl" --out "$datadir/$s.jsonl" \
      --min-dur "$min_dur" --max-dur "$max_dur" --stats-json "$datadir/filtered/$s.stats.json"
  done
  finish 2 "filter"
fi

# ---------------------------------------------------------------- stages 3-11: shared
. "$root/tools/most_stages.sh"
log "done: stages $stage..$stop_stage"
