#!/usr/bin/env bash
# Reproduce every figure of this folder: the two tasks run in parallel (about 35 minutes on
# 2 shared CPU cores), then the table and the plot are rendered from results.json.
# Needs DELTARNN_DATA holding fsdd/ and asterisk/ (fetch the prompts once with
# deltarnn data fetch asterisk).
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=experiments/wsj-like
RUNS=${RUNS:-runs/wsj-like}
mkdir -p "$RUNS"
for task in strings asterisk; do
    python $HERE/speech.py --config $HERE/$task.json --out "$RUNS/$task" \
        --results $HERE/speech-v1/results.json > "$RUNS/$task.log" 2>&1 &
done
wait
python $HERE/speech.py --results $HERE/speech-v1/results.json \
    --render $HERE/speech-v1/table.md $HERE/speech-v1/plot.png
