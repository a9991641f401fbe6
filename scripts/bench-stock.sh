#!/usr/bin/env bash
# Benchmark: a server full of stock OpenVPN 2.6 clients. The same server
# config under ferrovpn and under Debian's OpenVPN, N stock clients each in
# its own network namespace (N = 1, 4, 16 by default), one iperf3 TCP stream
# per client, all at once, up then down. Needs root, openvpn, iperf3,
# iproute2 (ip, ss), iputils-ping; perf for --perf; ethtool for --veth-napi.
#
#   scripts/bench-stock.sh [--clients 1,4,16] [--only openvpn,ferrovpn] [--seconds N] [--matched-rate] [--veth-napi] [--perf DIR] [--keep]
#
# --veth-napi: every veth's receive runs in a threaded NAPI kernel thread,
# as a NIC's would, not inside the sender's system call (the server-only
# reading: a server is then not charged its clients' UDP receive).
#
# Prints a Markdown table: server | clients | direction | Gbit/s |
# server CPU s/GB | idle RTT ms | loaded RTT ms (each the pings' median,
# then their average), then ferrovpn's figures over OpenVPN's. The
# measuring itself is crates/testkit/examples/bench_stock.rs
# (the shared testkit Lab the interop tests use). See README, "Benchmark".
set -euo pipefail

# shellcheck source=lib/bench-example.sh
source "$(dirname "$0")/lib/bench-example.sh"
run_bench_example bench_stock "$@"
