#!/usr/bin/env bash
# Reproduce every figure of this folder (about 30 minutes on 2 CPU cores, the two tasks in parallel).
# Needs DELTARNN_DATA with fsdd/ (the Asterisk prompts are fetched there on first use if missing:
# python -c "from deltarnn.data import prepare_asterisk; prepare_asterisk(download=True)").
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=experiments/wsj-like
RUNS=${RUNS:-runs/wsj-like}
mkdir -p $RUNS
python -m deltarnn.train.large_speech --config $HERE/strings.json --out $RUNS/strings \
    --results $HERE/results.json > $RUNS-strings.log 2>&1 &
python -m deltarnn.train.large_speech --config $HERE/asterisk.json --out $RUNS/asterisk \
    --results $HERE/results.json > $RUNS-asterisk.log 2>&1 &
wait
python -m deltarnn.train.report $HERE/results.json --table $HERE/table.md --plot $HERE/plot.png
