"""The one wire format: readable envelopes, signed bodies, refused forgeries, the key."""

from __future__ import annotations

import base64
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


@pytest.fixture
def app_key_text() -> str:
    """A key as `craft key` writes it: `base64:` and 32 random bytes."""
    return "base64:" + base64.b64encode(os.urandom(32)).decode()


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


def test_a_parked_payload_is_reported_by_its_result_and_not_logged_a_second_time(
    runner: JobRunner, manual_clock: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    envelope = envelope_around(
        signed_with(b"the attacker's key, 32 bytes....", malicious_pickle(tmp_path / "m")),
        manual_clock.now(),
    )

    result = runner.run(envelope)

    # The worker prints the one line from the result; the runner adds no log line of its own.
    assert result.error_text == (
        "ForgedPayloadError: payload signature does not match the application key"
    )
    assert [record for record in caplog.records if envelope.id in record.getMessage()] == []


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


# Key rotation -----------------------------------------------------------------------

OLD_KEY = b"the key before the rotation, 32b"
OLDER_KEY = b"the key two rotations ago, 32 b."
NEW_KEY = b"the key after the rotation, 32 b"


def greet_job(*args: Any) -> dict[str, Any]:
    """The job dict `Queue.push` signs for `Greet`."""
    return {"obj": Greet, "args": args, "kwargs": {}, "callback": "handle"}


def test_a_body_signed_with_a_previous_key_still_loads() -> None:
    before = Signer(OLD_KEY).dump(greet_job("ada"))

    job = Signer(NEW_KEY, [OLD_KEY]).load(before)

    assert (job["obj"], job["args"]) == (Greet, ("ada",))


def test_any_previous_key_verifies_not_only_the_newest() -> None:
    signed_long_ago = Signer(OLDER_KEY).dump(greet_job())

    assert Signer(NEW_KEY, [OLD_KEY, OLDER_KEY]).load(signed_long_ago)["obj"] is Greet


def test_new_bodies_are_signed_with_the_current_key_only() -> None:
    body = Signer(NEW_KEY, [OLD_KEY]).dump(greet_job())

    assert Signer(NEW_KEY).load(body)["obj"] is Greet
    with pytest.raises(ForgedPayloadError):
        Signer(OLD_KEY).load(body)


def test_previous_keys_are_read_in_the_form_craft_key_writes(app_key_text: str) -> None:
    before = Signer(app_key_text).dump(greet_job())

    assert Signer(NEW_KEY, [app_key_text]).load(before)["obj"] is Greet


def test_a_body_signed_by_no_configured_key_is_refused_unloaded_naming_the_previous_keys(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "loaded"
    forged = signed_with(b"the attacker's key, 32 bytes....", malicious_pickle(marker))

    with pytest.raises(ForgedPayloadError) as refused:
        Signer(NEW_KEY, [OLD_KEY, OLDER_KEY]).load(forged)

    assert str(refused.value) == (
        "payload signature matches neither the application key nor a previous key"
    )
    assert not marker.exists()


def test_a_runner_with_previous_keys_still_parks_a_forged_payload_unloaded(
    container: Any, failed_store: Any, manual_clock: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "loaded"
    runner = JobRunner(container, Signer(NEW_KEY, [OLD_KEY]), failed_store, manual_clock)
    envelope = envelope_around(
        signed_with(b"the attacker's key, 32 bytes....", malicious_pickle(marker)),
        manual_clock.now(),
    )

    result = runner.run(envelope)

    assert result.outcome is Outcome.PARKED
    assert failed_store.reasons == ["signature"]
    assert not marker.exists()


@pytest.mark.parametrize(
    ("previous", "problem"),
    [
        (["tiny-secret"], "previous key 1 in APP_PREVIOUS_KEYS is too short (11 bytes"),
        ([OLD_KEY, "base64:!!!"], "previous key 2 in APP_PREVIOUS_KEYS is not valid base64"),
        ([OLD_KEY, "  "], "previous key 2 in APP_PREVIOUS_KEYS is empty"),
    ],
)
def test_an_unusable_previous_key_refuses_to_sign_naming_its_place_but_not_its_value(
    previous: list[Any], problem: str
) -> None:
    signer = Signer(NEW_KEY, previous)

    with pytest.raises(MissingKeyError) as refused:
        signer.dump(greet_job())

    assert not signer.ready
    assert str(refused.value).startswith(problem)
    assert str(refused.value).endswith(": fix it or remove it")
    assert "tiny-secret" not in str(refused.value) and "!!!" not in str(refused.value)


def test_a_previous_key_equal_to_the_current_one_is_harmless() -> None:
    body = Signer(NEW_KEY).dump(greet_job())

    assert Signer(NEW_KEY, [NEW_KEY, OLD_KEY]).load(body)["obj"] is Greet


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


# Job names ------------------------------------------------------------------------------


class Report:
    """A class whose bound method is pushed."""

    def send(self) -> str:
        return "sent"


def build_report() -> Callable[[], str]:
    """Return a lambda made inside a function, as a job."""
    return lambda: "built"


def test_a_top_level_class_or_function_is_named_by_its_dotted_path() -> None:
    from queueing.payload import job_name

    assert job_name(Report) == f"{__name__}.Report"
    assert job_name(build_report) == f"{__name__}.build_report"


def test_a_bound_method_is_named_by_its_class_and_method() -> None:
    from queueing.payload import job_name
    from queueing.reporting import short_name

    assert job_name(Report().send) == f"{__name__}:Report.send"
    assert short_name(job_name(Report().send)) == "Report.send"


def test_a_lambda_is_named_by_its_module_and_enclosing_function() -> None:
    from queueing.payload import job_name
    from queueing.reporting import short_name

    name = f"{__name__}:build_report.<locals>.<lambda>"

    assert job_name(build_report()) == name
    assert short_name(name) == name
