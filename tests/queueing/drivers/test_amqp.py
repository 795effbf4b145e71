"""The `amqp` driver on a real RabbitMQ: pushes kept, jobs acknowledged once settled.

Every test works on queues of its own (random names) and deletes them after;
`markers_dir` comes from this folder's conftest.
Worker tests run `craft queue:work --driver amqp` from the repository root,
configured through the environment that `config/queue.py` reads.
"""

from __future__ import annotations

import base64
import contextlib
import os
import pickle
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pika
import pika.exceptions
import pytest

from container import Container
from providers.configuration import Configuration
from providers.queue_provider import DRIVERS, read_queue_config
from queueing import FailedJob, JobRunner, Outcome, Queue, Signer
from queueing.connections import Connections
from queueing.delay import MAX_WAIT_SECONDS
from queueing.drivers import amqp as amqp_driver
from queueing.drivers.amqp import (
    AmqpDriver,
    AmqpUnavailableError,
    PublishRefusedError,
    envelope_from_message,
    holding_delay,
    holding_queue_name,
    message_properties,
)
from queueing.failed import DatabaseFailedJobStore
from queueing.operations import retry_failed
from queueing.payload import MAGIC, Envelope
from queueing.schema import metadata
from queueing.worker import Worker, WorkerOptions
from tests.database_fixtures import craft as run_craft
from tests.queueing.drivers import jobs_for_amqp as jobs
from tests.services import require, services_required

ROOT = Path(__file__).resolve().parents[3]
CRAFT = Path(sys.executable).with_name("craft")


class RecordingStore:
    """A failed-job store that keeps failures in a list."""

    def __init__(self) -> None:
        self.failures: list[FailedJob] = []

    def store(self, failure: FailedJob) -> None:
        """Keep `failure`."""
        self.failures.append(failure)


class Broker:
    """A plain pika connection for looking at queues the way an operator would."""

    def __init__(self) -> None:
        self.connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
        self.channel = self.connection.channel()
        self.names: set[str] = set()

    def name(self) -> str:
        """Return a fresh queue name, deleted at the end of the test."""
        name = f"test-amqp-{uuid.uuid4().hex[:12]}"
        self.names.add(name)
        return name

    def delayed(self, queue: str, seconds: float) -> None:
        """Delete at the end the holding queues a delay of about `seconds` may use.

        The delay left when the message is published is a little shorter than
        the one asked for (by up to 0.1 s here), which may round differently.
        """
        for late in range(100):
            self.names.add(holding_queue_name(queue, holding_delay(seconds - late / 1000)))

    def answers(self) -> bool:
        """Say whether the broker accepts an AMQP connection again."""
        try:
            self._channel()
        except pika.exceptions.AMQPConnectionError:
            return False
        return True

    def ready(self, queue: str) -> int:
        """Return the ready messages of `queue`."""
        return self._channel().queue_declare(queue, passive=True).method.message_count

    def get(self, queue: str) -> tuple[Any, Any, bytes] | None:
        """Take one message without acknowledging it (it returns when we close)."""
        method, properties, body = self._channel().basic_get(queue, auto_ack=False)
        return None if method is None else (method, properties, body)

    def publish(
        self,
        queue: str,
        body: bytes,
        headers: dict[str, Any] | None = None,
        **properties: Any,
    ) -> None:
        """Publish raw bytes to `queue`, as anyone with broker access could."""
        self._channel().queue_declare(queue, durable=True)
        self._channel().basic_publish(
            "", queue, body, pika.BasicProperties(delivery_mode=2, headers=headers, **properties)
        )

    def close(self) -> None:
        """Delete the test's queues and close."""
        for name in self.names:
            with contextlib.suppress(pika.exceptions.AMQPError):
                self._channel().queue_delete(name)
        if self.connection.is_open:
            self.connection.close()

    def _channel(self) -> Any:
        # A connection the broker dropped (a restart) is noticed here and replaced.
        with contextlib.suppress(pika.exceptions.AMQPError, OSError):
            if self.connection.is_open:
                self.connection.process_data_events(0)
        if not self.connection.is_open:
            self.connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
        if not self.channel.is_open:
            self.channel = self.connection.channel()
        return self.channel


@pytest.fixture
def broker() -> Iterator[Broker]:
    """RabbitMQ, seen through a plain connection; the test's queues are deleted after."""
    require("rabbitmq")
    broker = Broker()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
def key() -> str:
    """A fresh application key."""
    return "base64:" + base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture
def queue_name(broker: Broker) -> str:
    """The test's queue."""
    return broker.name()


@pytest.fixture
def drivers() -> Iterator[Callable[..., AmqpDriver]]:
    """Make amqp drivers; each is closed after the test."""
    made: list[AmqpDriver] = []

    def make(**settings: Any) -> AmqpDriver:
        settings.setdefault("prefetch", 1)  # one at a time unless a test says otherwise
        driver = AmqpDriver(**settings)
        made.append(driver)
        return driver

    yield make
    for driver in made:
        driver.close()


@pytest.fixture
def driver(drivers: Callable[..., AmqpDriver], queue_name: str) -> AmqpDriver:
    """An amqp driver whose default queue is the test's queue."""
    return drivers(queue=queue_name)


@pytest.fixture
def store() -> RecordingStore:
    """Where the runner stores failed and refused jobs."""
    return RecordingStore()


@pytest.fixture
def queue(driver: AmqpDriver, key: str) -> Queue:
    """A `Queue` pushing to `driver`."""
    return queue_on(driver, key)


@pytest.fixture
def runner(key: str, store: RecordingStore) -> JobRunner:
    """The execution path, with the same key as `queue`."""
    return JobRunner(Container(), Signer(key), store)


def queue_on(driver: AmqpDriver, key: str) -> Queue:
    """A `Queue` pushing to `driver`, signing with `key`."""
    return Queue({"amqp": lambda: driver}, "amqp", Signer(key))


def work(driver: AmqpDriver, runner: JobRunner, queue: str, **options: Any) -> list[str]:
    """Run a worker in this thread until a limit in `options`; return its lines."""
    lines: list[str] = []
    Worker(
        driver,
        runner,
        WorkerOptions(queues=[queue], sleep=0.05, **options),
        output=lines.append,
        errors=lines.append,
    ).run()
    return lines


