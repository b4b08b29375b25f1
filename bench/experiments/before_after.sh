#!/usr/bin/env bash
# Alternate two trees of the engine (OLD: e.g. `git worktree add ../before be5be4a`, with engine/kernels and
# engine/models symlinked to ../kernels and ../models; NEW: this checkout), each running bench/int8_speed.py --rounds 2.
set -u
OLD=$(cd "${OLD:?set OLD to a worktree of the old commit}" && pwd)
NEW=$(cd "${NEW:-.}" && pwd)
OUT=${OUT:-/tmp/ba}
mkdir -p "$OUT"
cd /tmp
for i in 1 2; do
  echo "== old $i $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)"
  PYTHONPATH=$OLD $NEW/.venv/bin/python $OLD/bench/int8_speed.py --rounds 2 --out $OUT/old$i.json > $OUT/old$i.log 2>&1
  echo "== new $i $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)"
  (cd $NEW && .venv/bin/python bench/int8_speed.py --rounds 2 --out $OUT/new$i.json > $OUT/new$i.log 2>&1)
done
echo "== done $(date +%T)"
