"""Ports for the servers Conveyor starts: free now, and out of the way of outgoing connections.

Asking the kernel for port 0 returns a port from its ephemeral range, the range every outgoing
connection takes its local port from. Between choosing such a port and the server binding it, any
client on the machine (a database driver, an HTTP pool, a test running beside) can take it: a
server then fails to start with "address already in use". A port outside that range is only taken
by a program that asks for it by number, so `free_port` picks one at random there.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# When the kernel does not say (not Linux): Linux's default start and macOS's end cover both.
DEFAULT_EPHEMERAL_RANGE = (32768, 65535)
# Below this are the well-known ports and the usual fixed ones of databases and servers.
LOWEST = 20000
TRIES = 64
# From the OS's entropy on every call: no seeding of `random` (by a library or a test) can make
# two processes pick the same sequence of ports.
PICKER = random.SystemRandom()


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections (inclusive)."""
    try:
        low, high = (int(part) for part in EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL_RANGE
    return low, high


def bindable(host: str, port: int) -> bool:
    """Nothing listens on host:port now (TIME-WAIT leftovers do not count, as for the servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on, outside the ephemeral range when there is room, chosen at random
    so that two stacks started at once do not pick the same one; the kernel's choice otherwise."""
    low, high = ephemeral_range()
    candidates = [*range(LOWEST, min(low, 65536)), *range(max(high + 1, LOWEST), 65536)]
    for port in PICKER.sample(candidates, min(TRIES, len(candidates))):
        if bindable(host, port):
            return port
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
