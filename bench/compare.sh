#!/usr/bin/env bash
# Side-by-side throughput of `resnet bench` and PyTorch on this machine, in one sitting, runs
# alternating (absolute times drift between runs; ratios measured together do not).
#
#   PYTHON=../torchenv/bin/python [BIN=resnet] bench/compare.sh [ROUNDS] [CONFIG...]
#
# Prints, per configuration: our median images/s, PyTorch's (fp32 NCHW, fp32 channels-last, and
# bf16 autocast) and for inference ONNX Runtime's (fp32, and int8 QDQ), the ratio to the
# strongest of them in our precision (the best PyTorch fp32 or ONNX Runtime fp32; PyTorch bf16
# for a `-bf16` configuration; ONNX Runtime int8 for an `-int8` one, which runs no PyTorch),
# our achieved GFLOP/s and the peak memory of the processes (ours, PyTorch channels-last fp32 and
# bf16), and the range of the ratio taken
# round by round (ours against the PyTorch runs of the same round: how much of the median
# ratio is this machine's drift). Also writes bench/last-compare.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
ROUNDS="${1:-3}"
shift || true
CONFIGS=("$@")
[ ${#CONFIGS[@]} -gt 0 ] || CONFIGS=(train-resnet20 train-resnet56 train-resnet110 train-resnet20-bf16 infer-resnet20 infer-resnet50-b16 infer-resnet50-b1)
THREADS="${THREADS:-2}"
# BIN=path runs that binary instead of building this checkout's.
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p resnet-cli
  BIN=target/release/resnet
fi
ours_args() {
  case "$(base "$1")" in
    train-resnet20) echo "--model resnet20 --batch 128 --mode train" ;;
    train-resnet56) echo "--model resnet56 --batch 128 --mode train --steps 10" ;;
    train-resnet110) echo "--model resnet110 --batch 128 --mode train --steps 5" ;;
    # The ImageNet networks' training (issue 30): a few steps, each takes seconds.
    train-resnet18) echo "--model resnet18 --batch 32 --mode train --steps 8 --warmup 1" ;;
    train-resnet50) echo "--model resnet50-v1.5 --batch 32 --mode train --steps 4 --warmup 1" ;;
    train-resnet101) echo "--model resnet101-v1.5 --batch 32 --mode train --steps 3 --warmup 1" ;;
    infer-resnet20) echo "--model resnet20 --batch 256 --mode infer" ;;
    infer-resnet50-b16) echo "--model resnet50-v1.5 --batch 16 --mode infer --steps 5" ;;
    infer-resnet50-b1) echo "--model resnet50-v1.5 --batch 1 --mode infer --steps 20" ;;
    *) echo "unknown configuration $1" >&2; exit 2 ;;
  esac
  # A configuration ending in -bf16 runs our bf16 mode against PyTorch's bf16 autocast, one
  # ending in -int8 our int8 network (`resnet quantize`) against ONNX Runtime's int8.
  case "$1" in *-bf16) echo "--precision bf16" ;; *-int8) echo "--precision int8" ;; esac
}
base() { local c="${1%-bf16}"; echo "${c%-int8}"; }
torch_steps() {
  case "$(base "$1")" in
    train-resnet110) echo 4 ;; infer-resnet50-b16) echo 4 ;; infer-resnet50-b1) echo 20 ;;
    train-resnet18) echo 6 ;; train-resnet50) echo 3 ;; train-resnet101) echo 2 ;; *) echo 10 ;;
  esac
}
torch_warmup() {
  case "$(base "$1")" in train-resnet18 | train-resnet50 | train-resnet101) echo 1 ;; *) echo 3 ;; esac
}
field() { "$PYTHON" -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
# The median of the numbers on standard input, ignoring nan (not measured); nan if none.
median() {
  awk '$1 != "nan"' | sort -g | awk '{a[NR]=$1} END {print (NR == 0 ? "nan" : NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'
}
mib() { awk -v b="$1" 'BEGIN {printf "%.0f", b / 1048576}'; }
# A number for JSON: nan (not measured) as null.
jnum() { case "$1" in nan | "") echo null ;; *) echo "$1" ;; esac; }
json="["
# ONNX Runtime's images/s for an inference configuration in MODE (fp32 or int8), else nan.
ort() {
  case "$1" in infer-*) ;; *) echo nan; return ;; esac
  local t
  if t=$("$PYTHON" bench/onnxruntime_reference.py "$(base "$1")" "$2" --steps "$(torch_steps "$1")" --threads "$THREADS"); then
    field images_per_sec <<<"$t"
  else
    echo "warning: ONNX Runtime did not run $1 $2 (needs onnxruntime, onnx, torch in $PYTHON)" >&2
    echo nan
  fi
}
# The largest of the numbers given, ignoring nan.
best_of() { printf "%s\n" "$@" | awk '$1 != "nan"' | sort -g | tail -1; }
printf "%-24s %9s %10s %10s %10s %9s %9s %7s %12s %8s %9s %8s %8s\n" \
  config ours torch-fp32 torch-cl torch-bf16 ort-fp32 ort-int8 ratio round-ratios GOP/s ours-MiB cl-MiB bf16-MiB
