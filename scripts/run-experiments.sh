#!/usr/bin/env bash
# The model comparison of docs/experiments.md: every model on the same data and split, each
# with the same wall-clock training budget on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${BUDGET_MIN:-10}
py=.venv/bin/python
mkdir -p artifacts/experiments artifacts/logs
run() {
  local name=$1; shift
  $py -m ml.train --name "exp-$name" --version "${budget}min" --output "artifacts/experiments/$name-${budget}min" \
    --time-budget-min "$budget" "$@" > "artifacts/logs/$name-${budget}min.log" 2>&1
}
run compact --backbone compact
run compact-clahe --backbone compact --clahe
run resnet50 --backbone resnet50
run densenet121 --backbone densenet121
