"""Each attempt of a job runs in its own container scope: one scoped object per job."""

from __future__ import annotations

import asyncio
from pathlib import Path

from container import Container
from queueing import JobRunner, Result, Signer
from queueing.drivers import SyncDriver
from queueing.manager import Queue
from tests.database_fixtures import new_key, open_backend
from tests.queueing import jobs_for_coroutines as jobs
from tests.queueing.drivers.test_database import work


def scoped_container() -> Container:
    container = Container()
    container.scoped(jobs.Session)
    jobs.Session.opened.clear()
    return container


def test_a_scoped_service_is_one_object_per_job_and_closed_after_it(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    signer = Signer(new_key())
    runner = JobRunner(scoped_container(), signer, _Nowhere())
    queue = Queue({"sync": lambda: SyncDriver(runner)}, "sync", signer)

    queue.push(jobs.UsesSession, jobs.UsesSession, args=[str(log)])

    assert log.read_text().splitlines() == ["same=True open=True"] * 2
    first, second = jobs.Session.opened
    assert first is not second
    assert first.closed and second.closed


def test_an_async_job_on_an_event_loop_gets_its_own_scope_too(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    signer = Signer(new_key())
    runner = JobRunner(scoped_container(), signer, _Nowhere())
    queue = Queue({"sync": lambda: SyncDriver(runner)}, "sync", signer)
    envelopes = queue.prepare(
        (jobs.UsesSessionAsync, jobs.UsesSessionAsync),
        args=[str(log)],
        kwargs=None,
        wait=None,
        channel=None,
        queue=None,
        callback="handle",
    )

    async def both_at_once() -> list[Result]:
        prepared = [runner.prepare(envelope.started()) for envelope in envelopes]
        return await asyncio.gather(*(runner.finish_async(item) for item in prepared))  # type: ignore[arg-type]

    asyncio.run(both_at_once())

    assert log.read_text().splitlines() == ["same=True open=True"] * 2
    first, second = jobs.Session.opened
    assert first is not second and first.closed and second.closed


def test_a_database_worker_closes_each_jobs_scoped_service(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    with open_backend("sqlite", tmp_path) as backend:
        backend.runner.container.scoped(jobs.Session)
        jobs.Session.opened.clear()
        backend.queue.push(jobs.UsesSession, jobs.UsesSession, args=[str(log)])

        work(backend)

        assert log.read_text().splitlines() == ["same=True open=True"] * 2
        assert len(jobs.Session.opened) == 2
        assert all(session.closed for session in jobs.Session.opened)


class _Nowhere:
    def store(self, failure: object) -> None:
        raise AssertionError(f"no job should fail here: {failure}")
