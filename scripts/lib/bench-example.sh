# Sourced by the benchmark scripts (scripts/bench*.sh): build ferrovpn and a
# testkit example in release mode and run the example, cleaning up after a
# Ctrl-C or kill too.
#
#   run_bench_example EXAMPLE [ARGS...]
#
# The example gets `--ferrovpn PATH` before ARGS. When the ferrovpn binary does
# not build, PATH names a file that does not exist, so the example can report
# that instead of measuring an old binary.

run_bench_example() {
    local example=$1
    shift
    cd "$(dirname "${BASH_SOURCE[0]}")/../.."
    local root
    root=$(pwd)
    local target="${CARGO_TARGET_DIR:-$root/target}"

    if [[ $(id -u) -ne 0 ]]; then
        echo "$example: must run as root (network namespaces, TUN devices)" >&2
        exit 1
    fi

    echo "== building (release) ==" >&2
    local ferrovpn_bin="$target/release/ferrovpn"
    if ! cargo build --release -p ferrovpn --bin ferrovpn >&2; then
        echo "$example: ferrovpn binary does not build; its rows will be n/a" >&2
        ferrovpn_bin="$target/release/ferrovpn.not-built"
    fi
    cargo build --release -p ferrovpn-testkit --example "$example" >&2

    BENCH_PID=""
    trap bench_example_cleanup EXIT INT TERM

    echo "== running ==" >&2
    "$target/release/examples/$example" --ferrovpn "$ferrovpn_bin" "$@" &
    BENCH_PID=$!
    local rc=0
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=""
    exit "$rc"
}

bench_example_cleanup() {
    local rc=$?
    if [[ -n "$BENCH_PID" ]]; then
        # The example removes its namespaces itself; this is for Ctrl-C / kill,
        # which skip its destructors. Only namespaces named after its pid.
        kill -TERM "$BENCH_PID" 2>/dev/null || true
        wait "$BENCH_PID" 2>/dev/null || true
        for ns in $(ip netns list | awk '{print $1}' | grep "^fvpn-${BENCH_PID}-" || true); do
            for pid in $(ip netns pids "$ns"); do kill -KILL "$pid" 2>/dev/null || true; done
            ip netns del "$ns" 2>/dev/null || true
        done
        # Its scratch directory (PKI, configs, logs), also skipped by a kill.
        rm -rf "${TMPDIR:-/tmp}/fvpn-${BENCH_PID}-"*
    fi
    exit "$rc"
}
