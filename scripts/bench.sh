#!/usr/bin/env bash
# Benchmark: bare veth vs stock OpenVPN <-> OpenVPN vs ferrovpn <-> ferrovpn
# (each VPN over UDP and over TCP), between two network namespaces joined by
# a veth pair. Needs root, openvpn,
# iperf3, iproute2 (ip, ss), iputils-ping.
#
#   scripts/bench.sh [--only veth|openvpn|ferrovpn|openvpn-tcp|ferrovpn-tcp] [--workers N] [--seconds N] [--keep]
#
# Prints a Markdown table: system | TCP x1 Gbit/s | TCP x4 Gbit/s | idle RTT ms | CPU s/GB.
# A VPN that does not pass a ping through its tunnel within 20 s gets an
# "n/a (reason)" row. The measuring itself is crates/testkit/examples/bench.rs
# (it uses the same harness and config writers as the integration tests).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"

if [[ $(id -u) -ne 0 ]]; then
    echo "bench.sh: must run as root (network namespaces, TUN devices)" >&2
    exit 1
fi

echo "== building (release) ==" >&2
FERROVPN_BIN="$TARGET/release/ferrovpn"
if ! cargo build --release -p ferrovpn --bin ferrovpn >&2; then
    echo "bench.sh: ferrovpn binary does not build; its row will be n/a" >&2
    FERROVPN_BIN="$TARGET/release/ferrovpn.not-built"
fi
cargo build --release -p ferrovpn-testkit --example bench >&2

BENCH_PID=""
cleanup() {
    local rc=$?
    if [[ -n "$BENCH_PID" ]]; then
        # The bench removes its namespaces itself; this is for Ctrl-C / kill,
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
trap cleanup EXIT INT TERM

echo "== running ==" >&2
"$TARGET/release/examples/bench" --ferrovpn "$FERROVPN_BIN" "$@" &
BENCH_PID=$!
wait "$BENCH_PID"
BENCH_RC=$?
BENCH_PID=""
exit "$BENCH_RC"
