"""The one wire format: readable envelopes, signed bodies, refused forgeries, the key."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import pickle
import random
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from queueing import (
    CorruptPayloadError,
    Envelope,
    ForgedPayloadError,
    JobRunner,
    MissingKeyError,
    Outcome,
    Queue,
    Queueable,
    Signer,
)
from queueing.drivers.base import Driver
from queueing.payload import MAGIC, new_job_id, seal
from queueing.worker import Worker, WorkerOptions


class Greet(Queueable):
    """A harmless job to put in envelopes."""

    def handle(self, name: str) -> str:
        return f"hello {name}"


class WritesMarker:
    """Unpickling this runs `open(marker, "w")`: the file appears if it is ever loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


class Collecting(Driver):
    """A driver that keeps what is pushed to it."""

    name = "collecting"

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    def push(self, envelopes: Any, channel: str | None = None) -> None:
        self.envelopes.extend(envelopes)


def malicious_pickle(marker: Path) -> bytes:
    """A valid pickle of a job dict whose loading would create `marker`."""
    return pickle.dumps({"obj": WritesMarker(marker), "args": (), "callback": "handle"})


def signed_with(key: bytes, body: bytes) -> bytes:
    """`body` behind our header, signed with `key` (not necessarily the app's)."""
    return MAGIC + hmac.digest(key, body, hashlib.sha256) + body


def envelope_around(body: bytes, now: float) -> Envelope:
    """An envelope as a driver would hand it out, carrying `body` as it is."""
    return Envelope(
        id=uuid.uuid4().hex,
        name="test_payload.Greet",
        queue="default",
        driver="test",
        created=dt.datetime.fromtimestamp(now, dt.UTC).isoformat(),
        available_at=now,
        body=body,
        attempts=1,
    )


# Envelope ---------------------------------------------------------------------------


def test_an_envelope_round_trips_through_bytes(envelope_for: Callable[..., Envelope]) -> None:
    envelope = envelope_for(Greet, args=("ada",), queue="emails", driver="database", delay=5)

    assert Envelope.from_bytes(envelope.to_bytes()) == envelope


def test_envelope_metadata_is_readable_without_unpickling(
    envelope_for: Callable[..., Envelope],
) -> None:
    envelope = envelope_for(Greet, args=("ada",), queue="emails", driver="database", delay=5)

    header = json.loads(envelope.to_bytes().partition(b"\n")[0])

    assert header == {
        "id": envelope.id,
        "name": "test_payload.Greet",
        "queue": "emails",
        "driver": "database",
        "created": envelope.created,
        "available_at": envelope.available_at,
        "attempts": 0,
        "connection": None,
    }


def test_envelope_metadata_excludes_the_body(envelope_for: Callable[..., Envelope]) -> None:
    metadata = envelope_for(Greet).metadata()

    assert "body" not in metadata
    assert set(metadata) >= {"id", "name", "queue", "driver", "created", "attempts"}


def test_created_is_iso_8601_with_an_offset(envelope_for: Callable[..., Envelope]) -> None:
    created = dt.datetime.fromisoformat(envelope_for(Greet).created)

    assert created.utcoffset() is not None


def test_available_at_is_push_time_plus_the_delay(
    envelope_for: Callable[..., Envelope], manual_clock: Any
) -> None:
    envelope = envelope_for(Greet, delay=600)

    assert envelope.available_at == manual_clock.now() + 600


def test_each_envelope_gets_its_own_id(envelope_for: Callable[..., Envelope]) -> None:
    assert envelope_for(Greet).id != envelope_for(Greet).id


def test_bytes_without_a_header_line_are_corrupt() -> None:
    with pytest.raises(CorruptPayloadError):
        Envelope.from_bytes(b"not an envelope")


def test_a_header_that_is_not_json_is_corrupt() -> None:
    with pytest.raises(CorruptPayloadError):
        Envelope.from_bytes(b"{broken\nbody")


def test_started_counts_an_attempt_and_later_moves_the_due_time(
    envelope_for: Callable[..., Envelope],
) -> None:
    envelope = envelope_for(Greet)

    assert envelope.started().started().attempts == 2
    assert envelope.later(123.0).available_at == 123.0
    assert envelope.attempts == 0


# Signing ----------------------------------------------------------------------------


