"""A tiny sd_notify(3) client: tells systemd READY, WATCHDOG, STOPPING and a status line.

Dependency-free and total: with `NOTIFY_SOCKET` unset (not under systemd, in a container,
in tests) every call is a no-op returning False, and a send that fails returns False
instead of raising, so notifying can never take the daemon down. It never blocks either:
a full socket drops the datagram, which the next watchdog ping repeats anyway.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

__all__ = ["SystemdNotifier", "watchdog_interval"]


def _socket_address(value: str) -> str | bytes | None:
    """`NOTIFY_SOCKET` as a `sendto` address: a path, or `@name` for the abstract namespace."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    return None  # unset, empty, or a kind amid does not speak (vsock:, relative paths)


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of `WATCHDOG_USEC`), or None without a watchdog.

    `WATCHDOG_PID`, when set, must be this process: a child that inherited the variables
    is not the one systemd watches.
    """
    env = os.environ if environ is None else environ
    pid = env.get("WATCHDOG_PID")
    if pid is not None and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2_000_000


class SystemdNotifier:
    """Sends sd_notify datagrams to the socket systemd named in `NOTIFY_SOCKET`."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_interval = watchdog_interval(env)

    @property
    def enabled(self) -> bool:
        """True when running under a service manager that listens for notifications."""
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings, or None when systemd set no watchdog."""
        return self._watchdog_interval

    def ready(self) -> bool:
        return self.notify("READY=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def reloading(self) -> bool:
        """Announce a config reload; send `ready()` when it is done (systemd >= 253 wants
        the monotonic timestamp, older versions ignore it)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """A one-line status for `systemctl status`; newlines would start new fields."""
        return self.notify("STATUS=" + " ".join(text.splitlines()))

    def notify(self, *fields: str) -> bool:
        """Send `KEY=value` fields in one datagram; True if the socket took it."""
        if self._address is None or not fields:
            return False
        data = "\n".join(fields).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(data, self._address)
        except OSError:
            return False
        return True
