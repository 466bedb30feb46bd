#!/usr/bin/env bash
# Runs the fuzz targets: every one (or those named) for FUZZ_SECONDS each (default 30), each
# starting from its seeds (fuzz/seeds/<target>: inputs from the tests and every crash found so
# far, replayed first) and its working corpus (fuzz/corpus/<target>, kept between runs, not in
# git). Prints executions and coverage per target; stops at the first failure, leaving the
# input in fuzz/artifacts/<target>/. Needs the nightly toolchain and cargo-fuzz.
#
#   fuzz/run.sh                          # all targets, 30 s each (what CI runs)
#   FUZZ_SECONDS=3600 fuzz/run.sh handler   # one target for an hour
#   FUZZ_JOBS=2 FUZZ_SECONDS=0 fuzz/run.sh tokens   # until stopped, on two cores
set -euo pipefail
cd "$(dirname "$0")"
seconds=${FUZZ_SECONDS:-30}
jobs=${FUZZ_JOBS:-1}
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo +nightly fuzz list); fi
# Temporary stores and state folders of the targets go to memory: the handler fsyncs.
export TMPDIR=${FUZZ_TMPDIR:-/dev/shm}

cargo +nightly fuzz build
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "seeds/$target"
    log=$(mktemp)
    args=(-len_control=0 -max_len=4096 -timeout=20 -print_final_stats=1)
    [ "$seconds" -gt 0 ] && args+=("-max_total_time=$seconds")
    [ "$jobs" -gt 1 ] && args+=("-fork=$jobs")
    if ! cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- "${args[@]}" >"$log" 2>&1; then
        tail -n 80 "$log"
        echo "fuzz: $target FAILED; the input is in fuzz/artifacts/$target/ (replay: cargo +nightly fuzz run $target <file>)"
        exit 1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' <<<"$last" | grep -o '[0-9]*' || true)
    features=$(grep -o 'ft: [0-9]*' <<<"$last" | grep -o '[0-9]*' || true)
    corpus=$(grep -o 'corp: [0-9]*' <<<"$last" | grep -o '[0-9]*' || true)
    printf 'fuzz: %-12s %10s runs in %ss, coverage %s edges, %s features, corpus %s\n' \
        "$target" "${runs:-?}" "$seconds" "${cov:-?}" "${features:-?}" "${corpus:-?}"
    rm -f "$log"
done
