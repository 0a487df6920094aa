#!/usr/bin/env bash
# Shared shell helpers of the most_speech recipes (sourced by recipes/*/run.sh and templates/run.sh).
#
#   . "$(dirname "$0")/../../tools/recipe_utils.sh"
#   stage=0; stop_stage=100; expdir=exp          # defaults first ...
#   parse_options "$@"                           # ... then `--stage 3 --expdir /big/disk/exp` overrides them
#   if run_stage 3 "dump features"; then ...; fi # logs "Stage 3: dump features" when 3 is in [stage, stop_stage]
#   is_done "$dir" || { work; mark_done "$dir"; }   # skip work whose outputs are complete
#
# Conventions: every option is `--name value` (underscores or dashes, `--name=value` works too) and must
# name a variable that the script defined before calling parse_options, so a typo fails loudly; `--help`
# prints the script's header comment and its options (recipe_usage). Logs go to stderr with a timestamp;
# `run_logged LOG cmd...` tees a command's output into a log file (progress-bar redraws collapsed to their
# last state) and keeps its exit status.

# --help: the script's header comment (the lines after the shebang up to the first that is not a comment), then
# its options with their defaults and comments. The script may have cd'ed to its folder since it started.
recipe_usage() {
  local script=$0
  [ -f "$script" ] || script=${0##*/}
  awk 'NR == 1 { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' "$script"
  echo "Options (default):"
  grep -E '^[a-z_]+=' "$script" | sed 's/^/  --/'
}

# Kaldi/ESPnet's parse_options.sh, as a function: overrides already-defined shell variables.
parse_options() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --help|-h)
        recipe_usage
        exit 0 ;;
      --*=*)
        _po_name="${1%%=*}"; _po_value="${1#*=}"; shift ;;
      --*)
        if [ $# -lt 2 ]; then
          echo "$0: option $1 needs a value" >&2; exit 2
        fi
        _po_name="$1"; _po_value="$2"; shift 2 ;;
      *)
        echo "$0: unexpected argument '$1' (options are --name value)" >&2; exit 2 ;;
    esac
    _po_name="${_po_name#--}"
    _po_name="${_po_name//-/_}"
    if ! [[ "$_po_name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || [ -z "${!_po_name+set}" ]; then
      echo "$0: unknown option --${_po_name} (see --help)" >&2; exit 2
    fi
    printf -v "$_po_name" '%s' "$_po_value"
  done
}

log() {
  echo "$(date '+%Y-%m-%d %H:%M:%S') ($(basename "$0")) $*" >&2
}

die() {
  log "ERROR: $*"
  exit 1
}

# run_stage N "title": true (and logs "Stage N: title") when stage <= N <= stop_stage.
run_stage() {
  local n=$1; shift
  if [ "$n" -ge "$stage" ] && [ "$n" -le "$stop_stage" ]; then
    log "Stage $n: $*"
    _stage_start=$(date +%s)
    return 0
  fi
  return 1
}

# stage_time: seconds since the last run_stage, for the stage summary line.
stage_time() {
  echo $(( $(date +%s) - ${_stage_start:-$(date +%s)} ))
}

# A finished step leaves DIR/.done; reruns skip it. Delete the marker (or the folder) to redo the step.
is_done() {
  [ -f "$1/.done" ]
}

mark_done() {
  mkdir -p "$1" && date '+%Y-%m-%d %H:%M:%S' > "$1/.done"
}

# require FILE...: fail with a clear message when an input is missing.
require() {
  local f
  for f in "$@"; do
    [ -e "$f" ] || die "missing input: $f"
  done
}

# require_cmd CMD...: fail when a command is not on PATH (e.g. the console scripts of most_speech).
require_cmd() {
  local c
  for c in "$@"; do
    command -v "$c" > /dev/null || die "command '$c' not found: install most_speech (pip install -e .) and its tools"
  done
}

# run_logged LOG cmd...: run a command, its stdout+stderr appended to LOG and shown; keeps the exit status.
run_logged() {
  local logfile=$1; shift
  mkdir -p "$(dirname "$logfile")"
  echo "# $(date '+%Y-%m-%d %H:%M:%S') $*" >> "$logfile"
  set -o pipefail
  # The terminal gets every byte (tee -> fd 3 -> cat); the log keeps each line from its last carriage return
  # on, so a progress bar leaves its final state there instead of thousands of redraws. fd 3 is a pipe to cat,
  # not our stdout itself: tee reopens /dev/fd/3, which would truncate a file that run.sh's output is
  # redirected to (`bash run.sh > run.log`), and cat ends only when every byte is through.
  { "$@" 2>&1 | tee /dev/fd/3 | awk '{ sub(/.*\r/, ""); print; fflush() }' >> "$logfile"; } 3>&1 | cat
}

# true_value VALUE: true for true/yes/1.
true_value() {
  case "$1" in true|yes|1|True) return 0 ;; *) return 1 ;; esac
}

# encoder_options [dump|export]: set the array enc_opts to $encoder's options for most-dump-features (dump:
# --model-dir / --layer) or most-export (export: --encoder-dir / --encoder-layer), from $hubert_dir,
# $hubert_layer and $phonetic_dir
encoder_options() {
  local dir=--model-dir layer=--layer
  [ "${1:-dump}" = export ] && { dir=--encoder-dir; layer=--encoder-layer; }
  enc_opts=(--encoder "$encoder")
  case $encoder in
    hubert) enc_opts+=("$dir" "$hubert_dir" "$layer" "$hubert_layer") ;;
    phonetic) enc_opts+=("$dir" "$phonetic_dir") ;;
  esac
}
