#!/usr/bin/env bash
# Soak test (not run in CI): a ferrovpn server under impaired UDP, with
#   1. a ferrovpn client and a stock OpenVPN client at once, each behind a
#      reordering relay (scripts/soak_relay.py), 2% loss and 2% duplication
#      (nftables) on the underlay, renegotiation every 10 s (reneg-sec 10),
#      an iperf3 TCP transfer through each tunnel for the whole duration;
#      the server's RSS at the start and at the end;
#   2. N stock clients connected, the server killed with SIGKILL and started
#      again: every client must come back.
# Prints the numbers; exits non-zero when a check fails. Needs root,
# openvpn, iperf3, iproute2, nft, openssl, python3.
#
#   scripts/soak.sh [--duration SECONDS] [--clients N] [--keep] [--no-build]
#
# Defaults: 600 s, 50 clients. --keep leaves the scratch directory;
# --no-build uses the release binary as it is.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
FERROVPN="$TARGET/release/ferrovpn"

DURATION=600
CLIENTS=50
KEEP=0
BUILD=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --clients) CLIENTS="$2"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --no-build) BUILD=0; shift ;;
        *) echo "usage: $0 [--duration SECONDS] [--clients N] [--keep] [--no-build]" >&2; exit 2 ;;
    esac
done
[[ "$DURATION" =~ ^[0-9]+$ && "$DURATION" -ge 20 ]] || { echo "--duration: at least 20 s" >&2; exit 2; }
[[ "$CLIENTS" =~ ^[0-9]+$ && "$CLIENTS" -ge 1 && "$CLIENTS" -le 200 ]] || { echo "--clients: 1-200" >&2; exit 2; }

if [[ $(id -u) -ne 0 ]]; then
    echo "soak.sh: must run as root (network namespaces, TUN devices)" >&2
    exit 1
fi
for t in openvpn iperf3 ip nft openssl python3; do
    command -v "$t" >/dev/null || { echo "soak.sh: missing $t" >&2; exit 1; }
done

if [[ $BUILD -eq 1 ]]; then
    echo "== building (release)" >&2
    cargo build --release -p ferrovpn --bin ferrovpn >&2
fi
[[ -x $FERROVPN ]] || { echo "soak.sh: no $FERROVPN" >&2; exit 1; }

TAG="soak$$"
NS_S="$TAG-s"
NS_C="$TAG-c"
DIR=$(mktemp -d "${TMPDIR:-/tmp}/fvpn-$TAG-XXXX")
PIDS=()