def reserve(driver: AmqpDriver, queue: str, timeout: float = 10) -> Any:
    """Reserve a message of `queue`, waiting for it to arrive."""
    deadline = time.monotonic() + timeout
    while (held := driver.reserve([queue])) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing arrived on {queue} (waited {timeout:g}s)")
        driver.wait_for_jobs([queue], None, 0.1, threading.Event())
    return held


def wait_until(condition: Callable[[], Any], timeout: float, message: str) -> Any:
    """Poll `condition` until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} (waited {timeout:g}s)")
        time.sleep(0.02)
    return value


def settled(driver: AmqpDriver, broker: Broker, queue: str) -> bool:
    """Close `driver` and say whether `queue` is empty.

    Closing hands every unacknowledged message back to the queue, so an empty
    queue afterwards means every message was acknowledged, not just delivered.
    """
    driver.close()
    return broker.get(queue) is None


@pytest.fixture
def sqlite_failed_store(tmp_path: Path) -> Iterator[DatabaseFailedJobStore]:
    """A real `failed_jobs` table in a SQLite file of the test (`failed.sqlite`)."""
    connections = Connections({"sqlite": f"sqlite:///{tmp_path / 'failed.sqlite'}"}, "sqlite")
    metadata.create_all(connections.engine("sqlite"))
    try:
        yield DatabaseFailedJobStore(connections, "sqlite")
    finally:
        connections.close()


@pytest.fixture
def storing_runner(key: str, sqlite_failed_store: DatabaseFailedJobStore) -> JobRunner:
    """The execution path, with the same key as `queue`, storing failures in `failed_jobs`."""
    return JobRunner(Container(), Signer(key), sqlite_failed_store)


def craft_environment(key: str, tmp_path: Path, **settings: str) -> dict[str, str]:
    """The environment of a `craft` process: our key, the test's SQLite file, `settings`."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("APP_", "DB_", "QUEUE_"))
    }
    environment.update(APP_KEY=key, DB_SQLITE_URL=f"sqlite:///{tmp_path / 'failed.sqlite'}")
    return {**environment, **settings}


def craft(
    environment: dict[str, str], *arguments: str, answer: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `craft` from the repository root and return what it did."""
    return run_craft(ROOT, environment, *arguments, input=answer)


def kill_socket_on_publish(
    monkeypatch: pytest.MonkeyPatch, failing: Callable[[int], bool]
) -> list[int]:
    """Cut the TCP connection under the driver's publishes that `failing(n)` picks.

    The socket is shut down just before the n-th `basic_publish` (counted
    from 1) sends its frames, so pika meets a dead connection as it would
    after a network failure. Single pushes and batches both publish through
    pika's `Channel.basic_publish`. Returns the list of publish numbers tried.
    """
    real = pika.channel.Channel.basic_publish
    tried: list[int] = []

    def publish(channel: pika.channel.Channel, *arguments: Any, **keywords: Any) -> None:
        tried.append(len(tried) + 1)
        if failing(tried[-1]):
            # A batch's later publishes find the socket already shut down.
            with contextlib.suppress(OSError):
                channel.connection._transport._sock.shutdown(socket.SHUT_RDWR)
        real(channel, *arguments, **keywords)

    monkeypatch.setattr(pika.channel.Channel, "basic_publish", publish)
    return tried


def rabbitmqctl(*arguments: str) -> None:
    """Run `rabbitmqctl`; skip (or fail under QUEUE_REQUIRE_SERVICES=1) without it."""
    if shutil.which("rabbitmqctl") is None:
        reason = "rabbitmqctl is not installed here"
        if services_required():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    subprocess.run(["rabbitmqctl", *arguments], check=True, capture_output=True, timeout=60)


# Worker processes --------------------------------------------------------------------------


class WorkerProcess:
    """A `craft queue:work --driver amqp` process writing to log files."""

    def __init__(self, folder: Path, environment: dict[str, str], *arguments: str) -> None:
        number = len(list(folder.glob("worker-*.out")))
        self.stdout = folder / f"worker-{number}.out"
        self.stderr = folder / f"worker-{number}.err"
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.process = subprocess.Popen(
                [str(CRAFT), "queue:work", "--driver", "amqp", *arguments],
                cwd=ROOT,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )

    def output(self) -> str:
        """Everything the worker printed so far, stdout then stderr."""
        return self.stdout.read_text() + self.stderr.read_text()

    def wait(self, timeout: float) -> int:
        """Wait for the worker to exit; fail with its output if it does not."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired as error:
            self.kill()
            raise AssertionError(
                f"worker still running after {timeout}s:\n{self.output()}"
            ) from error

    def kill(self) -> None:
        """SIGKILL the worker if it runs, and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def start_worker(tmp_path: Path, key: str) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers from the repository root; each still running is killed after."""
    started: list[WorkerProcess] = []
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("APP_", "DB_", "QUEUE_"))
    }
    environment.update(
        APP_KEY=key,
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        # Failed jobs go to a SQLite file of the test, never the project's.
        DB_SQLITE_URL=f"sqlite:///{tmp_path / 'worker.sqlite'}",
    )

    def start(*arguments: str, **settings: str) -> WorkerProcess:
        worker = WorkerProcess(tmp_path, {**environment, **settings}, *arguments)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


# Pushing and reserving ---------------------------------------------------------------------


def test_push_then_reserve_returns_the_envelope_with_one_attempt_and_acknowledge_removes_it(
    queue: Queue, driver: AmqpDriver, runner: JobRunner, broker: Broker, queue_name: str
) -> None:
    [job_id] = queue.push(jobs.Record, args=["/nowhere", "a"])

    held = reserve(driver, queue_name)

    envelope = held.envelope
    assert (envelope.id, envelope.queue, envelope.driver, envelope.attempts) == (
        job_id,
        queue_name,
        "amqp",
        1,
    )
    assert envelope.name == "tests.queueing.drivers.jobs_for_amqp.Record"
    job = runner.signer.load(envelope.body)
    assert (job["obj"], job["args"]) == (jobs.Record, ("/nowhere", "a"))
    assert driver.acknowledge(held)
    assert driver.counts()[0].pending == 0
    assert not driver.waiting([queue_name])


