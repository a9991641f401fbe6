#!/usr/bin/env python3
"""UDP relay that reorders: used by scripts/soak.sh between a VPN client and
its server (this kernel has no netem).

    soak_relay.py LISTEN_IP:PORT UPSTREAM_IP:PORT [--reorder PERCENT]

Every client source address gets its own upstream socket, so the server sees
one peer per client. In each direction, PERCENT of the datagrams are held
back and sent after the next datagram of that flow (or after 5 ms if none
comes), which swaps their order. Counts are printed on SIGTERM.
"""

import random
import select
import signal
import socket
import sys
import time

HOLD_SECONDS = 0.005
MAX_FLOWS = 1024


def addr(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def main():
    args = sys.argv[1:]
    reorder = 2.0
    if "--reorder" in args:
        i = args.index("--reorder")
        reorder = float(args[i + 1])
        del args[i : i + 2]
    if len(args) != 2:
        sys.exit(__doc__)
    listen, upstream = addr(args[0]), addr(args[1])

    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    front.bind(listen)
    # client address -> upstream socket, and back
    ups = {}
    owner = {}
    # (socket, destination) -> (datagram, deadline): the one held back
    held = {}
    counts = {"forwarded": 0, "reordered": 0, "send errors": 0}
    running = [True]

    def stop(*_):
        running[0] = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def emit(sock, data, dest):
        # The soak's nftables rules drop some datagrams at output: EPERM.
        try:
            sock.sendto(data, dest)
        except OSError:
            counts["send errors"] += 1

    def send(sock, data, dest):
        key = (sock.fileno(), dest)
        counts["forwarded"] += 1
        if key in held:
            # The held datagram goes out after this one: they swap.
            old, _ = held.pop(key)
            emit(sock, data, dest)
            emit(sock, old, dest)
            counts["reordered"] += 1
        elif random.uniform(0, 100) < reorder:
            held[key] = (data, time.monotonic() + HOLD_SECONDS)
        else:
            emit(sock, data, dest)

    def release_due(now):
        for key in [k for k, (_, t) in held.items() if t <= now]:
            data, _ = held.pop(key)
            fd, dest = key
            sock = front if fd == front.fileno() else owner_sock[fd]
            emit(sock, data, dest)

    owner_sock = {}
    print(f"relay {listen} -> {upstream}, reorder {reorder}%", flush=True)
    while running[0]:
        try:
            ready, _, _ = select.select([front, *ups.values()], [], [], 0.002)
        except InterruptedError:
            continue
        for sock in ready:
            try:
                data, src = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError, ConnectionRefusedError):
                continue
            if sock is front:
                up = ups.get(src)
                if up is None:
                    if len(ups) >= MAX_FLOWS:
                        continue
                    up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    up.bind((listen[0], 0))
                    ups[src] = up
                    owner[up.fileno()] = src
                    owner_sock[up.fileno()] = up
                send(up, data, upstream)
            else:
                send(front, data, owner[sock.fileno()])
        release_due(time.monotonic())
    print(
        f"relay: {counts['forwarded']} datagrams, {counts['reordered']} pairs swapped, "
        f"{counts['send errors']} refused by the firewall",
        flush=True,
    )


if __name__ == "__main__":
    main()
