#!/usr/bin/env bash
# The one prepared GPU verification of v4c (issue 10), run in one device call:
#
#     bench/gpu_check.sh            # everything under $OUT, or build/gpu_check/ when unset
#     bench/gpu_check.sh --dry-run  # the plumbing only: each stage prints its command
#
# Stages, in order, each under `timeout` and within one overall budget (GPU_CHECK_BUDGET_S,
# default 390 s, so the whole run stays under 7 minutes on one H200):
#   env              bench/gpu_env.py: python, versions, device -> env.json, env.log
#   pytest-gpu       every `gpu`-marked test but the next -> pytest_gpu.log, pytest_gpu.xml
#   invariance       the Flash slice's logits bit for bit alone, in prefill chunks of 3 and
#                    20 and beside another sequence, Triton compiled for the GPU (its own
#                    stage: its kernels' builds take a minute)  -> invariance.log
#   kernels          bench/kernels.py, 2-layer Flash slice  -> kernels.json, kernels.log
#                    (each decode GEMM beside torch.mm in bf16 and torch._scaled_mm)
#   estimate         bench/estimate.py: each kernel measured beside the kernel lens's estimate
#                    (sm_90 builds cached in build/aot-cache) -> estimate.json, estimate.log
#   experts          bench/experts.py: one Flash layer's routed experts (FP4) at 1, 1024 and
#                    2048 tokens beside the lens's estimate and torch bf16 grouped GEMMs
#                                                           -> experts.json, experts.log
#   bench-as-stored  v4c bench, FP8/FP4 weights, --compare hf -> bench_as_stored.json
#   bench-bf16       v4c bench, bf16 weights, --compare hf  -> bench_bf16.json
#   bench-speculative v4c bench tiny: greedy off, MTP K=2, perfect drafter K=1..3
#                                                           -> bench_speculative.json
#   bench-offload    v4c bench, the slice with half its routed experts in pinned host memory
#                    (bench/offload_budget.py's --device-gb), the all-resident slice's decode
#                    step timed in the same run            -> bench_offload.json
#   report           bench/gpu_check_report.py             -> gpu_check.json, gpu_check.md
# A failing or timed-out stage is recorded in stages.tsv and the next one runs; the script
# exits 0 once the report is written and printed (the report says what failed: rc 124 timed
# out, 125 skipped for want of time, 126 not run in a dry run). GPU_CHECK_FAIL=<stage>
# makes that stage fail without running it (the CPU test of this plumbing uses it).
#
# Python: the checkout's .venv when it has one that sees the GPU; otherwise the machine's
# python3 (>= 3.11, with torch, triton, transformers and the project's other dependencies
# installed) reads the sources through a throwaway tree of links that mirrors pyproject's
# package-dir mapping, so nothing is installed (GPU_CHECK_PYTHON=<python> picks another
# interpreter, on the same tree). Weights are built on the device; caches (v4c kernels,
# Triton's) live in a temporary folder, so nothing large lands in $OUT.
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-$ROOT/build/gpu_check}
DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  *) echo "usage: bench/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac
BUDGET=${GPU_CHECK_BUDGET_S:-390}
FAIL=${GPU_CHECK_FAIL:-}
DEADLINE=$(( $(date +%s) + BUDGET ))
WORK=$(mktemp -d "${TMPDIR:-/tmp}/v4c-gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
for f in stages.tsv gpu_check.json gpu_check.md env.json env.log pytest_gpu.log pytest_gpu.xml \
  invariance.log \
  kernels.json kernels.log estimate.json estimate.log experts.json experts.log \
  bench_as_stored.json bench_as_stored.log bench_bf16.json bench_bf16.log bench_speculative.json \
  bench_speculative.log bench_offload.json bench_offload.log offload_budget.log report.log; do
  rm -f "$OUT/$f"  # this script's files from a last run
done
cd "$ROOT" || exit 1

VENV=$ROOT/.venv/bin/python  # used when it runs and (but for a dry run) sees the GPU
if [ -z "${GPU_CHECK_PYTHON:-}" ] && [ -x "$VENV" ] && { [ "$DRY" = 1 ] ||
    "$VENV" -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null; }; then
  PY=$VENV
else
  PY=${GPU_CHECK_PYTHON:-python3}
  "$PY" - "$ROOT" "$WORK/src" <<'EOF' || echo "gpu_check: $PY cannot build the source tree" >&2
import sys, tomllib
from pathlib import Path

root, tree = Path(sys.argv[1]), Path(sys.argv[2])
dirs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
for name, folder in sorted(dirs.items()):  # v4c first, then v4c.ir -> ir/, ...
    link = tree.joinpath(*name.split("."))
    if name == "v4c":  # a real folder, so that the sub-packages can be linked into it
        link.mkdir(parents=True)
        for entry in (root / folder).iterdir():
            (link / entry.name).symlink_to(entry)
    else:
        link.symlink_to(root / folder)
EOF
  export PYTHONPATH="$WORK/src${PYTHONPATH:+:$PYTHONPATH}"
fi
export V4C_CACHE_DIR="$WORK/v4c-cache" TRITON_CACHE_DIR="$WORK/triton-cache"
export PYTHONDONTWRITEBYTECODE=1

# run_stage NAME CAP_S LOG CMD...: run CMD (output to LOG) under `timeout`, for at most CAP_S
# seconds and what is left of the budget; append NAME, rc, seconds and CMD to stages.tsv.
run_stage() {
  local name=$1 cap=$2 log=$3 rc start left
  shift 3
  start=$(date +%s)
  left=$(( DEADLINE - start ))
  if [ "$name" = "$FAIL" ]; then
    echo "GPU_CHECK_FAIL=$name: not run" >"$OUT/$log"; rc=1
  elif [ "$left" -lt 10 ]; then
    echo "no time left in the ${BUDGET}s budget" >"$OUT/$log"; rc=125
  elif [ "$DRY" = 1 ]; then
    echo "dry run: $*" >"$OUT/$log"; rc=126
  else
    timeout -k 10 "$(( cap < left ? cap : left ))" "$@" >"$OUT/$log" 2>&1; rc=$?
    [ "$rc" = 137 ] && rc=124  # killed after the grace period: still a timeout
  fi
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - start ))" "$*" >>"$OUT/stages.tsv"
  echo "gpu_check: $name: rc $rc ($(( $(date +%s) - start )) s)"
}

