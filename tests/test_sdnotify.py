"""The sd_notify client against a real AF_UNIX datagram socket, as systemd listens."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from amid.sdnotify import SystemdNotifier, watchdog_interval


class NotifySocket:
    """The service manager's end: a bound datagram socket that collects what arrives."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address  # the NOTIFY_SOCKET value

    def receive(self) -> str:
        self.sock.settimeout(2)
        return self.sock.recv(4096).decode()

    def pending(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        return True


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    # Not tmp_path: an AF_UNIX path must stay under 108 bytes.
    with tempfile.TemporaryDirectory(prefix="amid-sd-") as directory:
        path = str(Path(directory, "notify"))
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            yield NotifySocket(sock, path)


@pytest.fixture
def abstract_notify_socket() -> Iterator[NotifySocket]:
    name = f"amid-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        yield NotifySocket(sock, "@" + name)


class TestMessages:
    def test_ready_arrives_as_ready_1(self, notify_socket: NotifySocket) -> None:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": notify_socket.address})

        assert notifier.ready() is True
        assert notify_socket.receive() == "READY=1"

    def test_stopping_watchdog_and_status_arrive_in_order(
        self, notify_socket: NotifySocket
    ) -> None:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": notify_socket.address})

        assert notifier.status("draining 3 messages")
        assert notifier.watchdog()
        assert notifier.stopping()

        assert notify_socket.receive() == "STATUS=draining 3 messages"
        assert notify_socket.receive() == "WATCHDOG=1"
        assert notify_socket.receive() == "STOPPING=1"

    def test_reloading_carries_the_monotonic_timestamp(self, notify_socket: NotifySocket) -> None:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": notify_socket.address})
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

        assert notifier.reloading()
        fields = notify_socket.receive().split("\n")

        assert fields[0] == "RELOADING=1"
        key, _, usec = fields[1].partition("=")
        assert key == "MONOTONIC_USEC"
        assert int(usec) >= before

    def test_a_multi_line_status_is_sent_as_one_field(self, notify_socket: NotifySocket) -> None:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": notify_socket.address})

        assert notifier.status("queue unreachable\nretrying in 5s")
        assert notify_socket.receive() == "STATUS=queue unreachable retrying in 5s"

    def test_an_abstract_socket_name_starting_with_at_is_reached(
        self, abstract_notify_socket: NotifySocket
    ) -> None:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": abstract_notify_socket.address})

        assert notifier.enabled
        assert notifier.ready()
        assert abstract_notify_socket.receive() == "READY=1"

    def test_the_process_environment_is_read_by_default(
        self, notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.address)

        assert SystemdNotifier().ready()
        assert notify_socket.receive() == "READY=1"


class TestNeverInTheWay:
    def test_without_notify_socket_every_call_is_a_false_no_op(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
        notifier = SystemdNotifier()

        assert not notifier.enabled
        sent = [notifier.ready(), notifier.watchdog(), notifier.status("x"), notifier.stopping()]
        assert sent == [False] * 4

    @pytest.mark.parametrize("value", ["", "relative/notify", "@", "vsock:2:1234"])
    def test_an_address_it_cannot_use_disables_notification(self, value: str) -> None:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": value})

        assert not notifier.enabled
        assert notifier.ready() is False

    def test_a_socket_nobody_listens_on_returns_false_instead_of_raising(self) -> None:
        with tempfile.TemporaryDirectory(prefix="amid-sd-") as directory:
            notifier = SystemdNotifier({"NOTIFY_SOCKET": str(Path(directory, "gone"))})

            assert notifier.enabled
            assert notifier.ready() is False

    def test_a_full_socket_drops_the_message_instead_of_blocking(
        self, notify_socket: NotifySocket
    ) -> None:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": notify_socket.address})
        started = time.monotonic()

        # Nobody reads: the receive queue fills after a few datagrams (net.unix.max_dgram_qlen).
        results = [notifier.watchdog() for _ in range(2000)]

        assert results[0] is True
        assert False in results
        assert time.monotonic() - started < 5
        assert notify_socket.pending()


class TestWatchdogInterval:
    def test_pings_come_at_half_the_watchdog_timeout(self) -> None:
        assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0

    def test_the_notifier_reports_the_same_interval(self) -> None:
        notifier = SystemdNotifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())})

        assert notifier.watchdog_interval() == 15.0

    def test_no_watchdog_without_watchdog_usec(self) -> None:
        assert watchdog_interval({}) is None

    def test_a_watchdog_meant_for_another_process_is_ignored(self) -> None:
        env = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}

        assert watchdog_interval(env) is None

    @pytest.mark.parametrize("value", ["0", "-5", "soon", ""])
    def test_a_meaningless_watchdog_usec_means_no_watchdog(self, value: str) -> None:
        assert watchdog_interval({"WATCHDOG_USEC": value}) is None

    def test_the_process_environment_is_read_by_default(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("WATCHDOG_USEC", "2000000")
        monkeypatch.delenv("WATCHDOG_PID", raising=False)

        assert watchdog_interval() == 1.0
