"""`Queue`: pushing one or many jobs, choosing a driver, refusing bad pushes."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest

from container import Container
from queueing import (
    Envelope,
    JobRunner,
    Outcome,
    PayloadError,
    Queue,
    Queueable,
    Signer,
    UnknownDriverError,
)
from queueing.clock import ManualClock
from queueing.drivers import SyncDriver
from queueing.drivers.base import Driver
from queueing.testing import QueueFake


class Mailer:
    """A service; the tests bind it at different moments."""

    def __init__(self) -> None:
        self.sent: list[str] = []


class SendWelcomeEmail(Queueable):
    """Needs a `Mailer` from the container of whoever runs it."""

    def __init__(self, mailer: Mailer) -> None:
        self.mailer = mailer

    def handle(self, to: str) -> None:
        self.mailer.sent.append(to)


class Resize(Queueable):
    """A second job class."""

    def handle(self, path: str) -> None:
        pass


class Collecting(Driver):
    """A driver that only keeps what it is given, like a broker would."""

    name = "collecting"

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.channels: list[str | None] = []

    def push(self, envelopes: Sequence[Envelope], channel: str | None = None) -> None:
        self.envelopes.extend(envelopes)
        self.channels.append(channel)


@pytest.fixture
def collecting() -> Collecting:
    return Collecting()


@pytest.fixture
def queue(collecting: Collecting, runner: JobRunner, signer: Signer, manual_clock: Any) -> Queue:
    """Pushes to `collecting` by default; `sync` runs on `runner`."""
    sync = SyncDriver(runner)
    return Queue(
        {"collecting": lambda: collecting, "sync": lambda: sync},
        "collecting",
        signer,
        manual_clock,
    )


# Pushing ----------------------------------------------------------------------------


def test_push_several_items_in_one_call_returns_one_id_each(
    queue: Queue, collecting: Collecting
) -> None:
    ids = queue.push(SendWelcomeEmail, Resize, print, args=["x"])

    assert len(ids) == 3
    assert len(set(ids)) == 3
    assert [envelope.id for envelope in collecting.envelopes] == ids
    assert [envelope.name for envelope in collecting.envelopes] == [
        "test_manager.SendWelcomeEmail",
        "test_manager.Resize",
        "builtins.print",
    ]


def test_every_item_of_one_push_gets_the_same_args(
    queue: Queue, collecting: Collecting, signer: Signer
) -> None:
    queue.push(SendWelcomeEmail, Resize, args=["ada@example.com"], kwargs={"k": 1})

    bodies = [signer.load(envelope.body) for envelope in collecting.envelopes]
    assert [(body["args"], body["kwargs"]) for body in bodies] == [
        (("ada@example.com",), {"k": 1}),
        (("ada@example.com",), {"k": 1}),
    ]


def test_push_with_a_wait_makes_the_jobs_due_later(
    queue: Queue, collecting: Collecting, manual_clock: ManualClock
) -> None:
    queue.push(Resize, wait="10 minutes")

    assert collecting.envelopes[0].available_at == manual_clock.now() + 600


def test_push_with_a_channel_picks_the_queue(queue: Queue, collecting: Collecting) -> None:
    queue.push(Resize, channel="images")

    assert collecting.envelopes[0].queue == "images"
    assert collecting.channels == ["images"]


def test_push_without_a_channel_goes_to_the_default_queue(
    queue: Queue, collecting: Collecting
) -> None:
    queue.push(Resize)

    assert collecting.envelopes[0].queue == "default"
    assert collecting.envelopes[0].driver == "collecting"


def test_push_an_instance_and_a_lambda(queue: Queue, collecting: Collecting) -> None:
    ids = queue.push(Resize(), lambda: None)

    assert len(ids) == 2
    assert len(collecting.envelopes) == 2


# Choosing a driver ------------------------------------------------------------------


def test_driver_name_sends_the_push_to_that_driver(
    queue: Queue, collecting: Collecting, container: Container
) -> None:
    mailer = Mailer()
    container.instance(Mailer, mailer)

    queue.driver("sync").push(SendWelcomeEmail, args=["ada@example.com"])

    assert mailer.sent == ["ada@example.com"]
    assert collecting.envelopes == []


def test_driver_does_not_change_the_default(queue: Queue, collecting: Collecting) -> None:
    queue.driver("sync")

    queue.push(Resize, args=["a.png"])

    assert len(collecting.envelopes) == 1
    assert queue.default == "collecting"


def test_names_lists_the_configured_drivers(queue: Queue) -> None:
    assert sorted(queue.names) == ["collecting", "sync"]


def test_an_unknown_driver_is_refused_naming_the_configured_ones(queue: Queue) -> None:
    with pytest.raises(UnknownDriverError) as refused:
        queue.driver("amqp")

    assert "'amqp'" in str(refused.value)
    assert "collecting, sync" in str(refused.value)


def test_an_unknown_default_driver_is_refused(signer: Signer) -> None:
    with pytest.raises(UnknownDriverError, match="'redis'"):
        Queue({"sync": lambda: None}, "redis", signer)  # type: ignore[dict-item]


def test_a_driver_is_built_once_on_first_use(signer: Signer) -> None:
    built: list[Collecting] = []

    def build() -> Collecting:
        built.append(Collecting())
        return built[-1]

    queue = Queue({"collecting": build}, "collecting", signer)
    assert built == []

    queue.push(Resize)
    queue.driver("collecting").push(Resize)

    assert len(built) == 1
    assert len(built[0].envelopes) == 2


# Refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize("wait", ["soon", -5, True, "10 minutes ago"])
def test_a_bad_wait_is_refused_and_nothing_is_queued(
    queue: Queue, collecting: Collecting, wait: Any
) -> None:
    with pytest.raises(ValueError, match=repr(wait)):
        queue.push(SendWelcomeEmail, Resize, wait=wait)

    assert collecting.envelopes == []


@pytest.mark.parametrize("item", [42, "SendWelcomeEmail", None, object()])
def test_a_bad_item_is_refused_and_nothing_is_queued(
    queue: Queue, collecting: Collecting, item: Any
) -> None:
    with pytest.raises(ValueError, match="cannot queue"):
        queue.push(SendWelcomeEmail, item)

    assert collecting.envelopes == []


def test_a_push_of_no_items_is_refused(queue: Queue, collecting: Collecting) -> None:
    with pytest.raises(ValueError, match="at least one job"):
        queue.push(args=["x"])

    assert collecting.envelopes == []


@pytest.mark.parametrize(
    ("option", "value"),
    [("args", "ada@example.com"), ("args", 5), ("kwargs", ["a"]), ("callback", "not a name")],
)
def test_bad_push_options_are_refused_and_nothing_is_queued(
    queue: Queue, collecting: Collecting, option: str, value: Any
) -> None:
    with pytest.raises(ValueError, match=option):
        queue.push(Resize, **{option: value})

    assert collecting.envelopes == []


def test_an_item_that_cannot_be_serialized_queues_nothing(
    queue: Queue, collecting: Collecting
) -> None:
    lock = threading.Lock()

    with pytest.raises(PayloadError):
        queue.push(Resize, lambda: lock.acquire())

    assert collecting.envelopes == []


def test_the_fake_queues_nothing_after_a_refused_push(container: Container) -> None:
    fake = QueueFake(container)

    with pytest.raises(ValueError):
        fake.push(Resize, wait="whenever")

    fake.assert_nothing_pushed()


def test_a_bad_wait_runs_nothing_on_the_sync_driver(queue: Queue, container: Container) -> None:
    mailer = Mailer()
    container.instance(Mailer, mailer)

    with pytest.raises(ValueError):
        queue.driver("sync").push(SendWelcomeEmail, args=["ada@example.com"], wait="later")

    assert mailer.sent == []


# Where the job is built -------------------------------------------------------------


def test_a_job_pushed_before_its_service_is_bound_runs_once_it_is(
    collecting: Collecting, signer: Signer, failed_store: Any
) -> None:
    pusher = Queue({"collecting": lambda: collecting}, "collecting", signer)
    worker_container = Container()
    worker = JobRunner(worker_container, signer, failed_store, ManualClock())

    pusher.push(SendWelcomeEmail, args=["ada@example.com"])
    mailer = Mailer()
    worker_container.instance(Mailer, mailer)  # bound only after the push
    result = worker.run_until_settled(collecting.envelopes[0])

    assert result.outcome is Outcome.DONE
    assert mailer.sent == ["ada@example.com"]


def test_a_job_pushed_before_its_service_is_bound_runs_on_the_fake(
    container: Container,
) -> None:
    fake = QueueFake(container)

    fake.push(SendWelcomeEmail, args=["ada@example.com"])
    mailer = Mailer()
    container.instance(Mailer, mailer)
    [result] = fake.run_all()

    assert result.outcome is Outcome.DONE
    assert mailer.sent == ["ada@example.com"]