SLICE=variants/flash-2l-slice
BENCH=(-m v4c bench "$SLICE" --random-weights --batch 1 --prompt-len 2048 --decode 32
       --compare hf)

# env and report run in a dry run too: they check the python chosen and the assembly.
CPU_OK=$([ "$DRY" = 1 ] && echo --cpu-ok)
DRY=0 run_stage env 60 env.log "$PY" bench/gpu_env.py "$OUT/env.json" $CPU_OK
command -v nvidia-smi >/dev/null && nvidia-smi >>"$OUT/env.log" 2>&1
INVARIANCE=tests/runtime/test_gpu.py::test_flash_slice_is_batch_invariant_on_cuda
run_stage pytest-gpu 120 pytest_gpu.log "$PY" -m pytest -m gpu -p no:cacheprovider \
  --deselect "$INVARIANCE" --junitxml="$OUT/pytest_gpu.xml" tests
run_stage invariance 90 invariance.log "$PY" -m pytest -p no:cacheprovider "$INVARIANCE"
run_stage kernels 75 kernels.log "$PY" bench/kernels.py --spec "$SLICE" --weights as-stored \
  --prompt-len 2048 --json "$OUT/kernels.json"
run_stage estimate 90 estimate.log env -u TRITON_INTERPRET "$PY" bench/estimate.py \
  "$OUT/kernels.json" --spec "$SLICE" --target sm_90 --json "$OUT/estimate.json"
run_stage experts 90 experts.log env -u TRITON_INTERPRET "$PY" bench/experts.py \
  --cache "$WORK/experts-cache" --json "$OUT/experts.json"
run_stage bench-as-stored 60 bench_as_stored.log "$PY" "${BENCH[@]}" --weights as-stored \
  --json "$OUT/bench_as_stored.json"
run_stage bench-bf16 60 bench_bf16.log "$PY" "${BENCH[@]}" --weights bf16 \
  --json "$OUT/bench_bf16.json"
run_stage bench-speculative 45 bench_speculative.log "$PY" -m v4c bench tiny --random-weights \
  --prompt-len 256 --decode 64 --draft-tokens 2 --json "$OUT/bench_speculative.json"
OFFLOAD=(--batch 1 --prompt-len 256 --decode 32)
# the budget is worked out in a dry run too (a compile, seconds on a CPU): the command shown
# is the one a GPU runs; a budget that cannot be worked out fails the stage (--device-gb 0)
HALF=$("$PY" bench/offload_budget.py "$SLICE" "${OFFLOAD[@]:2}" 2>"$OUT/offload_budget.log")
run_stage bench-offload 60 bench_offload.log "$PY" -m v4c bench "$SLICE" --random-weights \
  "${OFFLOAD[@]}" --weights as-stored --speculative off --device-gb "${HALF:-0}" \
  --json "$OUT/bench_offload.json"
DEADLINE=$(( $(date +%s) + 60 ))  # the report always runs, whatever the budget left
DRY=0 run_stage report 30 report.log "$PY" bench/gpu_check_report.py "$OUT"
if [ -s "$OUT/gpu_check.md" ]; then
  cat "$OUT/gpu_check.md"  # also on stdout: the tail of a device call's output shows it
  echo "gpu_check: $OUT/gpu_check.md"
else
  cut -f1-3 "$OUT/stages.tsv"
  echo "gpu_check: no report (see $OUT/report.log)" >&2
  exit 1
fi