def test_messages_are_persistent_in_a_durable_queue_with_the_metadata_in_headers(
    queue: Queue, broker: Broker, queue_name: str
) -> None:
    [job_id] = queue.push(jobs.Record, args=["/nowhere", "a"])

    method, properties, body = broker.get(queue_name) or pytest.fail("no message")

    assert properties.delivery_mode == 2
    assert properties.message_id == job_id
    assert properties.type == "tests.queueing.drivers.jobs_for_amqp.Record"
    assert "job-name" not in properties.headers  # the name fits in `type`
    assert properties.headers["job-attempts"] == 0
    assert properties.headers["job-created"]
    assert properties.headers["job-signature"] == body[len(MAGIC) : len(MAGIC) + 32].hex()
    assert body.startswith(MAGIC)
    assert not method.redelivered
    # Declaring the queue as not durable contradicts how it exists.
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="durable"):
        broker.channel.queue_declare(queue_name, durable=False)


def test_push_names_the_queue_by_channel_and_one_push_sends_many_jobs(
    queue: Queue, driver: AmqpDriver, broker: Broker
) -> None:
    high = broker.name()

    ids = queue.push(jobs.Numbered(1), jobs.Numbered(2), args=["/nowhere"], channel=high)

    assert broker.ready(high) == 2
    taken = []
    for _ in ids:
        held = reserve(driver, high)
        taken.append((held.envelope.id, held.envelope.queue))
        assert driver.acknowledge(held)
    assert taken == [(job_id, high) for job_id in ids]


@pytest.mark.parametrize("count", [1, 3], ids=["single", "batch"])
def test_a_queue_deleted_after_it_was_declared_is_declared_again_on_push(
    queue: Queue, broker: Broker, queue_name: str, count: int
) -> None:
    queue.push(jobs.Record, args=["/nowhere", "a"])
    broker.channel.queue_delete(queue_name)

    queue.push(*[jobs.Record] * count, args=["/nowhere", "b"])

    assert broker.ready(queue_name) == count


@pytest.mark.parametrize("count", [1, 3], ids=["single", "batch"])
def test_a_message_the_broker_cannot_route_raises_at_push(
    drivers: Callable[..., AmqpDriver],
    key: str,
    broker: Broker,
    monkeypatch: pytest.MonkeyPatch,
    count: int,
) -> None:
    driver = drivers(queue=broker.name(), publish_attempts=2)
    queue = queue_on(driver, key)
    # Nothing declares the queue, so the mandatory message has nowhere to go.
    monkeypatch.setattr("queueing.drivers.amqp._Publisher.declare", lambda *args, **kwargs: None)

    with pytest.raises(
        PublishRefusedError, match=rf"did not take the message.*; {count} job\(s\) not confirmed"
    ):
        queue.push(*[jobs.Record] * count, args=["/nowhere", "a"])


def test_a_queue_the_broker_refuses_to_declare_raises_at_push_and_the_driver_goes_on(
    queue: Queue, broker: Broker, queue_name: str
) -> None:
    # The queue exists with other arguments, so declaring it our way is refused.
    broker.channel.queue_declare(queue_name, durable=True, arguments={"x-max-length": 10})
    elsewhere = broker.name()

    with pytest.raises(PublishRefusedError, match=r"406 PRECONDITION_FAILED.*1 job"):
        queue.push(jobs.Numbered(1), args=["/nowhere"])

    queue.push(jobs.Numbered(2), args=["/nowhere"], channel=elsewhere)
    assert (broker.ready(queue_name), broker.ready(elsewhere)) == (0, 1)


def test_an_unreachable_broker_raises_a_clear_error_on_push_and_reserve(
    drivers: Callable[..., AmqpDriver], key: str
) -> None:
    driver = drivers(port=1, connection_attempts=1, publish_attempts=2)
    queue = queue_on(driver, key)

    with pytest.raises(AmqpUnavailableError, match=r"cannot reach RabbitMQ at 127\.0\.0\.1:1/"):
        queue.push(jobs.Record, args=["/nowhere", "a"])
    with pytest.raises(AmqpUnavailableError, match=r"127\.0\.0\.1:1/"):
        driver.reserve(["default"])


