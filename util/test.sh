#!/usr/bin/env bash
# make test: every tier, then one closing line "N passed, M failed".
#
#   util/test.sh            lint, unit, node, prove, bench, browser, sillytavern
#   util/test.sh TIER...    only those tiers
#
# BUILD: make's build folder (build/), relative to the top or absolute; the
# tiers are told where it is (BUILD, made absolute).
#
# Each tier's own runner prints its report (Check, node --test, prove).

set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 2

# make's build folder (BUILD, as make passes it: relative to the top)
build=${BUILD:-build}
case "$build" in
    /*) ;;
    *) build=$(realpath -m "$top/$build") ;;
esac
export BUILD=$build

tiers=("$@")
[ ${#tiers[@]} -eq 0 ] && tiers=(lint unit node prove bench browser sillytavern)

passed=0
failed=0
status=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

node_deps() {
    if [ ! -d t/node_modules ] || [ t/package-lock.json -nt t/node_modules ]
    then
        echo "== npm ci (t/)"
        (cd t && npm ci --prefer-offline --no-audit --no-fund --loglevel=error) \
            || return 1
        touch t/node_modules
    fi
}

# make lint: the style rules and shellcheck, counted as one test
tier_lint() {
    echo "== lint"
    if util/lint.sh; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        status=1
    fi
}

tier_unit() {
    local t tests
    shopt -s nullglob
    tests=("$build"/tests/*_test)
    shopt -u nullglob
    if [ ${#tests[@]} -eq 0 ]; then
        echo "not ok - no unit tests in $build/tests: run make unit"
        failed=$((failed + 1))
        status=1
        return
    fi
    for t in "${tests[@]}"; do
        echo "== $t"
        "$t" 2>&1 | tee "$log"
        local rc=${PIPESTATUS[0]}
        local line
        line=$(grep -E 'Checks: [0-9]+' "$log" | tail -1)
        local n f e
        n=$(sed -E 's/.*Checks: ([0-9]+).*/\1/' <<< "$line")
        f=$(sed -E 's/.*Failures: ([0-9]+).*/\1/' <<< "$line")
        e=$(sed -E 's/.*Errors: ([0-9]+).*/\1/' <<< "$line")
        passed=$((passed + ${n:-0} - ${f:-0} - ${e:-0}))
        failed=$((failed + ${f:-0} + ${e:-0}))
        if [ "$rc" != 0 ] || [ -z "$line" ]; then
            status=1
            [ -z "$line" ] && failed=$((failed + 1))
        fi
    done
}

# the counts of a `node --test --test-reporter=tap` run in $log, whose
# exit code was $1; a run that failed without a failing test counts as one
count_tap() {
    local rc=$1 p f
    p=$(grep -E '^# pass ' "$log" | tail -1 | awk '{print $3}')
    f=$(grep -E '^# fail ' "$log" | tail -1 | awk '{print $3}')
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0}))
    if [ "$rc" != 0 ] || [ -z "$p" ]; then
        status=1
        [ "${f:-0}" = 0 ] && failed=$((failed + 1))
        grep -E '^ *not ok' -A30 "$log" | head -80
    fi
}

tier_node() {
    node_deps || { failed=$((failed + 1)); status=1; return; }
    echo "== node --test"
    local files
    shopt -s nullglob
    files=(browser/common/*.test.mjs t/node/*.test.mjs)
    shopt -u nullglob
    CB_WS_MODULE="$top/t/node_modules/ws" NODE_PATH="$top/t/node_modules" \
        timeout -k 10 600 node --test --test-reporter=tap "${files[@]}" \
        2>&1 | tee "$log" | grep -E '^(not ok|# (tests|pass|fail))|^ok ' \
        | grep -v '^    '
    count_tap "${PIPESTATUS[0]}"
}

tier_prove() {
    node_deps || { failed=$((failed + 1)); status=1; return; }
    echo "== prove t/"
    prove -I t/lib t/*.t 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    local tests fails
    tests=$(grep -E '^Files=' "$log" | sed -E 's/.*Tests=([0-9]+).*/\1/')
    fails=$(grep -E '^\s+Failed tests?:' "$log" | grep -oE '[0-9]+' \
            | wc -l)
    passed=$((passed + ${tests:-0} - fails))
    failed=$((failed + fails))
    if [ "$rc" != 0 ] || [ -z "$tests" ]; then
        status=1
        [ "$fails" = 0 ] && failed=$((failed + 1))
    fi
}

# the benchmark, so that it does not rot: its tools against misbehaving
# servers (bench/selftest.t), then every scenario once for a few seconds
# (BENCH_QUICK). Its figures are not judged here: the bench is not a test.
tier_bench() {
    echo "== bench (selftest, smoke)"
    prove bench/selftest.t 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]} tests
    tests=$(grep -E '^Files=' "$log" | sed -E 's/.*Tests=([0-9]+).*/\1/')
    if [ "$rc" = 0 ] && [ -n "$tests" ]; then
        passed=$((passed + tests))
    else
        failed=$((failed + 1))
        status=1
    fi
    if BENCH_QUICK=1 timeout -k 10 300 bench/run.sh >"$log" 2>&1; then
        echo "ok - bench smoke: $(tail -1 "$log")"
        passed=$((passed + 1))
    else
        tail -30 "$log"
        echo "not ok - make bench-smoke"
        failed=$((failed + 1))
        status=1
    fi
}

tier_browser() {
    if ! ls t/browser/*.test.mjs >/dev/null 2>&1; then
        return
    fi
    node_deps || { failed=$((failed + 1)); status=1; return; }
    echo "== browser tier (Chromium)"
    NODE_PATH="$top/t/node_modules" timeout -k 10 900 node --test \
        --test-reporter=tap --test-concurrency=1 t/browser/*.test.mjs 2>&1 \
        | tee "$log" | grep -E '^(not ok|ok|# (tests|pass|fail))'
    count_tap "${PIPESTATUS[0]}"
}

# The SillyTavern extension inside the real SillyTavern 1.19.0 (npm), driven
# by Chromium. t/sillytavern/setup.sh installs SillyTavern once into a cache
# outside the repository (${XDG_CACHE_HOME:-~/.cache}/chatbridge); each test
# file runs as its own process (so a timeout's signal reaches the code that
# stops SillyTavern, Chromium, nginx and the mock), all of it bounded.
tier_sillytavern() {
    node_deps || { failed=$((failed + 1)); status=1; return; }
    echo "== sillytavern tier (SillyTavern 1.19.0, Chromium)"
    local st f
    if ! st=$(timeout -k 10 300 t/sillytavern/setup.sh); then
        echo "sillytavern: t/sillytavern/setup.sh failed"
        failed=$((failed + 1))
        status=1
        return
    fi
    for f in t/sillytavern/*.test.mjs; do
        CB_ST_DIR="$st" NODE_PATH="$top/t/node_modules" \
            timeout -k 10 330 node --test-reporter=tap "$f" 2>&1 | tee "$log" \
            | grep -E '^(not ok|ok|# (tests|pass|fail))|^    (not )?ok '
        count_tap "${PIPESTATUS[0]}"
    done
}

for t in "${tiers[@]}"; do
    "tier_$t"
done

echo
echo "$passed passed, $failed failed"
exit $status
