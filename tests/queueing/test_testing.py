"""`QueueFake`: recording pushes, asserting on them, and running them on a fake clock."""

from __future__ import annotations

import threading
from typing import Any, Protocol

import pytest

from container import Container
from queueing import Outcome, PayloadError, Queue, Queueable
from queueing.testing import QueueFake, fake_queue


class Mailer:
    """Keeps what it sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []


class SendWelcomeEmail(Queueable):
    """A class job needing a `Mailer`."""

    def __init__(self, mailer: Mailer) -> None:
        self.mailer = mailer

    def handle(self, to: str) -> None:
        self.mailer.sent.append(to)


class Transport(Protocol):
    """How mail leaves: an interface the application must bind."""

    def deliver(self, to: str) -> None: ...


class SendsThroughTransport(Queueable):
    """A class job needing a `Transport`, which nothing binds in these tests."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def handle(self, to: str) -> None:
        self.transport.deliver(to)


class Resize(Queueable):
    """Another job."""

    def handle(self, path: str) -> None:
        pass


class Flaky(Queueable):
    """Fails its first attempt; retried 30 s later."""

    retry_delay = 30
    attempts: list[str] = []

    def handle(self, marker: str) -> None:
        type(self).attempts.append(marker)
        if len(type(self).attempts) == 1:
            raise RuntimeError("first attempt fails")


def notify(channel: str, text: str) -> None:
    """A function job."""


@pytest.fixture
def mailer(container: Container) -> Mailer:
    mailer = Mailer()
    container.instance(Mailer, mailer)
    return mailer


@pytest.fixture
def fake(container: Container) -> QueueFake:
    return QueueFake(container)


# Recording and asserting ------------------------------------------------------------


def test_a_push_is_recorded_not_run(fake: QueueFake, mailer: Mailer) -> None:
    fake.push(SendWelcomeEmail, args=["ada@example.com"])

    fake.assert_pushed(SendWelcomeEmail)
    assert mailer.sent == []


def test_pushed_returns_what_was_recorded(fake: QueueFake) -> None:
    fake.push(SendWelcomeEmail, args=["ada@example.com"], channel="emails")

    [pushed] = fake.pushed(SendWelcomeEmail)
    assert pushed.obj is SendWelcomeEmail
    assert pushed.args == ("ada@example.com",)
    assert pushed.channel == "emails"
    assert pushed.queue == "emails"
    assert pushed.callback == "handle"


def test_assert_pushed_counts_times(fake: QueueFake) -> None:
    fake.push(SendWelcomeEmail, args=["ada@example.com"])
    fake.push(SendWelcomeEmail, args=["grace@example.com"])

    fake.assert_pushed(SendWelcomeEmail, times=2)


def test_assert_pushed_with_wrong_times_fails_saying_how_many(fake: QueueFake) -> None:
    fake.push(SendWelcomeEmail, args=["ada@example.com"])

    with pytest.raises(AssertionError) as failed:
        fake.assert_pushed(SendWelcomeEmail, times=2)

    assert "SendWelcomeEmail was pushed 1 time(s)" in str(failed.value)
    assert "expected 2" in str(failed.value)


def test_assert_pushed_matches_args(fake: QueueFake) -> None:
    fake.push(SendWelcomeEmail, args=["ada@example.com"])

    fake.assert_pushed(SendWelcomeEmail, args=["ada@example.com"])
    fake.assert_pushed(SendWelcomeEmail, args=("ada@example.com",), times=1)


def test_assert_pushed_with_other_args_fails_naming_them(fake: QueueFake) -> None:
    fake.push(SendWelcomeEmail, args=["ada@example.com"])

    with pytest.raises(AssertionError) as failed:
        fake.assert_pushed(SendWelcomeEmail, args=["grace@example.com"])

    message = str(failed.value)
    assert "SendWelcomeEmail was not pushed" in message
    assert "grace@example.com" in message
    assert "test_testing.SendWelcomeEmail" in message  # what was pushed instead


