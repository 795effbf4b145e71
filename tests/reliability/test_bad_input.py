"""Bad input is refused whole: one clear error, and nothing queued or half-written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.database_fixtures import open_backend
from tests.reliability import jobs

# Above MariaDB's default max_allowed_packet (16 MB); random, so no encoding shrinks it.
OVERSIZED = 20 * 1024 * 1024


def test_a_20_mb_push_to_mariadb_fails_naming_max_allowed_packet_and_queues_nothing(
    tmp_path: Path, run_log: Path
) -> None:
    with open_backend("mariadb", tmp_path) as backend:
        with pytest.raises(Exception) as raised:
            backend.queue.push(jobs.Carries, args=[str(run_log), "too-big", os.urandom(OVERSIZED)])

        message = str(raised.value)
        assert "max_allowed_packet" in message, message
        assert "\n" not in message.strip(), f"not one line: {message!r}"
        assert getattr(raised.value, "retryable", False) is False, (
            "pushing the same bytes again cannot help, yet the error says it may"
        )
        assert backend.jobs() == []
        # The connection is still good for the next push.
        backend.queue.push(jobs.Carries, args=[str(run_log), "small", b"x"])
        assert [row.name for row in backend.jobs()] == ["tests.reliability.jobs.Carries"]