def test_a_signed_body_loads_back_the_job(
    envelope_for: Callable[..., Envelope], signer: Signer
) -> None:
    envelope = envelope_for(Greet, args=("ada",), kwargs={"loud": True}, callback="handle")

    job = signer.load(envelope.body)

    assert job["obj"] is Greet
    # The standard pickler's bytes: the class by its importable name.
    assert envelope.body[len(MAGIC) + 32 :] == pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
    assert job["args"] == ("ada",)
    assert job["kwargs"] == {"loud": True}
    assert job["callback"] == "handle"
    assert job["created"] == envelope.created
    assert job["id"] == envelope.id


def test_a_body_signed_with_another_key_is_refused(
    envelope_for: Callable[..., Envelope],
) -> None:
    envelope = envelope_for(Greet)

    with pytest.raises(ForgedPayloadError):
        Signer(b"another-key-of-thirty-two-bytes!").load(envelope.body)


def test_a_tampered_body_is_refused(envelope_for: Callable[..., Envelope], signer: Signer) -> None:
    body = bytearray(envelope_for(Greet, args=("ada",)).body)
    body[-5] ^= 0xFF

    with pytest.raises(ForgedPayloadError):
        signer.load(bytes(body))


def test_the_test_pickle_really_writes_its_marker_when_loaded(tmp_path: Path) -> None:
    # The forged-payload tests below rely on this: loading it has a visible effect.
    marker = tmp_path / "loaded"

    pickle.loads(malicious_pickle(marker))

    assert marker.exists()


def test_signer_refuses_a_forged_payload_without_loading_it(signer: Signer, tmp_path: Path) -> None:
    marker = tmp_path / "loaded"
    forged = signed_with(b"the attacker's key, 32 bytes....", malicious_pickle(marker))

    with pytest.raises(ForgedPayloadError):
        signer.load(forged)

    assert not marker.exists()


def test_signer_refuses_an_unsigned_pickle_without_loading_it(
    signer: Signer, tmp_path: Path
) -> None:
    marker = tmp_path / "loaded"

    with pytest.raises(ForgedPayloadError):
        signer.load(malicious_pickle(marker))

    assert not marker.exists()


