"""Ports for started servers: free, and out of the range outgoing connections take theirs from."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from conveyor import ports


def test_a_chosen_port_is_free_and_outside_the_ephemeral_range() -> None:
    low, high = ports.ephemeral_range()
    chosen = {ports.free_port() for _ in range(20)}
    assert all(not low <= port <= high for port in chosen), (chosen, low, high)
    assert len(chosen) > 1, "every call chose the same port: two stacks started at once would collide"
    for port in chosen:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # raises when the port was not free


def test_a_port_something_listens_on_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        spare = ports.free_port()
        monkeypatch.setattr(ports.PICKER, "sample", lambda population, k: [taken, spare])
        assert not ports.bindable("127.0.0.1", taken)
        assert ports.free_port() == spare


def test_no_room_outside_the_range_falls_back_to_the_kernel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    whole = tmp_path / "ip_local_port_range"
    whole.write_text("1024\t65535\n")
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE_FILE", whole)
    assert ports.ephemeral_range() == (1024, 65535)
    assert ports.bindable("127.0.0.1", ports.free_port())


def test_an_unreadable_range_uses_the_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE_FILE", tmp_path / "missing")
    assert ports.ephemeral_range() == ports.DEFAULT_EPHEMERAL_RANGE
    low, _ = ports.DEFAULT_EPHEMERAL_RANGE
    assert ports.LOWEST <= ports.free_port() < low