def test_assert_pushed_matches_the_channel(fake: QueueFake) -> None:
    fake.push(Resize, args=["a.png"], channel="images")

    fake.assert_pushed(Resize, channel="images")
    with pytest.raises(AssertionError, match="'channel': 'default'"):
        fake.assert_pushed(Resize, channel="default")


def test_assert_pushed_matches_the_queue(fake: QueueFake) -> None:
    fake.push(Resize, args=["a.png"], queue="images")

    fake.assert_pushed(Resize, queue="images")
    with pytest.raises(AssertionError):
        fake.assert_pushed(Resize, queue="default")


def test_assert_pushed_matches_the_driver(fake: QueueFake) -> None:
    fake.driver("sync").push(Resize, args=["a.png"])

    fake.assert_pushed(Resize, driver="sync")
    with pytest.raises(AssertionError):
        fake.assert_pushed(Resize, driver="async")


def test_assert_pushed_of_something_never_pushed_fails_listing_what_was(
    fake: QueueFake,
) -> None:
    fake.push(Resize, args=["a.png"])

    with pytest.raises(AssertionError) as failed:
        fake.assert_pushed(SendWelcomeEmail)

    assert str(failed.value) == ("SendWelcomeEmail was not pushed; pushed: test_testing.Resize")


def test_assert_pushed_matches_a_pushed_instance_by_its_class(fake: QueueFake) -> None:
    fake.push(Resize())

    fake.assert_pushed(Resize)


def test_assert_pushed_matches_a_function_and_a_name(fake: QueueFake) -> None:
    fake.push(notify, args=["#signups", "hello"])

    fake.assert_pushed(notify, args=["#signups", "hello"])
    fake.assert_pushed("notify")
    fake.assert_pushed("test_testing.notify")


def test_assert_pushed_matches_a_pushed_closure(fake: QueueFake) -> None:
    def remind(text: str) -> None:
        pass

    fake.push(remind, args=["tomorrow"])

    fake.assert_pushed(remind, args=["tomorrow"])


def test_assert_not_pushed_passes_when_absent(fake: QueueFake) -> None:
    fake.push(Resize, args=["a.png"])

    fake.assert_not_pushed(SendWelcomeEmail)
    fake.assert_not_pushed(Resize, args=["b.png"])


def test_assert_not_pushed_fails_when_pushed(fake: QueueFake) -> None:
    fake.push(Resize, args=["a.png"])

    with pytest.raises(AssertionError, match=r"Resize was pushed 1 time\(s\), expected none"):
        fake.assert_not_pushed(Resize)


def test_assert_nothing_pushed_passes_on_a_fresh_fake(fake: QueueFake) -> None:
    fake.assert_nothing_pushed()


def test_assert_nothing_pushed_fails_listing_the_pushes(fake: QueueFake) -> None:
    fake.push(Resize, notify, args=["x"])

    with pytest.raises(AssertionError) as failed:
        fake.assert_nothing_pushed()

    assert str(failed.value) == (
        "expected no pushes; pushed: test_testing.Resize, test_testing.notify"
    )


def test_assert_pushed_count(fake: QueueFake) -> None:
    fake.push(Resize, notify, args=["x"])

    fake.assert_pushed_count(2)
    with pytest.raises(AssertionError, match="expected 3 push"):
        fake.assert_pushed_count(3)


def test_a_job_that_cannot_be_serialized_fails_at_push(fake: QueueFake) -> None:
    lock = threading.Lock()

    with pytest.raises(PayloadError, match="cannot serialize"):
        fake.push(lambda: lock.locked())

    fake.assert_nothing_pushed()


# Running on the fake clock ----------------------------------------------------------


