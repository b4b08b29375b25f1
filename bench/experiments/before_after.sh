#!/usr/bin/env bash
# Alternate two trees of the engine (OLD: e.g. `git worktree add ../before be5be4a`, with engine/kernels and
# engine/models symlinked to ../kernels and ../models; NEW: this checkout), each running bench/int8_speed.py --rounds 2.
set -u
mkdir -p "${OUT:-/tmp/ba}"
cd /tmp
for i in 1 2; do
  echo "== old $i $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)"
  PYTHONPATH=${OLD:?set OLD to a worktree of the old commit} ${NEW:-$(pwd)}/.venv/bin/python ${OLD:?set OLD to a worktree of the old commit}/bench/int8_speed.py --rounds 2 --out ${OUT:-/tmp/ba}/old$i.json > ${OUT:-/tmp/ba}/old$i.log 2>&1
  echo "== new $i $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)"
  (cd ${NEW:-$(pwd)} && .venv/bin/python bench/int8_speed.py --rounds 2 --out ${OUT:-/tmp/ba}/new$i.json > ${OUT:-/tmp/ba}/new$i.log 2>&1)
done
echo "== done $(date +%T)"
