#!/usr/bin/env bash
# Issue 12's CPU rows, one script after another, on a quiet machine (check `uptime` first; nothing
# else running). Every script appends its ready-to-paste Markdown rows
# (| figure | measured | target | met? | command | load average |) to one file:
#
#     bash bench/run_all_cpu.sh            # the table's settings, about 15 min on a quiet 2-core machine
#     bash bench/run_all_cpu.sh --quick    # every script at its quickest settings (about 3 min): checks they run
#
# Output: bench/results/cpu_rows.md (rows; an earlier file is kept as cpu_rows.md.prev) and
# bench/results/logs/<script>.log (full output). Set PYTHON to choose the interpreter.
#
# Expected durations on a quiet 2-core machine (estimated from --quick runs on a loaded box, scaled by
# model size and repeats; none of them recorded as a result):
#   bench_hessian.py          ~5 min   HVP/grad per mode and matmat k=1/4/16 (median of 5), top eigenvalue at the
#                                      same true error vs PyHessian, Hutch++ vs Hutchinson, peak memory
#   bench_fisher.py           ~3 min   vmap vs loop vs floor (140k-param BERT), memory, torchrun 1 vs 2 ranks on a
#                                      ≥ 20 s workload (about 25 s + 13 s, more if it has to resize once)
#   bench_scan.py             ~4 min   21x21: per point / bare forward, vs loss-landscapes, batch_points auto pick,
#                                      torchrun 1 vs 2 ranks on a ≥ 20 s workload
#   bench_scale.py --quick    ~1 min   small config only; the BERT-base run (python bench/bench_scale.py,
#                                      10-15 min) is separate and not run here
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
QUICK=()
if [[ "${1:-}" == "--quick" ]]; then QUICK=(--quick); fi
OUT=bench/results/cpu_rows.md
LOGS=bench/results/logs
mkdir -p "$LOGS"
[[ -f "$OUT" ]] && mv "$OUT" "$OUT.prev"
echo "uptime before: $(uptime)"
echo "rows -> $OUT, logs -> $LOGS/"
start=$(date +%s)
failed=0

run() {  # run NAME ARGS...: one benchmark, its log, its wall time
    local name=$1; shift
    local t0=$(date +%s)
    echo "== $name $* (load $(cut -d' ' -f1-3 /proc/loadavg))"
    if "$PYTHON" "bench/$name" "$@" --rows "$OUT" >"$LOGS/${name%.py}.log" 2>&1; then
        echo "   done in $(( $(date +%s) - t0 )) s"
    else
        echo "   FAILED after $(( $(date +%s) - t0 )) s; see $LOGS/${name%.py}.log"; tail -5 "$LOGS/${name%.py}.log"
        failed=1
    fi
}

run bench_hessian.py "${QUICK[@]}"
run bench_fisher.py --config small "${QUICK[@]}"
run bench_scan.py "${QUICK[@]}"
run bench_scale.py --quick

total=$(( $(date +%s) - start ))
echo "uptime after: $(uptime)"
echo "total: $((total / 60)) min $((total % 60)) s; rows in $OUT:"
cat "$OUT"
exit $failed
