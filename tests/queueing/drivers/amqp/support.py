"""Helpers the amqp driver tests share: a broker seen as an operator sees it, workers, craft.

Every test works on queues of its own (random names) and deletes them after.
Worker tests run `craft queue:work --driver amqp` from the repository root,
configured through the environment that `config/queue.py` reads.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest

from queueing import FailedJob, JobRunner, Queue, Signer
from queueing.drivers.amqp import (
    AmqpDriver,
    holding_delay,
    holding_queue_name,
)
from queueing.worker import Worker, WorkerOptions
from tests.database_fixtures import craft as run_craft
from tests.services import services_required

ROOT = Path(__file__).resolve().parents[4]
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


class WorkerProcess:
    """A `craft queue:work --driver amqp` process writing to log files."""

    def __init__(self, folder: Path, environment: dict[str, str], *arguments: str) -> None:
        number = len(list(folder.glob("worker-*.out")))
        self.stdout = folder / f"worker-{number}.out"
        self.stderr = folder / f"worker-{number}.err"
        with self.stdout.open("ab") as out, self.stderr.open("ab") as err:
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