def test_run_due_runs_what_is_due(fake: QueueFake, mailer: Mailer) -> None:
    fake.push(SendWelcomeEmail, args=["ada@example.com"])

    [result] = fake.run_due()

    assert result.outcome is Outcome.DONE
    assert mailer.sent == ["ada@example.com"]


def test_a_delayed_job_is_not_due_until_the_clock_advances(fake: QueueFake, mailer: Mailer) -> None:
    fake.push(SendWelcomeEmail, args=["ada@example.com"], wait="10 minutes")

    assert fake.run_due() == []
    fake.advance("9 minutes")
    assert fake.run_due() == []
    fake.advance("1 minute")
    fake.run_due()

    assert mailer.sent == ["ada@example.com"]


def test_a_pushed_job_records_its_delay(fake: QueueFake) -> None:
    fake.push(Resize, args=["a.png"], wait="2 hours")

    assert fake.pushed(Resize)[0].delay == 7200


def test_run_due_runs_each_job_once(fake: QueueFake, mailer: Mailer) -> None:
    fake.push(SendWelcomeEmail, args=["ada@example.com"])

    fake.run_due()
    fake.run_due()

    assert mailer.sent == ["ada@example.com"]


def test_a_retry_waits_on_the_fake_clock(fake: QueueFake) -> None:
    Flaky.attempts = []
    fake.push(Flaky, args=["x"])

    [first] = fake.run_due()
    assert first.outcome is Outcome.RETRY
    assert fake.run_due() == []
    fake.advance(30)
    [second] = fake.run_due()

    assert second.outcome is Outcome.DONE
    assert Flaky.attempts == ["x", "x"]


def test_run_all_runs_delayed_jobs_and_retries_without_sleeping(
    fake: QueueFake, mailer: Mailer
) -> None:
    Flaky.attempts = []
    fake.push(SendWelcomeEmail, args=["ada@example.com"], wait="1 day")
    fake.push(Flaky, args=["x"])

    results = fake.run_all()

    assert [result.outcome for result in results] == [Outcome.RETRY, Outcome.DONE, Outcome.DONE]
    assert mailer.sent == ["ada@example.com"]
    assert fake.due() == []


def test_the_fake_records_results(fake: QueueFake, mailer: Mailer) -> None:
    fake.push(SendWelcomeEmail, args=["ada@example.com"])

    fake.run_all()

    assert [result.outcome for result in fake.results] == [Outcome.DONE]


def test_a_job_run_by_the_fake_that_fails_is_reported(
    container: Container, failed_store: Any
) -> None:
    fake = QueueFake(container, failed_store=failed_store)

    fake.push(SendsThroughTransport, args=["ada@example.com"])  # no Transport bound
    results = fake.run_all()

    assert results[-1].outcome is Outcome.FAILED
    assert "parameter 'transport: Transport' has no binding" in results[-1].error_text
    assert failed_store.reasons == ["failed"]


# Swapping it in ---------------------------------------------------------------------


def test_fake_queue_swaps_the_queue_in_the_container(container: Container) -> None:
    real = QueueFake(container)  # stands for the application's Queue
    container.instance(Queue, real)

    with fake_queue(container) as fake:
        assert container.make(Queue) is fake
        container.make(Queue).push(Resize, args=["a.png"])

    fake.assert_pushed(Resize)
    real.assert_nothing_pushed()
    assert container.make(Queue) is real


def test_fake_queue_restores_the_queue_when_the_block_raises(container: Container) -> None:
    real = QueueFake(container)
    container.instance(Queue, real)

    with pytest.raises(RuntimeError), fake_queue(container):
        raise RuntimeError("test failed inside the block")

    assert container.make(Queue) is real


def test_fake_queue_swaps_the_bootstrapped_apps_queue(app: Container) -> None:
    real = app.make(Queue)

    with fake_queue(app) as fake:
        app.make(Queue).push(Resize, args=["a.png"])

    fake.assert_pushed(Resize, args=["a.png"])
    assert app.make(Queue) is real
