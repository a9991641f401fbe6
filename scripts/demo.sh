#!/usr/bin/env bash
# Set everything up on a fresh Debian/Ubuntu machine and run the main job:
# install the tools (iproute2, iperf3, ping, and openvpn for the test suite),
# build ferrovpn in release mode, then `ferrovpn-demo`: two network
# namespaces, a throwaway PKI, a ferrovpn server and client, ping and an
# iperf3 transfer through the tunnel, the result printed.
#
#   sudo scripts/demo.sh [demo options, see `target/release/ferrovpn-demo --help`]
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
    echo "demo.sh: run as root (network namespaces and TUN devices need it): sudo $0" >&2
    exit 1
fi

need=()
for t in ip iperf3 ping openvpn systemd-analyze; do
    command -v "$t" >/dev/null 2>&1 || [[ -x /usr/sbin/$t || -x /sbin/$t ]] || need+=("$t")
done
if (( ${#need[@]} > 0 )); then
    if command -v apt-get >/dev/null 2>&1; then
        echo "== installing: iproute2 iperf3 iputils-ping openvpn openssl systemd"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends \
            iproute2 iperf3 iputils-ping openvpn openssl ca-certificates procps systemd >/dev/null
    else
        echo "demo.sh: missing ${need[*]} and no apt-get; install them and retry" >&2
        exit 1
    fi
fi
# The proxy tests (crates/ferrovpn/tests/proxy_interop.rs) start real proxies.
if ! command -v tinyproxy >/dev/null 2>&1 || ! [[ -x /usr/sbin/danted ]]; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "== installing: tinyproxy dante-server"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            tinyproxy dante-server >/dev/null
    else
        echo "demo.sh: missing tinyproxy or danted and no apt-get; install them and retry" >&2
        exit 1
    fi
fi

# The fragment/passtos tests (crates/ferrovpn/tests/fragment_interop.rs)
# count datagrams with nftables.
if ! command -v nft >/dev/null 2>&1 && ! [[ -x /usr/sbin/nft ]]; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "== installing: nftables"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nftables >/dev/null
    else
        echo "demo.sh: missing nft and no apt-get; install it and retry" >&2
        exit 1
    fi
fi

# The DNS test (crates/ferrovpn/tests/dns_interop.rs) runs a downloaded
# systemd-resolved on a private bus of its own.
if ! command -v dbus-daemon >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "== installing: dbus-daemon"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dbus-daemon >/dev/null
    else
        echo "demo.sh: missing dbus-daemon and no apt-get; install it and retry" >&2
        exit 1
    fi
fi

# Third-party consumers the test suite drives (management client, metrics
# parser), at the versions CI installs.
if ! python3 -c 'import openvpn_api, prometheus_client' >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "== installing: python3-pip, openvpn-api, prometheus_client (for the test suite)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
        python3 -m pip install -q --break-system-packages openvpn-api==0.3.0 prometheus_client
    else
        echo "demo.sh: note: the test suite needs the Python packages openvpn-api and prometheus_client" >&2
    fi
fi

if ! command -v cargo >/dev/null 2>&1; then
    if [[ -x "$HOME/.cargo/bin/cargo" ]]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        echo "== installing the Rust toolchain (rustup)"
        command -v curl >/dev/null 2>&1 || apt-get install -y -qq curl >/dev/null
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
fi

if [[ ! -c /dev/net/tun ]]; then
    mkdir -p /dev/net && mknod /dev/net/tun c 10 200 && chmod 0666 /dev/net/tun
fi

echo "== cargo build --release"
cargo build --release -p ferrovpn --bin ferrovpn -p ferrovpn-testkit --bin ferrovpn-demo
exec target/release/ferrovpn-demo "$@"