cleanup() {
    local rc=$?
    set +e
    # Quiet: bash reports every background job the kills below end.
    exec 2>/dev/null
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    sleep 0.5
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    for ns in "$NS_S" "$NS_C"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    done
    if [[ $KEEP -eq 1 || $rc -ne 0 ]]; then
        echo "soak.sh: logs kept in $DIR"
    else
        rm -rf "$DIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() { echo "FAIL: $*" >&2; exit 1; }
# wait_for SECONDS CMD...: poll CMD every 0.2 s until it succeeds.
wait_for() {
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do
        [[ $SECONDS -lt $deadline ]] || return 1
        sleep 0.2
    done
}
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
up_count() { grep -c "Initialization Sequence Completed" "$1" 2>/dev/null || true; }
spawn() { # spawn NS LOG PROG ARGS...: start in the background, remember the pid
    local ns=$1 log=$2; shift 2
    ip netns exec "$ns" "$@" >"$log" 2>&1 &
    PIDS+=($!)
    LAST_PID=$!
}

echo "== setting up in $DIR" >&2
ip netns add "$NS_S"
ip netns add "$NS_C"
ip link add "$TAG-vs" type veth peer name "$TAG-vc"
ip link set "$TAG-vs" netns "$NS_S"
ip link set "$TAG-vc" netns "$NS_C"
ip -n "$NS_S" addr add 10.77.0.1/24 dev "$TAG-vs"
ip -n "$NS_C" addr add 10.77.0.2/24 dev "$TAG-vc"
for ns in "$NS_S" "$NS_C"; do ip -n "$ns" link set lo up; done
ip -n "$NS_S" link set "$TAG-vs" up
ip -n "$NS_C" link set "$TAG-vc" up

# 2% loss and 2% duplication of the VPN's datagrams, both directions.
ip netns exec "$NS_C" nft -f - <<EOF
table ip soak {
    chain out {
        type filter hook output priority 0;
        ip daddr 10.77.0.1 udp dport 1194 numgen random mod 100 < 2 drop
        ip daddr 10.77.0.1 udp dport 1194 numgen random mod 100 < 2 dup to 10.77.0.1 device "$TAG-vc"
    }
}
EOF
ip netns exec "$NS_S" nft -f - <<EOF
table ip soak {
    chain out {
        type filter hook output priority 0;
        udp sport 1194 numgen random mod 100 < 2 drop
        udp sport 1194 numgen random mod 100 < 2 dup to 10.77.0.2 device "$TAG-vs"
    }
}
EOF

# Throwaway PKI (EC P-256) and tls-crypt key.
(
    cd "$DIR"
    exec 2>>"$DIR/pki.log"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -keyout ca.key -out ca.crt -subj /CN=soak-ca \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign >/dev/null
    for who in server client; do
        eku=serverAuth; [[ $who == client ]] && eku=clientAuth
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout "$who.key" -out "$who.csr" -subj "/CN=soak-$who" >/dev/null
        printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=DNS:soak-%s\n' \
            "$eku" "$who" >"$who.ext"
        openssl x509 -req -in "$who.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
            -extfile "$who.ext" -out "$who.crt" >/dev/null
    done
)
"$FERROVPN" --genkey secret "$DIR/tc.key"

common="ca $DIR/ca.crt
tls-crypt $DIR/tc.key
data-ciphers AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305
dev-type tun
verb 3
disable-dco"
cat >"$DIR/server.conf" <<EOF
port 1194
proto udp
dev soak-s
topology subnet
server 10.8.0.0 255.255.255.0
keepalive 2 10
duplicate-cn
max-clients 1024
reneg-sec 10
cert $DIR/server.crt
key $DIR/server.key
dh none
$common
EOF
client_conf() { # client_conf DEV REMOTE PORT [extra lines]
    cat <<EOF
client
proto udp
dev $1
remote $2 $3
nobind
remote-cert-tls server
connect-retry 1 2
cert $DIR/client.crt
key $DIR/client.key
$common
${4:-}
EOF
}

start_server() {
    spawn "$NS_S" "$DIR/server-$1.log" "$FERROVPN" --config "$DIR/server.conf"
    SERVER_PID=$LAST_PID
    wait_for 30 grep -qs "server listening" "$DIR/server-$1.log" || fail "server did not start"
}

# ---------------------------------------------------------------- phase 1
echo "== phase 1: ferrovpn and stock clients, loss+dup+reorder, reneg-sec 10, ${DURATION}s iperf3" >&2
start_server 1
spawn "$NS_C" "$DIR/relay-f.log" python3 "$ROOT/scripts/soak_relay.py" 10.77.0.2:2001 10.77.0.1:1194
RELAY_F=$LAST_PID
spawn "$NS_C" "$DIR/relay-s.log" python3 "$ROOT/scripts/soak_relay.py" 10.77.0.2:2002 10.77.0.1:1194
RELAY_S=$LAST_PID
client_conf soak-f 10.77.0.2 2001 >"$DIR/client-f.conf"
client_conf soak-o 10.77.0.2 2002 >"$DIR/client-o.conf"
spawn "$NS_C" "$DIR/client-f.log" "$FERROVPN" --config "$DIR/client-f.conf"
spawn "$NS_C" "$DIR/client-o.log" openvpn --config "$DIR/client-o.conf"
wait_for 60 grep -qs "Initialization Sequence Completed" "$DIR/client-f.log" || fail "ferrovpn client not up"
wait_for 60 grep -qs "Initialization Sequence Completed" "$DIR/client-o.log" || fail "stock client not up"
IP_F=$(ip -n "$NS_C" -4 -o addr show dev soak-f | awk '{print $4}' | cut -d/ -f1)
IP_O=$(ip -n "$NS_C" -4 -o addr show dev soak-o | awk '{print $4}' | cut -d/ -f1)
echo "   ferrovpn client $IP_F, stock client $IP_O" >&2
# Both tunnels hold 10.8.0.0/24 in one namespace: route by source address.
ip -n "$NS_C" rule add from "$IP_F" table 101
ip -n "$NS_C" route add 10.8.0.0/24 dev soak-f table 101
ip -n "$NS_C" rule add from "$IP_O" table 102
ip -n "$NS_C" route add 10.8.0.0/24 dev soak-o table 102
spawn "$NS_S" "$DIR/iperf3-s1.log" iperf3 -s -p 5201 -B 10.8.0.1
spawn "$NS_S" "$DIR/iperf3-s2.log" iperf3 -s -p 5202 -B 10.8.0.1
sleep 1
RSS_IDLE=$(rss_kb "$SERVER_PID")
spawn "$NS_C" "$DIR/iperf3-f.json" iperf3 -c 10.8.0.1 -p 5201 -B "$IP_F" -t "$DURATION" -J --connect-timeout 5000
IPERF_F=$LAST_PID
spawn "$NS_C" "$DIR/iperf3-o.json" iperf3 -c 10.8.0.1 -p 5202 -B "$IP_O" -t "$DURATION" -J --connect-timeout 5000
IPERF_O=$LAST_PID
# RSS_START: after 10 s of traffic (buffers allocated on first use are in).
RSS_START=""
RSS_MAX=0
t_start=$SECONDS
# Bounded: the transfers end after DURATION; allow 60 s more.
deadline=$((SECONDS + DURATION + 60))
while kill -0 "$IPERF_F" 2>/dev/null || kill -0 "$IPERF_O" 2>/dev/null; do
    [[ $SECONDS -lt $deadline ]] || fail "iperf3 did not finish"
    r=$(rss_kb "$SERVER_PID") || fail "server died"
    [[ -z $RSS_START && $((SECONDS - t_start)) -ge 10 ]] && RSS_START=$r
    ((r > RSS_MAX)) && RSS_MAX=$r
    sleep 5
done
[[ -n $RSS_START ]] || fail "the transfer ended within 10 s"
wait "$IPERF_F" || fail "iperf3 through the ferrovpn client failed (see $DIR/iperf3-f.json)"
wait "$IPERF_O" || fail "iperf3 through the stock client failed (see $DIR/iperf3-o.json)"
RSS_END=$(rss_kb "$SERVER_PID")
gbits() { python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))["end"]; s=e["sum_received"]; print("{:.3f} Gbit/s, {:.0f} MB, {} retransmits".format(s["bits_per_second"]/1e9, s["bytes"]/1e6, e["sum_sent"].get("retransmits", 0)))' "$1"; }
RENEG=$(grep -c "key_id [0-9]* active" "$DIR/server-1.log" || true)
PING_F=$(ip netns exec "$NS_S" ping -c 3 -W 2 -q "$IP_F" >/dev/null 2>&1 && echo ok || echo FAIL)
PING_O=$(ip netns exec "$NS_S" ping -c 3 -W 2 -q "$IP_O" >/dev/null 2>&1 && echo ok || echo FAIL)
kill -TERM "$RELAY_F" "$RELAY_S" 2>/dev/null || true
sleep 0.5
echo "== phase 1 results (${DURATION}s)"
echo "   ferrovpn client -> server: $(gbits "$DIR/iperf3-f.json")"
echo "   stock client    -> server: $(gbits "$DIR/iperf3-o.json")"
echo "   keys activated on the server: $RENEG (reneg-sec 10, 2 clients)"
echo "   reconnects: ferrovpn client $(($(up_count "$DIR/client-f.log") - 1)), stock client $(($(up_count "$DIR/client-o.log") - 1))"
echo "   ping after the soak: to ferrovpn client $PING_F, to stock client $PING_O"
echo "   relays: $(tail -n1 "$DIR/relay-f.log"); $(tail -n1 "$DIR/relay-s.log")"
echo "   server RSS: idle $RSS_IDLE kB, after 10 s of traffic $RSS_START kB, max $RSS_MAX kB, end $RSS_END kB"
[[ $PING_F == ok && $PING_O == ok ]] || fail "a tunnel is down after the soak"
# Nothing grows: allow 8 MB of allocator slack over the whole run.
((RSS_END - RSS_START < 8192)) || fail "server RSS grew by $((RSS_END - RSS_START)) kB"

