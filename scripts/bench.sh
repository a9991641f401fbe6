#!/usr/bin/env bash
# Benchmark: bare veth vs stock OpenVPN <-> OpenVPN vs ferrovpn <-> ferrovpn
# (each VPN over UDP and over TCP; ferrovpn also with IPv6 inside and outside),
# between two network namespaces joined by
# a veth pair. Needs root, openvpn,
# iperf3, iproute2 (ip, ss), iputils-ping.
#
#   scripts/bench.sh [--only veth|openvpn|ferrovpn|openvpn-tcp|ferrovpn-tcp|ferrovpn-ipv6] [--workers N] [--seal-spread] [--seconds N] [--keep]
#
# Prints a Markdown table: system | TCP x1 Gbit/s | TCP x4 Gbit/s | idle RTT ms | CPU s/GB.
# A VPN that does not pass a ping through its tunnel within 20 s gets an
# "n/a (reason)" row. The measuring itself is crates/testkit/examples/bench.rs
# (it uses the same harness and config writers as the integration tests).
set -euo pipefail

# shellcheck source=lib/bench-example.sh
source "$(dirname "$0")/lib/bench-example.sh"
run_bench_example bench "$@"