def test_pushing_from_8_threads_delivers_every_job_once_over_one_connection_per_thread(
    queue: Queue, driver: AmqpDriver, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[int] = []
    real = pika.BlockingConnection

    def counting(parameters: Any) -> Any:
        opened.append(threading.get_ident())
        return real(parameters)

    monkeypatch.setattr("queueing.drivers.amqp.pika.BlockingConnection", counting)
    pushed: list[str] = []
    problems: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def push_many() -> None:
        start.wait()
        try:
            for number in range(40):
                ids = queue.push(jobs.Numbered(number), args=["/nowhere"])
                with lock:
                    pushed.extend(ids)
        except BaseException as error:
            problems.append(error)

    threads = [threading.Thread(target=push_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert problems == []
    assert len(opened) == len(set(opened)) == 8
    taken = []
    while len(taken) < len(pushed):
        held = reserve(driver, queue_name)
        taken.append(held.envelope.id)
        assert driver.acknowledge(held)
    assert sorted(taken) == sorted(pushed)
    assert len(set(pushed)) == 320
    assert not driver.waiting([queue_name])


def test_a_bulk_push_beyond_the_confirm_window_queues_every_job_once_in_order(
    queue: Queue, driver: AmqpDriver, broker: Broker, queue_name: str
) -> None:
    count = amqp_driver.CONFIRM_WINDOW * 2 + 7

    ids = queue.push(*[jobs.Numbered(n) for n in range(count)], args=["/nowhere"])

    # push() returned: the broker has confirmed every one of them.
    assert broker.ready(queue_name) == count
    assert taken_ids(driver, queue_name, count) == ids


def test_a_delayed_bulk_push_waits_in_a_holding_queue_then_every_job_runs(
    queue: Queue,
    driver: AmqpDriver,
    runner: JobRunner,
    broker: Broker,
    queue_name: str,
    markers_dir: Path,
) -> None:
    broker.delayed(queue_name, 1)
    pushed_at = time.time()

    queue.push(*[jobs.Record] * 5, args=[str(markers_dir), "later"], wait=1)

    [counts] = driver.counts()
    assert (counts.pending, counts.delayed) == (0, 5)
    work(driver, runner, queue_name, max_jobs=5)
    started = jobs.marker_times(markers_dir, "later")
    assert len(started) == 5
    assert all(0.9 <= at - pushed_at < 4 for at in started)


def test_a_connection_lost_mid_push_resends_only_the_jobs_not_confirmed(
    queue: Queue,
    driver: AmqpDriver,
    broker: Broker,
    queue_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A window of one: each message of the batch waits for its confirm
    # before the next goes out, so which were confirmed is known exactly.
    monkeypatch.setattr(amqp_driver, "CONFIRM_WINDOW", 1)
    tried = kill_socket_on_publish(monkeypatch, lambda number: number == 2)

    ids = queue.push(jobs.Numbered(1), jobs.Numbered(2), jobs.Numbered(3), args=["/nowhere"])

    # The first job was confirmed before the connection died: only the
    # second and third are published (again) on the new connection.
    assert tried == [1, 2, 3, 4]
    assert broker.ready(queue_name) == 3
    assert taken_ids(driver, queue_name, len(ids)) == ids


def test_a_batch_whose_connection_dies_before_its_confirms_is_sent_again_and_each_job_arrives(
    queue: Queue,
    driver: AmqpDriver,
    broker: Broker,
    queue_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tried = kill_socket_on_publish(monkeypatch, lambda number: number == 2)

    ids = queue.push(jobs.Numbered(1), jobs.Numbered(2), jobs.Numbered(3), args=["/nowhere"])

    # The three went out back to back on a connection that died before any
    # confirm came back, so all three are published again.
    assert tried == [1, 2, 3, 4, 5, 6]
    assert broker.ready(queue_name) == 3
    assert taken_ids(driver, queue_name, len(ids)) == ids


def taken_ids(driver: AmqpDriver, queue_name: str, count: int) -> list[str]:
    """Reserve and acknowledge `count` jobs; return their ids in the order they came."""
    taken = []
    for _ in range(count):
        held = reserve(driver, queue_name)
        taken.append(held.envelope.id)
        assert driver.acknowledge(held)
    return taken


def test_a_push_whose_connection_keeps_dying_raises_amqp_unavailable_and_queues_nothing(
    drivers: Callable[..., AmqpDriver],
    key: str,
    broker: Broker,
    queue_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    driver = drivers(queue=queue_name, publish_attempts=3)
    queue = queue_on(driver, key)
    tried = kill_socket_on_publish(monkeypatch, lambda number: True)

    with pytest.raises(
        AmqpUnavailableError, match=r"after 3 attempt\(s\).*; 2 job\(s\) not confirmed"
    ):
        queue.push(jobs.Numbered(1), jobs.Numbered(2), args=["/nowhere"])

    # Each attempt publishes both jobs back to back on a connection that dies.
    assert tried == [1, 2, 3, 4, 5, 6]
    assert broker.get(queue_name) is None
    # Once the network is back, the same driver pushes again.
    monkeypatch.undo()
    queue.push(jobs.Numbered(3), args=["/nowhere"])
    assert broker.ready(queue_name) == 1


@pytest.mark.parametrize("count", [1, 3], ids=["single", "batch"])
def test_a_message_the_broker_nacks_raises_at_push(
    drivers: Callable[..., AmqpDriver], key: str, broker: Broker, queue_name: str, count: int
) -> None:
    driver = drivers(queue=queue_name, publish_attempts=2)
    queue = queue_on(driver, key)
    driver.check()
    # A full queue that rejects publishes makes the broker nack every message.
    policy = f"{queue_name}-full"
    rabbitmqctl(
        "set_policy",
        "--apply-to",
        "queues",
        policy,
        f"^{queue_name}$",
        '{"max-length": 0, "overflow": "reject-publish"}',
    )
    try:
        with pytest.raises(
            PublishRefusedError,
            match=rf"NackError.*after 2 attempt\(s\); {count} job\(s\) not confirmed",
        ):
            queue.push(*[jobs.Numbered(n) for n in range(count)], args=["/nowhere"])
    finally:
        rabbitmqctl("clear_policy", policy)

    assert broker.get(queue_name) is None


# Settling ----------------------------------------------------------------------------------


def test_release_with_the_attempt_given_back_redelivers_the_same_job(
    queue: Queue, driver: AmqpDriver, queue_name: str
) -> None:
    [job_id] = queue.push(jobs.Numbered(7), args=["/nowhere"])
    held = reserve(driver, queue_name)

    assert driver.release(held, 0.0, count_attempt=False)

    again = reserve(driver, queue_name)
    assert (again.envelope.id, again.envelope.attempts) == (job_id, 1)
    assert again.envelope.body == held.envelope.body


def test_a_job_failing_its_last_attempt_is_stored_then_acknowledged(
    queue: Queue,
    driver: AmqpDriver,
    runner: JobRunner,
    store: RecordingStore,
    broker: Broker,
    queue_name: str,
) -> None:
    broker.delayed(queue_name, 3.0)
    [job_id] = queue.push(jobs.FailFirst, args=["/nowhere/missing", "x"])

    lines = work(driver, runner, queue_name, max_jobs=2)

    # Both attempts fail (the marker folder does not exist); the second is the last.
    assert [failure.reason for failure in store.failures] == ["failed"]
    assert store.failures[0].envelope.id == job_id
    assert store.failures[0].envelope.attempts == 2
    assert any("failed" in line for line in lines)
    assert not driver.waiting([queue_name])
    assert broker.ready(queue_name) == 0


def test_a_worker_holds_no_more_unacknowledged_messages_than_prefetch(
    drivers: Callable[..., AmqpDriver], key: str, broker: Broker, queue_name: str
) -> None:
    driver = drivers(queue=queue_name, prefetch=2)
    queue = queue_on(driver, key)
    queue.push(*[jobs.Numbered(number) for number in range(4)], args=["/nowhere"])

    held = reserve(driver, queue_name)

    wait_until(lambda: broker.ready(queue_name) == 2, 5, "the consumer took more or fewer than 2")
    time.sleep(0.3)
    assert broker.ready(queue_name) == 2
    assert driver.acknowledge(held)
    wait_until(lambda: broker.ready(queue_name) == 1, 5, "the acknowledgement freed no room")


def test_acknowledgements_in_any_order_settle_every_message_on_one_channel(
    drivers: Callable[..., AmqpDriver],
    key: str,
    broker: Broker,
    queue_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = drivers(queue=queue_name, prefetch=10)
    queue = queue_on(driver, key)
    queue.push(*[jobs.Numbered(number) for number in range(6)], args=["/nowhere"])
    held = [reserve(driver, queue_name) for _ in range(6)]

    # Later deliveries first, then runs that step over them: a `multiple`
    # acknowledgement must never name a delivery twice (the broker would
    # close the channel and deliver everything again).
    for index in (2, 0, 1, 5, 3, 4):
        assert driver.acknowledge(held[index])
        time.sleep(0.05)

    assert settled(driver, broker, queue_name)
    assert "lost the consumer connection" not in caplog.text


def test_a_job_running_long_gives_back_the_messages_prefetched_behind_it(
    drivers: Callable[..., AmqpDriver], key: str, broker: Broker, queue_name: str
) -> None:
    driver = drivers(queue=queue_name, prefetch=5)
    queue = queue_on(driver, key)
    pushed = queue.push(*[jobs.Numbered(number) for number in range(8)], args=["/nowhere"])
    held = reserve(driver, queue_name)
    wait_until(lambda: broker.ready(queue_name) == 3, 5, "the consumer did not prefetch 5")

    # What the worker's keeper calls once the job has run `extend_every` seconds.
    assert driver.extend_every == amqp_driver.LONG_JOB_SECONDS
    assert driver.extend(held)

    # The 4 buffered behind it go back, with no attempt spent, and no new
    # message comes while the long job runs.
    assert broker.ready(queue_name) == 7
    time.sleep(0.3)
    assert broker.ready(queue_name) == 7
    assert driver.reserve([queue_name]) is None
    assert driver.acknowledge(held)
    # After the long job, messages come one at a time...
    second = reserve(driver, queue_name)
    assert (second.envelope.attempts, second.envelope.id in pushed) == (1, True)
    wait_until(lambda: broker.ready(queue_name) == 6, 5, "the next message did not come")
    # ...so a second long job in a row has nothing to give back.
    assert driver.extend(second)
    assert broker.ready(queue_name) == 6
    assert driver.acknowledge(second)
    third = reserve(driver, queue_name)
    wait_until(lambda: broker.ready(queue_name) == 5, 5, "the next message did not come")
    # A job that ends without running long brings the full prefetch back.
    assert driver.acknowledge(third)
    wait_until(lambda: broker.ready(queue_name) == 0, 5, "prefetching did not resume")
    driver.close()
    wait_until(lambda: broker.ready(queue_name) == 5, 5, "the 5 jobs left did not come back")


def test_a_worker_busy_with_a_long_job_lets_another_worker_run_the_jobs_behind_it(
    drivers: Callable[..., AmqpDriver],
    key: str,
    runner: JobRunner,
    queue_name: str,
    markers_dir: Path,
) -> None:
    first = drivers(queue=queue_name, prefetch=10)
    queue = queue_on(first, key)
    queue.push(jobs.SlowRecord, args=[str(markers_dir), "slow", 3.0])
    queue.push(*[jobs.Record] * 4, args=[str(markers_dir), "quick"])
    busy = threading.Thread(target=work, args=(first, runner, queue_name), kwargs={"max_jobs": 1})
    busy.start()
    wait_until(
        lambda: jobs.markers(markers_dir, "slow", "started"), 10, "the slow job did not start"
    )

    second = drivers(queue=queue_name, prefetch=10)
    work(second, runner, queue_name, max_jobs=4)
    busy.join(timeout=30)

    [slow_done] = jobs.marker_times(markers_dir, "slow")
    quick = jobs.marker_times(markers_dir, "quick")
    assert len(quick) == 4
    assert max(quick) < slow_done


def test_a_stopping_worker_gives_back_its_prefetched_messages_with_no_attempt_spent(
    drivers: Callable[..., AmqpDriver],
    key: str,
    runner: JobRunner,
    broker: Broker,
    queue_name: str,
    markers_dir: Path,
) -> None:
    driver = drivers(queue=queue_name, prefetch=5)
    queue = queue_on(driver, key)
    pushed = queue.push(*[jobs.Numbered(number) for number in range(6)], args=[str(markers_dir)])

    lines = work(driver, runner, queue_name, max_jobs=2)

    assert sum(" done " in line for line in lines) == 2, lines
    wait_until(lambda: broker.ready(queue_name) == 4, 10, "prefetched messages were not given back")
    left = [broker.get(queue_name) for _ in range(4)]
    assert all(message is not None for message in left)
    assert {message[1].message_id for message in left} <= set(pushed)
    # Published anew with their attempts as they were. A delivery pika had read
    # but not yet handed over when the consumer was cancelled is requeued by
    # pika itself, flagged redelivered; at most the last in flight can be that.
    assert [message[1].headers["job-attempts"] for message in left] == [0] * 4
    assert sum(message[0].redelivered for message in left) <= 1


def test_a_retry_waits_in_a_holding_queue_with_the_same_body_and_its_attempts_in_the_headers(
    queue: Queue, driver: AmqpDriver, broker: Broker, queue_name: str
) -> None:
    broker.delayed(queue_name, 5.0)
    [job_id] = queue.push(jobs.Numbered(7), args=["/nowhere"])
    held = reserve(driver, queue_name)

    assert driver.release(held, 5.0)

    holding = holding_queue_name(queue_name, holding_delay(5.0))
    _method, properties, body = broker.get(holding) or pytest.fail("no message is held")
    assert properties.message_id == job_id
    assert properties.headers["job-attempts"] == 1
    # The same signed body: the instance goes back with the state it was pushed with.
    assert body == held.envelope.body
    assert settled(driver, broker, queue_name)


def test_a_job_giving_up_has_failed_called_is_stored_and_is_acknowledged(
    queue: Queue,
    driver: AmqpDriver,
    broker: Broker,
    queue_name: str,
    markers_dir: Path,
    sqlite_failed_store: DatabaseFailedJobStore,
    storing_runner: JobRunner,
) -> None:
    [job_id] = queue.push(jobs.GivesUp, args=[str(markers_dir), "doomed"])

    lines = work(driver, storing_runner, queue_name, max_jobs=1)

    [failed_marker] = jobs.markers(markers_dir, "doomed", "failed")
    assert failed_marker.read_text() == f"1 {queue_name} this job always fails"
    [stored] = sqlite_failed_store.all()
    assert (stored.uuid, stored.driver, stored.queue, stored.reason, stored.attempts) == (
        job_id,
        "amqp",
        queue_name,
        "failed",
        1,
    )
    assert any("failed" in line and job_id in line for line in lines)
    assert settled(driver, broker, queue_name)


def test_a_failing_plain_function_is_stored_as_failed_and_the_worker_goes_on(
    queue: Queue,
    driver: AmqpDriver,
    broker: Broker,
    queue_name: str,
    markers_dir: Path,
    sqlite_failed_store: DatabaseFailedJobStore,
    storing_runner: JobRunner,
) -> None:
    [function_id] = queue.push(jobs.explode, args=[str(markers_dir), "boom"])
    queue.push(jobs.Record, args=[str(markers_dir), "next"])

    lines = work(driver, storing_runner, queue_name, max_jobs=2)

    # A function runs once: no retry, no callback.
    assert len(jobs.markers(markers_dir, "boom", "attempt")) == 1
    assert len(jobs.markers(markers_dir, "next")) == 1
    [stored] = sqlite_failed_store.all()
    assert (stored.uuid, stored.name, stored.reason, stored.exception_type) == (
        function_id,
        "tests.queueing.drivers.jobs_for_amqp.explode",
        "failed",
        "ValueError",
    )
    assert any("ValueError: a plain function failed" in line for line in lines)
    assert settled(driver, broker, queue_name)


# Delays ------------------------------------------------------------------------------------


def test_a_job_delayed_1s_pushed_after_one_delayed_5s_runs_first(
    queue: Queue,
    driver: AmqpDriver,
    runner: JobRunner,
    broker: Broker,
    queue_name: str,
    markers_dir: Path,
) -> None:
    broker.delayed(queue_name, 5)
    broker.delayed(queue_name, 1)
    pushed_at = time.time()
    queue.push(jobs.Record, args=[str(markers_dir), "late"], wait="5 seconds")
    queue.push(jobs.Record, args=[str(markers_dir), "soon"], wait=1)
    [counts] = driver.counts()
    assert (counts.pending, counts.delayed) == (0, 2)

    work(driver, runner, queue_name, max_jobs=2)

    [soon] = jobs.marker_times(markers_dir, "soon")
    [late] = jobs.marker_times(markers_dir, "late")
    assert 0.9 <= soon - pushed_at < 3
    assert 4.9 <= late - pushed_at < 8


def test_a_retry_delay_does_not_hold_back_the_jobs_behind_it(
    queue: Queue,
    driver: AmqpDriver,
    runner: JobRunner,
    broker: Broker,
    queue_name: str,
    markers_dir: Path,
) -> None:
    broker.delayed(queue_name, 3.0)
    queue.push(jobs.FailFirst, args=[str(markers_dir), "flaky"])
    queue.push(jobs.Record, args=[str(markers_dir), "next"])
    started = time.time()

    # The retry waits in a holding queue, which keeps the worker from stopping.
    work(driver, runner, queue_name, stop_when_empty=True)

    [first_attempt, retry] = jobs.marker_times(markers_dir, "flaky", "attempt")
    [following] = jobs.marker_times(markers_dir, "next")
    assert following - started < 1.5
    assert following < retry
    assert 2.9 <= retry - first_attempt < 6
    assert len(jobs.markers(markers_dir, "flaky")) == 1


def test_holding_delays_are_rounded_up_by_about_one_percent_at_most() -> None:
    assert holding_delay(0) == 0
    assert holding_delay(-3) == 0
    assert holding_delay(0.0004) == 0
    assert holding_delay(0.0123) == 13
    assert holding_delay(0.9754) == 976
    assert holding_delay(1.0) == holding_delay(0.991) == 1000
    assert holding_delay(1.0 + 2e-7) == 1000
    assert holding_delay(1.004) == 1010
    assert holding_delay(599.997) == holding_delay(600) == 600_000
    assert holding_delay(86_399.2) == 86_400_000
    for seconds in (0.0017, 0.49, 3.3333, 59.9, 61.5, 3599.9, 7 * 86_400.0 + 0.5):
        assert seconds * 1000 <= holding_delay(seconds) <= seconds * 1000 * 1.011 + 1
    assert holding_queue_name("mail", 1000) == "mail.delay.1000"


def test_a_job_name_too_long_for_the_type_property_travels_whole_in_a_header() -> None:
    name = "app.jobs." + "VeryLong" * 40
    envelope = Envelope(
        id="job-1",
        name=name,
        queue="mail",
        driver="amqp",
        created="now",
        available_at=5.0,
        body=b"body",
        attempts=2,
    )

    properties = message_properties(envelope, now=1.0)
    read = envelope_from_message("mail", properties, b"body", redelivered=False, now=1.0)

    assert len(properties.type.encode()) == 255
    assert properties.headers["job-name"] == name
    assert (read.id, read.name, read.queue, read.attempts, read.available_at) == (
        "job-1",
        name,
        "mail",
        3,
        5.0,
    )


# Refused payloads --------------------------------------------------------------------------


def test_forged_messages_are_parked_and_acknowledged_without_being_unpickled(
    driver: AmqpDriver,
    runner: JobRunner,
    store: RecordingStore,
    broker: Broker,
    queue_name: str,
    markers_dir: Path,
) -> None:
    evil = pickle.dumps({"obj": jobs.Forged(str(markers_dir)), "args": ()})
    broker.publish(
        queue_name,
        MAGIC + secrets.token_bytes(32) + evil,
        {"job-attempts": 0},
        message_id="forged-1",
        type="evil.Job",
    )
    broker.publish(queue_name, evil)

    work(driver, runner, queue_name, max_jobs=2)

    [wrong_key] = [failure for failure in store.failures if failure.envelope.id == "forged-1"]
    [unsigned] = [failure for failure in store.failures if failure is not wrong_key]
    assert (wrong_key.envelope.id, wrong_key.envelope.name) == ("forged-1", "evil.Job")
    assert wrong_key.reason == "signature"
    # A bare pickle is refused as forged or as not ours, depending on how it starts.
    assert unsigned.reason in {"signature", "corrupt"}
    assert unsigned.envelope.name == "unknown"
    assert all(failure.envelope.queue == queue_name for failure in store.failures)
    assert list(markers_dir.iterdir()) == []
    assert not driver.waiting([queue_name])
    assert settled(driver, broker, queue_name)


def test_a_message_that_is_not_ours_is_parked_as_corrupt_and_acknowledged(
    driver: AmqpDriver,
    runner: JobRunner,
    store: RecordingStore,
    broker: Broker,
    queue_name: str,
) -> None:
    broker.publish(queue_name, b"not a payload " + secrets.token_bytes(48))
    broker.publish(queue_name, b"")

    lines = work(driver, runner, queue_name, max_jobs=2)

    assert [failure.reason for failure in store.failures] == ["corrupt", "corrupt"]
    assert {failure.envelope.name for failure in store.failures} == {"unknown"}
    assert any("parked" in line for line in lines)
    assert settled(driver, broker, queue_name)


# Operators ---------------------------------------------------------------------------------


def test_counts_and_clear_see_ready_and_delayed_messages(
    queue: Queue, driver: AmqpDriver, broker: Broker, queue_name: str
) -> None:
    broker.delayed(queue_name, 60)
    queue.push(jobs.Numbered(1), jobs.Numbered(2), jobs.Numbered(3), args=["/nowhere"])
    queue.push(jobs.Numbered(4), args=["/nowhere"], wait="1 minute")

    [counts] = driver.counts()
    assert (counts.queue, counts.pending, counts.delayed, counts.reserved) == (queue_name, 3, 1, 0)
    assert counts.connection == "127.0.0.1:5672/"
    assert driver.waiting([queue_name])

    assert driver.clear() == 4
    assert not driver.waiting([queue_name])
    assert driver.counts(broker.name()) == []


def test_stored_failed_jobs_go_back_on_their_amqp_queue_with_no_attempts_spent(
    queue: Queue,
    driver: AmqpDriver,
    queue_name: str,
    sqlite_failed_store: DatabaseFailedJobStore,
    storing_runner: JobRunner,
) -> None:
    [job_id] = queue.push(jobs.FailFirst, args=["/nowhere/missing", "x"])
    held = reserve(driver, queue_name)
    # As if this had been its last attempt.
    failed = storing_runner.run(replace(held.envelope, attempts=2))
    assert driver.bury(held)
    assert failed.outcome is Outcome.FAILED

    [requeued] = retry_failed(sqlite_failed_store, queue, driver="amqp")

    assert requeued.uuid == job_id
    again = reserve(driver, queue_name)
    assert (again.envelope.id, again.envelope.attempts) == (job_id, 1)
    assert again.envelope.body == held.envelope.body


def test_queue_status_counts_from_the_broker(
    queue: Queue, queue_name: str, key: str, tmp_path: Path
) -> None:
    queue.push(jobs.Numbered(1), jobs.Numbered(2), args=["/nowhere"])

    status = craft(
        craft_environment(key, tmp_path),
        "queue:status",
        "--driver",
        "amqp",
        "--channel",
        queue_name,
        "--json",
    )

    assert status.returncode == 0, status.stderr
    assert '"pending": 2' in status.stdout


def test_queue_work_failed_puts_stored_failed_amqp_jobs_back_on_their_queue(
    queue: Queue,
    driver: AmqpDriver,
    key: str,
    queue_name: str,
    markers_dir: Path,
    tmp_path: Path,
    sqlite_failed_store: DatabaseFailedJobStore,
    storing_runner: JobRunner,
) -> None:
    [job_id] = queue.push(jobs.GivesUp, args=[str(markers_dir), "doomed"])
    work(driver, storing_runner, queue_name, max_jobs=1)
    assert [stored.uuid for stored in sqlite_failed_store.all()] == [job_id]

    requeue = craft(craft_environment(key, tmp_path), "queue:work", "--driver", "amqp", "--failed")

    assert requeue.returncode == 0, requeue.stderr
    assert requeue.stdout == "put 1 failed job(s) back on their queues\n"
    assert sqlite_failed_store.all() == []
    again = reserve(driver, queue_name)
    assert (again.envelope.id, again.envelope.queue, again.envelope.attempts) == (
        job_id,
        queue_name,
        1,
    )


def test_queue_clear_on_amqp_names_the_one_queue_it_purges_and_purges_it(
    queue: Queue, broker: Broker, queue_name: str, key: str, tmp_path: Path
) -> None:
    queue.push(jobs.Numbered(1), jobs.Numbered(2), args=["/nowhere"])
    environment = craft_environment(key, tmp_path)
    arguments = ("queue:clear", "--driver", "amqp", "--channel", queue_name)

    declined = craft(environment, *arguments, answer="n\n")

    assert declined.returncode != 0
    assert (
        f"Delete the ready jobs of queue '{queue_name}' on amqp (127.0.0.1:5672/)? "
        "Delayed jobs in its holding queues are kept." in declined.stdout
    )
    assert "every queue" not in declined.stdout
    assert declined.stderr.strip() == "craft: nothing deleted"
    assert broker.ready(queue_name) == 2
    forced = craft(environment, *arguments, "--force")
    assert (forced.returncode, forced.stdout) == (0, "deleted 2 pending job(s)\n")
    assert broker.ready(queue_name) == 0


# Settings ----------------------------------------------------------------------------------


@pytest.fixture
def special_user(broker: Broker) -> Iterator[tuple[str, str]]:
    """A broker user whose password holds `@:/%`, deleted after the test."""
    user = f"test-amqp-{uuid.uuid4().hex[:8]}"
    password = "p@ss:w/rd%41"
    rabbitmqctl("add_user", user, password)
    try:
        rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
        yield user, password
    finally:
        rabbitmqctl("delete_user", user)


def round_trip(driver: AmqpDriver, key: str, queue_name: str) -> None:
    """Push one job through `driver`, take it back, and close the driver."""
    try:
        queue_on(driver, key).push(jobs.Numbered(1), args=["/x"])
        assert driver.acknowledge(reserve(driver, queue_name))
    finally:
        driver.close()


def test_port_and_vhost_none_mean_5672_and_the_root_vhost(
    key: str, broker: Broker, queue_name: str
) -> None:
    build = DRIVERS["amqp"][0]
    driver = build(Container(), {"port": None, "vhost": None, "channel": queue_name})

    assert isinstance(driver, AmqpDriver)
    assert (driver.parameters.port, driver.parameters.virtual_host) == (5672, "/")
    round_trip(driver, key, queue_name)


def test_a_password_with_special_characters_works_from_settings_and_from_a_url(
    special_user: tuple[str, str],
    drivers: Callable[..., AmqpDriver],
    key: str,
    broker: Broker,
    queue_name: str,
) -> None:
    user, password = special_user
    build = DRIVERS["amqp"][0]
    settings = {"username": user, "password": password, "channel": queue_name}
    url = f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:5672/%2F"
    from_url = drivers(url=url, queue=queue_name, heartbeat=5)

    round_trip(build(Container(), settings), key, queue_name)
    round_trip(from_url, key, queue_name)
    assert from_url.parameters.credentials.password == password
    assert from_url.parameters.heartbeat == 5
    assert password not in from_url.where


def test_amqp_settings_are_read_from_the_environment_by_config_queue(
    key: str, broker: Broker, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def configured_driver() -> AmqpDriver:
        _default, settings = read_queue_config(Configuration(ROOT))
        driver = DRIVERS["amqp"][0](Container(), settings["amqp"])
        assert isinstance(driver, AmqpDriver)
        return driver

    monkeypatch.setenv("QUEUE_AMQP_CHANNEL", queue_name)
    monkeypatch.setenv("QUEUE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    monkeypatch.setenv("QUEUE_AMQP_CONNECTION_ATTEMPTS", "5")
    monkeypatch.setenv("QUEUE_AMQP_HEARTBEAT", "7")
    monkeypatch.setenv("QUEUE_AMQP_PREFETCH", "4")
    from_url = configured_driver()
    monkeypatch.delenv("QUEUE_AMQP_URL")
    monkeypatch.setenv("QUEUE_AMQP_PORT", "none")
    monkeypatch.setenv("QUEUE_AMQP_PASSWORD", "guest")
    from_parts = configured_driver()

    for driver in (from_url, from_parts):
        parameters = driver.parameters
        assert (parameters.host, parameters.port, parameters.virtual_host) == (
            "127.0.0.1",
            5672,
            "/",
        )
        assert (parameters.connection_attempts, parameters.heartbeat, driver.prefetch) == (5, 7, 4)
        assert driver.default_queue == queue_name
        round_trip(driver, key, queue_name)


def test_a_wrong_password_is_refused_with_a_clear_error(
    drivers: Callable[..., AmqpDriver], key: str, queue_name: str
) -> None:
    driver = drivers(password="not-the-password", queue=queue_name)

    with pytest.raises(AmqpUnavailableError, match="refused the login"):
        driver.check()


# Workers -----------------------------------------------------------------------------------


def test_a_broker_restart_loses_nothing_and_workers_go_on(
    queue: Queue,
    driver: AmqpDriver,
    broker: Broker,
    queue_name: str,
    markers_dir: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    rabbitmqctl("status")
    idle_queue = broker.name()
    queue.push(*[jobs.Numbered(number) for number in range(1000)], args=[str(markers_dir)])
    idle = start_worker("--channel", idle_queue, "--sleep", "0.2")
    wait_until(lambda: "worker" in idle.output(), 30, "the idle worker did not start")

    broker.connection.close()
    rabbitmqctl("stop_app")
    rabbitmqctl("start_app")
    rabbitmqctl("await_startup")
    wait_until(broker.answers, 60, "RabbitMQ did not come back")
    # The pusher's connection died with the broker: this push reconnects.
    queue.push(jobs.Record, args=[str(markers_dir), "after-restart"], channel=idle_queue)
    drain = start_worker("--channel", queue_name, "--stop-when-empty", "--quiet")

    assert drain.wait(timeout=90) == 0, drain.output()
    wait_until(
        lambda: jobs.markers(markers_dir, "after-restart"),
        30,
        f"the idle worker did not run the job pushed after the restart:\n{idle.output()}",
    )
    expected = {f"n{number}": 1 for number in range(1000)} | {"after-restart": 1}
    assert jobs.runs_by_name(markers_dir) == expected
    assert broker.ready(queue_name) == broker.ready(idle_queue) == 0


def test_a_job_whose_worker_is_killed_is_delivered_again_and_completes(
    queue: Queue,
    broker: Broker,
    queue_name: str,
    markers_dir: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    queue.push(jobs.SlowRecord, args=[str(markers_dir), "slow", 2.0])
    first = start_worker("--channel", queue_name)
    wait_until(lambda: jobs.markers(markers_dir, "slow", "started"), 30, "the job did not start")

    first.process.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert jobs.markers(markers_dir, "slow") == []
    second = start_worker("--channel", queue_name, "--stop-when-empty")

    assert second.wait(timeout=30) == 0, second.output()
    assert len(jobs.markers(markers_dir, "slow", "started")) == 2
    assert len(jobs.markers(markers_dir, "slow")) == 1
    assert "done" in second.output()
    assert broker.ready(queue_name) == 0


def test_a_job_running_3_times_the_heartbeat_completes_on_a_live_connection(
    queue: Queue,
    broker: Broker,
    queue_name: str,
    markers_dir: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    queue.push(jobs.SlowRecord, args=[str(markers_dir), "long", 6.5])
    queue.push(jobs.Record, args=[str(markers_dir), "after"])

    worker = start_worker("--channel", queue_name, "--stop-when-empty", QUEUE_AMQP_HEARTBEAT="2")

    assert worker.wait(timeout=40) == 0, worker.output()
    output = worker.output()
    assert len(jobs.markers(markers_dir, "long", "started")) == 1
    assert len(jobs.markers(markers_dir, "long")) == 1
    assert len(jobs.markers(markers_dir, "after")) == 1
    assert "lost" not in output and "unavailable" not in output, output
    assert broker.ready(queue_name) == 0


def test_an_idle_pusher_whose_connection_died_of_missed_heartbeats_reconnects_first(
    drivers: Callable[..., AmqpDriver], key: str, broker: Broker, queue_name: str
) -> None:
    driver = drivers(queue=queue_name, heartbeat=1, publish_attempts=1)
    queue = queue_on(driver, key)
    queue.push(jobs.Numbered(1), args=["/nowhere"])

    # Nothing reads the connection meanwhile, so the broker closes it.
    time.sleep(3.5)
    queue.push(jobs.Numbered(2), args=["/nowhere"])

    assert broker.ready(queue_name) == 2


def test_a_wait_of_49_days_is_held_by_the_broker_and_a_longer_one_refused_at_push(
    queue: Queue, driver: AmqpDriver, broker: Broker, queue_name: str
) -> None:
    broker.delayed(queue_name, MAX_WAIT_SECONDS)

    queue.push(jobs.Record, args=["unused", "later"], wait="49 days")
    with pytest.raises(ValueError, match="longest wait a job may have is 49 days"):
        queue.push(jobs.Record, args=["unused", "never"], wait=10**12)

    [counts] = driver.counts()
    assert (counts.pending, counts.delayed) == (0, 1)
