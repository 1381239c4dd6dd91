#!/usr/bin/env bash
# Paired A/B of two `resnet` binaries (or one binary under two environments): both run at the
# same time, one thread each, pinned to different cores (swapped every round), so both see the
# same state of a machine whose speed drifts from minute to minute. Prints each round's median
# ms per step and the median over rounds of B's speed relative to A's.
#
#   [AE="VAR=value ..."] [BE="VAR=value ..."] bench/ab.sh A B [ROUNDS] -- BENCH-ARGS...
#
# e.g. bench/ab.sh ./resnet-old target/release/resnet 8 -- --model resnet20 --mode train --steps 8
# Needs two cores and `taskset`. One thread per binary measures a kernel change, not the
# two-thread scaling; `bench/compare.sh` measures the whole configuration against PyTorch.
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,11p' "$0"; exit 2; }
A=$1 B=$2
shift 2
ROUNDS=6
if [ "$1" != "--" ]; then
  ROUNDS=$1
  shift
fi
[ "${1:-}" = "--" ] && shift
read -r -a AENV <<<"${AE:-}"
read -r -a BENV <<<"${BE:-}"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
median_ms() { grep -oE 'median [0-9.]+' "$1" | head -1 | cut -d' ' -f2; }
ratios=()
for i in $(seq "$ROUNDS"); do
  if ((i % 2)); then ca=0 cb=1; else ca=1 cb=0; fi
  taskset -c $ca env "${AENV[@]}" "$A" --threads 1 bench "$@" >"$OUT/a" 2>&1 &
  taskset -c $cb env "${BENV[@]}" "$B" --threads 1 bench "$@" >"$OUT/b" 2>&1 &
  wait
  a=$(median_ms "$OUT/a") b=$(median_ms "$OUT/b")
  [ -n "$a" ] && [ -n "$b" ] || { echo "a run failed:"; cat "$OUT/a" "$OUT/b"; exit 1; }
  r=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.4f", a / b }')
  echo "round $i: A $a ms, B $b ms per step; B speed / A speed $r"
  ratios+=("$r")
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{ r[NR] = $1 } END {
  m = (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
  printf "median B speed / A speed over %d rounds: %.4f (min %.4f, max %.4f)\n", NR, m, r[1], r[NR] }'
