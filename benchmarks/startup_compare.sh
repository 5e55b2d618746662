#!/usr/bin/env bash
# Start-up of `synthcheck predict FILE --json` (interpreter, imports, model load, one image), the code of an
# earlier commit against the working tree, alternated so both see the same machine:
#   bash benchmarks/startup_compare.sh afeaab9 "some 32-px.jpg" [repeats]
# Prints one line per run: "old|new seconds". The old code runs from a temporary git worktree via PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=$1; file=$2; n=${3:-3}
old=$(mktemp -d); trap 'git worktree remove --force "$old"' EXIT
git worktree add -f "$old" "$rev" >/dev/null 2>&1
for _ in $(seq "$n"); do
  for v in old new; do
    src=$([ "$v" = old ] && echo "$old/src" || echo "$PWD/src")
    s=$(date +%s.%N); PYTHONPATH=$src .venv/bin/synthcheck predict "$file" --json >/dev/null 2>&1; e=$(date +%s.%N)
    echo "$v $(echo "$e - $s" | bc)"
  done
done
