#!/usr/bin/env bash
# Our DiT training step against PyTorch's on one core, in alternating pairs:
# `pnpm bench dit --backends wasm` and scripts/bench/torch-dit-step.py (every
# thread pool pinned to one), taking turns which goes first, so a machine whose
# speed drifts (a shared VM) slows both alike. Prints each pair's median ms per
# step and forward, their ratios, and the median ratio.
#
# Usage (from the repository root, after `pnpm install`):
#   scripts/bench/dit-vs-torch.sh --refs DIR [--hidden 128] [--pairs 10] [--native-gemm on|off]
# DIR is a checkout of facebookresearch/DiT (see torch-dit-step.py). With
# --native-gemm off ours multiplies in wasm even where native/gemm.node is built.
set -euo pipefail
cd "$(dirname "$0")/../.."

refs="" hidden=128 pairs=10 native=on
while [ $# -gt 0 ]; do
  case "$1" in
    --refs) refs=${2:?--refs needs a folder}; shift 2 ;;
    --hidden) hidden=${2:?--hidden needs a width}; shift 2 ;;
    --pairs) pairs=${2:?--pairs needs a count}; shift 2 ;;
    --native-gemm) native=${2:?--native-gemm needs on or off}; shift 2 ;;
    *) echo "dit-vs-torch: unknown argument $1 (expected --refs DIR, --hidden N, --pairs N, --native-gemm on|off)" >&2; exit 2 ;;
  esac
done
[ -n "$refs" ] || { echo "dit-vs-torch: --refs DIR (a checkout of facebookresearch/DiT) is required" >&2; exit 2; }
for n in "$hidden" "$pairs"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "dit-vs-torch: $n is not a positive integer" >&2; exit 2; }
done

[[ "$native" =~ ^(on|off)$ ]] || { echo "dit-vs-torch: --native-gemm takes on or off, not $native" >&2; exit 2; }

# "train forward" in ms for one run of each.
ours() {
  pnpm --silent bench dit --backends wasm --native-gemm "$native" --depth 28 --hidden "$hidden" --batch 32 --repetitions 5 --budget-s 6 |
    awk '$1 == "wasm" && $2 == "mini" { print $6, $4; found = 1 } END { exit !found }'
}
torch() {
  /usr/bin/python3 scripts/bench/torch-dit-step.py --refs "$refs" --hidden "$hidden" --steps 5 |
    awk '$1 == "train" { t = $2 } $1 == "forward" { f = $2 } END { if (t == "" || f == "") exit 1; print t, f }'
}

printf "%-5s %12s %12s %8s %14s %14s %8s\n" pair "ours ms/step" "torch ms" ratio "ours forward" "torch forward" ratio
results=()
for i in $(seq "$pairs"); do
  if [ $((i % 2)) -eq 1 ]; then o=$(ours); t=$(torch); else t=$(torch); o=$(ours); fi
  read -r ot of <<<"$o"
  read -r tt tf <<<"$t"
  r=$(awk -v a="$ot" -v b="$tt" 'BEGIN { printf "%.3f", a / b }')
  rf=$(awk -v a="$of" -v b="$tf" 'BEGIN { printf "%.3f", a / b }')
  printf "%-5s %12s %12s %8s %14s %14s %8s\n" "$i" "$ot" "$tt" "$r" "$of" "$tf" "$rf"
  results+=("$r $rf")
done
printf "%s\n" "${results[@]}" | awk -v h="$hidden" -v g="$native" '
  { s[NR] = $1; f[NR] = $2 }
  function median(a, n,   i, j, x) {
    for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j > 0 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  END { printf "hidden %d, native GEMM %s, %d pairs: ours / PyTorch, median %.3f (step), %.3f (forward)\n", h, g, NR, median(s, NR), median(f, NR) }'