# ---------------------------------------------------------------- phase 2
echo "== phase 2: $CLIENTS stock clients, server killed with SIGKILL and restarted" >&2
for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
PIDS=()
start_server 2
for i in $(seq 1 "$CLIENTS"); do
    # ifconfig-noexec/route-noexec: 50 tunnels in one namespace would
    # fight over the same routes; what is measured is the session.
    client_conf "soak-m$i" 10.77.0.1 1194 "ifconfig-noexec
route-noexec" >"$DIR/m$i.conf"
    spawn "$NS_C" "$DIR/m$i.log" openvpn --config "$DIR/m$i.conf"
done
all_up() { # all_up N: every client log holds N "Initialization Sequence Completed"
    local i
    for i in $(seq 1 "$CLIENTS"); do
        [[ $(up_count "$DIR/m$i.log") -ge $1 ]] || return 1
    done
}
t0=$SECONDS
wait_for 180 all_up 1 || fail "not all $CLIENTS clients came up: $(for i in $(seq 1 "$CLIENTS"); do up_count "$DIR/m$i.log"; done | sort | uniq -c | tr '\n' ' ')"
echo "   all $CLIENTS up in $((SECONDS - t0)) s" >&2
sleep 5
RSS_50=$(rss_kb "$SERVER_PID")
kill -KILL "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
t0=$SECONDS
start_server 3
wait_for 240 all_up 2 || fail "not all $CLIENTS clients came back: $(for i in $(seq 1 "$CLIENTS"); do up_count "$DIR/m$i.log"; done | sort | uniq -c | tr '\n' ' ')"
BACK=$((SECONDS - t0))
sleep 5
RSS_50B=$(rss_kb "$SERVER_PID")
CONNECTED=$(grep -c " connected: 10.8." "$DIR/server-3.log" || true)
echo "== phase 2 results"
echo "   $CLIENTS/$CLIENTS clients back ${BACK} s after SIGKILL + restart ($CONNECTED connections on the new server)"
echo "   server RSS with $CLIENTS clients: before the kill $RSS_50 kB, new server $RSS_50B kB"
echo "== soak passed"
