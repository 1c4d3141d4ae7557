#!/usr/bin/env bash
# Start a recipe on this machine by hand.
#
#   launch/local.sh METHOD PRESET [ACCELERATE_CONFIG] [-- any_field value ...]
#   launch/local.sh sft recipes/smollm2-135m/sft_lora.yaml cpu -- --learning_rate 1e-4
#
# ACCELERATE_CONFIG names a file in accelerate_configs/ (default: cpu). PRINT=1 prints the command only.
set -euo pipefail
cd "$(dirname "$0")/.."
method=${1:?method: sft}
preset=${2:?preset YAML}
accel=${3:-cpu}
shift $(( $# < 3 ? $# : 3 ))
[ "${1:-}" = "--" ] && shift
cmd=(accelerate launch --config_file "accelerate_configs/${accel}.yaml" "recipes/${method}.py" --config "$preset" "$@")
if [ "${PRINT:-0}" = 1 ]; then printf '%q ' "${cmd[@]}"; echo; else exec "${cmd[@]}"; fi