for cfg in "${CONFIGS[@]}"; do
  ours=(); fp=(); cl=(); bf=(); of=(); oi=(); gf=(); mem=(); clmem=(); bfmem=(); rounds=()
  for _ in $(seq "$ROUNDS"); do
    # A configuration this CPU cannot run (bf16 without AVX512_BF16) is skipped, not fatal.
    if ! out=$($BIN --threads "$THREADS" bench $(ours_args "$cfg") --json); then
      printf "%-24s skipped: resnet bench refused it (its message is above)\n" "$cfg"
      continue 2
    fi
    ours+=("$(field images_per_sec <<<"$out")"); gf+=("$(field gflops <<<"$out")")
    mem+=("$(field peak_rss_bytes <<<"$out")")
    of+=("$(ort "$cfg" fp32)"); oi+=("$(ort "$cfg" int8)")
    for mode in fp32 fp32-cl bf16; do
      # int8 has no PyTorch counterpart here: its yardstick is ONNX Runtime's.
      case "$cfg" in *-int8) fp+=(nan); cl+=(nan); bf+=(nan); clmem+=(0); bfmem+=(0); break ;; esac
      t=$("$PYTHON" bench/pytorch_reference.py "$(base "$cfg")" "$mode" --steps "$(torch_steps "$cfg")" \
        --warmup "$(torch_warmup "$cfg")" --threads "$THREADS")
      v=$(field images_per_sec <<<"$t")
      case $mode in
        fp32) fp+=("$v") ;;
        fp32-cl) cl+=("$v"); clmem+=("$(field peak_rss_bytes <<<"$t")") ;;
        bf16) bf+=("$v"); bfmem+=("$(field peak_rss_bytes <<<"$t")") ;;
      esac
    done
    # This round's ratio, against the same yardstick as the medians' (below).
    i=$((${#ours[@]} - 1))
    case "$cfg" in
      *-bf16) yard=${bf[$i]} ;; *-int8) yard=${oi[$i]} ;; *) yard=$(best_of "${fp[$i]}" "${cl[$i]}" "${of[$i]}") ;;
    esac
    rounds+=("$(awk -v o="${ours[$i]}" -v b="$yard" 'BEGIN {printf "%.2f", o / b}')")
  done
  lo=$(printf "%s\n" "${rounds[@]}" | sort -g | head -1); hi=$(printf "%s\n" "${rounds[@]}" | sort -g | tail -1)
  o=$(printf "%s\n" "${ours[@]}" | median); f=$(printf "%s\n" "${fp[@]}" | median)
  c=$(printf "%s\n" "${cl[@]}" | median); b=$(printf "%s\n" "${bf[@]}" | median)
  ofm=$(printf "%s\n" "${of[@]}" | median); oim=$(printf "%s\n" "${oi[@]}" | median)
  g=$(printf "%s\n" "${gf[@]}" | median)
  m=$(printf "%s\n" "${mem[@]}" | sort -g | tail -1); cm=$(printf "%s\n" "${clmem[@]}" | sort -g | tail -1)
  bm=$(printf "%s\n" "${bfmem[@]}" | sort -g | tail -1)
  # The yardstick: the fastest fp32 (PyTorch's layouts, ONNX Runtime's), PyTorch bf16 autocast for
  # a bf16 configuration, ONNX Runtime int8 for an int8 one.
  case "$cfg" in *-bf16) best=$b ;; *-int8) best=$oim ;; *) best=$(best_of "$f" "$c" "$ofm") ;; esac
  ratio=$(awk -v o="$o" -v b="$best" 'BEGIN {printf "%.2f", o / b}')
  printf "%-24s %9.1f %10.1f %10.1f %10.1f %9.1f %9.1f %6sx %12s %8.1f %9s %8s %8s\n" "$cfg" "$o" "$f" "$c" "$b" "$ofm" "$oim" "$ratio" "$lo-${hi}x" "$g" "$(mib "$m")" "$(mib "$cm")" "$(mib "$bm")"
  json+="{\"config\":\"$cfg\",\"ours\":$o,\"torch_fp32\":$(jnum "$f"),\"torch_fp32_cl\":$(jnum "$c"),\"torch_bf16\":$(jnum "$b"),\"onnxruntime_fp32\":$(jnum "$ofm"),\"onnxruntime_int8\":$(jnum "$oim"),\"ratio\":$ratio,\"round_ratios\":[$(IFS=,; echo "${rounds[*]}")],\"gflops\":$g,\"peak_rss_bytes\":$m,\"torch_fp32_cl_peak_rss_bytes\":$cm,\"torch_bf16_peak_rss_bytes\":$bm},"
done
json="${json%,}]"
echo "$json" > bench/last-compare.json
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $THREADS threads, $(date -u +%Y-%m-%d)"
