"""Fixtures for real-process SIP tests: phones that are always stopped by PID."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callpark.lab.phone import Phone
from tests.sip.helpers import PhoneFactory


@pytest.fixture
def make_phone(tmp_path: Path) -> Iterator[PhoneFactory]:
    """Start phones (``make_phone("alice", auto_answer=True)``); all are stopped at teardown.

    Teardown also checks that each phone exited cleanly (exit code 0, no abort), except
    phones the test killed on purpose (``Phone.kill9``).
    """
    phones: list[Phone] = []

    def make(user: str, **kwargs: Any) -> Phone:
        phone = Phone(user, log_dir=tmp_path / "phones", **kwargs)
        phones.append(phone)  # before start(): a failed start is still cleaned up
        return phone.start()

    try:
        yield make
    finally:
        codes = {f"{p.user}:{p.sip_port}": p.stop() for p in phones}
        codes.update({f"{p.user}:{p.sip_port}": None for p in phones if p.killed})
    unclean = {name: code for name, code in codes.items() if code not in (0, None)}
    assert not unclean, f"phones did not exit cleanly: {unclean}"
