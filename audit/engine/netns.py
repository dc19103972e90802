"""Run a command in a private network namespace with only loopback up.

Ray probes a public address to find its node IP and binds to the machine's address; the tests and
benches that start Ray clusters run inside `unshare -n` so nothing of ours can send traffic off
the machine. `python -m audit.engine.netns CMD...` (inside the namespace) brings loopback up and
execs CMD; `isolated(CMD)` is the whole command line to run from outside. Needs root or user
namespaces (CI runs as root).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import struct
import subprocess
import sys

_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1


def loopback_up() -> None:
    """ifconfig lo up, without depending on iproute2 being installed."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | _IFF_UP, b""))


def isolated(argv: list[str]) -> list[str]:
    """The command line that runs argv in a fresh network namespace, loopback up."""
    return ["unshare", "--net", sys.executable, "-m", "audit.engine.netns", *argv]


def why_not() -> str | None:
    """None when isolated() works on this machine, else why it does not."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(isolated(["true"]), capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        return f"cannot make a private network namespace: {probe.stderr.strip()[-300:]}"
    return None


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: python -m audit.engine.netns COMMAND [ARG...]")
    loopback_up()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