def test_runner_parks_a_payload_signed_with_another_key(
    runner: JobRunner, failed_store: Any, manual_clock: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "loaded"
    envelope = envelope_around(
        signed_with(b"the attacker's key, 32 bytes....", malicious_pickle(marker)),
        manual_clock.now(),
    )

    result = runner.run(envelope)

    assert result.outcome is Outcome.PARKED
    assert not marker.exists()
    assert failed_store.reasons == ["signature"]
    assert failed_store.failures[0].envelope.id == envelope.id
    assert failed_store.failures[0].envelope.body == envelope.body


def test_runner_parks_an_unsigned_pickle_as_a_signature_failure(
    runner: JobRunner, failed_store: Any, manual_clock: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "loaded"
    envelope = envelope_around(malicious_pickle(marker), manual_clock.now())

    result = runner.run(envelope)

    assert result.outcome is Outcome.PARKED
    assert not marker.exists()
    assert failed_store.reasons == ["signature"]


def test_a_parked_payload_is_logged_with_its_id_and_reason(
    runner: JobRunner, manual_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    envelope = envelope_around(
        signed_with(b"the attacker's key, 32 bytes....", malicious_pickle(tmp_path / "m")),
        manual_clock.now(),
    )

    runner.run(envelope)

    assert any(
        envelope.id in record.getMessage() and "signature" in record.getMessage()
        for record in caplog.records
    )


def test_a_signed_body_that_is_not_a_pickle_is_corrupt(signer: Signer) -> None:
    with pytest.raises(CorruptPayloadError):
        signer.load(signed_with(signer.require_key(), b"these bytes are no pickle"))


def test_a_signed_pickle_that_is_not_a_job_is_corrupt(signer: Signer) -> None:
    with pytest.raises(CorruptPayloadError):
        signer.load(signed_with(signer.require_key(), pickle.dumps(["not", "a", "job"])))


def test_runner_parks_a_corrupt_body(
    runner: JobRunner, signer: Signer, failed_store: Any, manual_clock: Any
) -> None:
    body = signed_with(signer.require_key(), b"these bytes are no pickle")
    envelope = envelope_around(body, manual_clock.now())

    result = runner.run(envelope)

    assert result.outcome is Outcome.PARKED
    assert failed_store.reasons == ["corrupt"]
    assert "CorruptPayloadError" in result.error_text


# The application key ----------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "", "   ", "short", "base64:c2hvcnQ=", "base64:!!!"])
def test_a_missing_or_unusable_key_refuses_to_sign(key: str | None) -> None:
    with pytest.raises(MissingKeyError) as refused:
        Signer(key).dump({"obj": print})

    assert "craft key --store" in str(refused.value)


def test_a_signer_without_a_key_says_it_is_not_ready() -> None:
    assert not Signer(None).ready
    assert Signer(b"k" * 32).ready


def test_push_without_a_key_is_refused_and_queues_nothing() -> None:
    driver = Collecting()
    queue = Queue({"collecting": lambda: driver}, "collecting", Signer(None))

    with pytest.raises(MissingKeyError) as refused:
        queue.push(Greet, args=("ada",))

    assert "craft key --store" in str(refused.value)
    assert driver.envelopes == []


def test_a_runner_without_a_key_refuses_to_run(
    container: Any, failed_store: Any, envelope_for: Callable[..., Envelope]
) -> None:
    keyless = JobRunner(container, Signer(None), failed_store)

    with pytest.raises(MissingKeyError) as refused:
        keyless.run(envelope_for(Greet, args=("ada",)).started())

    assert "craft key --store" in str(refused.value)
    assert failed_store.failures == []


def test_a_worker_without_a_key_refuses_to_start(container: Any, failed_store: Any) -> None:
    class NothingToReserve:
        name = "none"

        def reserve(self, queues: Any, channel: Any = None) -> None:
            raise AssertionError("a worker without a key must not take jobs")

    worker = Worker(
        NothingToReserve(),  # type: ignore[arg-type]
        JobRunner(container, Signer(None), failed_store),
        WorkerOptions(stop_when_empty=True),
    )

    with pytest.raises(MissingKeyError, match="craft key --store"):
        worker.run()


def test_job_ids_do_not_repeat_after_random_seed_or_in_a_forked_child() -> None:
    random.seed(7)
    first = new_job_id()
    random.seed(7)
    assert new_job_id() != first
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # the child sends its next id and leaves at once
        os.write(writing, new_job_id().encode())
        os._exit(0)
    os.waitpid(child, 0)
    os.close(writing)
    from_child = os.read(reading, 64).decode()
    os.close(reading)
    assert len(from_child) == 32
    assert from_child != new_job_id()


def test_an_importable_job_class_with_plain_arguments_is_pickled_by_reference_and_loads() -> None:
    signer = Signer(b"k" * 32)
    envelope = seal(
        signer,
        Greet,
        args=(1, "a", [2.5, None]),
        kwargs={"flag": True},
        callback="handle",
        queue="default",
        driver="sync",
        now=1.0,
        delay=0.0,
    )

    job = signer.load(envelope.body)

    assert job["obj"] is Greet
    # The standard pickler's bytes: the class by its importable name.
    assert envelope.body[len(MAGIC) + 32 :] == pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
    assert (job["args"], job["kwargs"]) == ((1, "a", [2.5, None]), {"flag": True})


def test_a_class_defined_in_a_function_is_pickled_by_value_and_loads() -> None:
    class Local:
        def handle(self) -> str:
            return "local"

    signer = Signer(b"k" * 32)
    envelope = seal(
        signer,
        Local,
        args=(),
        kwargs={},
        callback="handle",
        queue="default",
        driver="sync",
        now=1.0,
        delay=0.0,
    )

    loaded = signer.load(envelope.body)["obj"]
    assert loaded().handle() == "local"
    assert b"cloudpickle" in envelope.body  # rebuilt from its definition, not a name


def test_created_times_carry_the_local_offset_on_each_side_of_a_clock_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    from queueing.payload import iso_now

    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    try:
        # Summer time began at 01:00 UTC on 2024-03-31.
        assert iso_now(1711846799.5) == "2024-03-31T01:59:59.500000+01:00"
        assert iso_now(1711846800.25) == "2024-03-31T03:00:00.250000+02:00"
    finally:
        monkeypatch.undo()
        time.tzset()
