#!/usr/bin/env bash
# Start a recipe on this machine by hand, through `posttrain-dist launch` (the config is checked first).
#
#   launch/local.sh METHOD PRESET [ACCELERATE_CONFIG] [-- any_field value ...]
#   launch/local.sh sft recipes/smollm2-135m/sft_lora.yaml cpu -- --learning_rate 1e-4
#
# ACCELERATE_CONFIG names a file in accelerate_configs/ (default: cpu). PRINT=1 prints the command only.
set -euo pipefail
cd "$(dirname "$0")/.."
method=${1:?method: sft, dpo or grpo}
preset=${2:?preset YAML}
accel=${3:-cpu}
shift $(( $# < 3 ? $# : 3 ))
[ "${1:-}" = "--" ] && shift
exec ${POSTTRAIN_DIST:-posttrain-dist} launch "$method" "$preset" --accelerate "$accel" --single-node \
    $([ "${PRINT:-0}" = 1 ] && echo --print) -- "$@"
