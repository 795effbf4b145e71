"""Scoped bindings: one object per scope, closed when it ends, never shared across threads."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest

from container import Container, ResolutionError, ScopeError


class Session:
    """A scoped service that records its closing."""

    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        """Count the closes."""
        self.closed += 1


class Transaction:
    """A context manager, exited at the end of its scope."""

    def __init__(self) -> None:
        self.exited_with: tuple[Any, ...] | None = None

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, *details: Any) -> None:
        self.exited_with = details


class Repository:
    """Unbound, needs the scoped `Session`."""

    def __init__(self, session: Session) -> None:
        self.session = session


class Job:
    """Needs the session directly and through its repository."""

    def __init__(self, session: Session, repository: Repository) -> None:
        self.session = session
        self.repository = repository

    def handle(self, session: Session) -> Session:
        """Return the session the container gave `handle`."""
        return session


class Cache:
    """A singleton candidate that needs a scoped object."""

    def __init__(self, repository: Repository) -> None:
        self.repository = repository


def uses_session(session: Session) -> Session:
    """A function the container fills with the scope's session."""
    return session


@pytest.fixture
def scoped(container: Container) -> Container:
    """A container with `Session` scoped."""
    return container.scoped(Session)


# One object per scope --------------------------------------------------------------


def test_every_make_and_call_in_one_scope_gets_the_same_object(scoped: Container) -> None:
    with scoped.scope():
        job = scoped.make(Job)
        made = scoped.make(Session)
        called = scoped.call(job.handle)

    assert job.session is job.repository.session is made is called


def test_each_scope_gets_its_own_object(scoped: Container) -> None:
    with scoped.scope():
        first = scoped.make(Session)
    with scoped.scope():
        second = scoped.make(Session)

    assert first is not second


def test_a_scoped_factory_has_its_parameters_filled(container: Container) -> None:
    def open_repository(session: Session) -> Repository:
        return Repository(session)

    container.scoped(Session)
    container.scoped("repository", open_repository)

    with container.scope():
        repository = container.make("repository")
        assert container.make("repository") is repository
        assert repository.session is container.make(Session)


def test_a_transient_needing_a_scoped_object_gets_the_scopes(scoped: Container) -> None:
    scoped.bind(Repository)

    with scoped.scope():
        first, second = scoped.make(Repository), scoped.make(Repository)

    assert first is not second
    assert first.session is second.session


# Closing ----------------------------------------------------------------------------


def test_the_scope_closes_its_object_once_when_it_ends(scoped: Container) -> None:
    with scoped.scope():
        session = scoped.make(Session)
        scoped.make(Session)
        assert session.closed == 0

    assert session.closed == 1


def test_a_context_manager_is_exited_as_after_a_normal_block(container: Container) -> None:
    container.scoped(Transaction)

    with container.scope():
        transaction = container.make(Transaction)

    assert transaction.exited_with == (None, None, None)


def test_objects_are_closed_in_reverse_order_of_creation(container: Container) -> None:
    closed: list[str] = []

    class Named:
        def __init__(self, name: str) -> None:
            self.name = name

        def close(self) -> None:
            closed.append(self.name)

    container.scoped("first", lambda: Named("first"))
    container.scoped("second", lambda: Named("second"))
    container.scoped("third", lambda: Named("third"))

    with container.scope():
        container.make("second")
        container.make("first")
        container.make("third")

    assert closed == ["third", "first", "second"]


def test_a_dependency_made_for_a_scoped_object_is_closed_after_it(container: Container) -> None:
    closed: list[str] = []

    class Connection:
        def close(self) -> None:
            closed.append("connection")

    class UnitOfWork:
        def __init__(self, connection: Connection) -> None:
            self.connection = connection

        def close(self) -> None:
            closed.append("unit of work")

    container.scoped(Connection)
    container.scoped(UnitOfWork)

    with container.scope():
        container.make(UnitOfWork)

    assert closed == ["unit of work", "connection"]


def test_an_error_while_closing_is_logged_and_the_rest_still_closed(
    container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def close(self) -> None:
            raise RuntimeError("cannot close")

    container.scoped(Session)
    container.scoped(Broken)

    with caplog.at_level(logging.ERROR, logger="container.scope"), container.scope():
        session = container.make(Session)
        container.make(Broken)

    assert session.closed == 1
    assert "closing" in caplog.text
    assert "Broken" in caplog.text
    assert "RuntimeError: cannot close" in caplog.text


def test_a_scope_whose_block_raises_still_closes_and_lets_the_error_through(
    scoped: Container,
) -> None:
    with pytest.raises(ValueError, match="inside the scope"), scoped.scope():
        session = scoped.make(Session)
        raise ValueError("inside the scope")

    assert session.closed == 1


# Nesting ----------------------------------------------------------------------------


def test_a_nested_scope_has_its_own_objects_and_the_outer_ones_come_back(
    scoped: Container,
) -> None:
    with scoped.scope():
        outer = scoped.make(Session)
        with scoped.scope():
            inner = scoped.make(Session)
        assert inner.closed == 1
        assert outer.closed == 0
        assert scoped.make(Session) is outer

    assert inner is not outer
    assert outer.closed == 1


def test_entering_one_scope_object_twice_at_once_is_refused(scoped: Container) -> None:
    scope = scoped.scope()

    with scope, pytest.raises(RuntimeError, match=r"already open"), scope:
        pass


# Outside any scope --------------------------------------------------------------------


def test_a_scoped_binding_outside_any_scope_says_a_scope_is_needed(scoped: Container) -> None:
    with pytest.raises(ScopeError) as raised:
        scoped.make(Session)

    assert str(raised.value) == (
        "cannot build Session: Session is scoped and no scope is open; "
        "resolve it inside `with container.scope():`"
    )


def test_a_scoped_dependency_outside_any_scope_names_the_chain(scoped: Container) -> None:
    with pytest.raises(ScopeError) as raised:
        scoped.make(Job)

    assert str(raised.value) == (
        "cannot build Job -> Session: Session is scoped and no scope is open; "
        "resolve it inside `with container.scope():`"
    )


def test_call_outside_any_scope_names_the_function(scoped: Container) -> None:
    with pytest.raises(ScopeError) as raised:
        scoped.call(uses_session)

    assert str(raised.value) == (
        "cannot call uses_session -> Session: Session is scoped and no scope is open; "
        "resolve it inside `with container.scope():`"
    )


def test_the_scope_error_is_a_resolution_error(scoped: Container) -> None:
    with pytest.raises(ResolutionError):
        scoped.make(Session)


# Singletons ------------------------------------------------------------------------------


def test_a_singleton_needing_a_scoped_object_is_refused(scoped: Container) -> None:
    scoped.singleton(Cache)

    with scoped.scope(), pytest.raises(ResolutionError) as raised:
        scoped.make(Cache)

    assert str(raised.value) == (
        "cannot build Cache -> Repository -> Session: the singleton Cache would keep the "
        "scoped Session after its scope ends; bind it with bind() or scoped() instead"
    )


# Threads and tasks ---------------------------------------------------------------------


def test_two_threads_in_their_own_scopes_never_share_an_object(scoped: Container) -> None:
    both_inside = threading.Barrier(2, timeout=10)
    seen: dict[str, tuple[Session, Session]] = {}

    def run(name: str) -> None:
        with scoped.scope():
            first = scoped.make(Session)
            both_inside.wait()  # both scopes are open at once
            seen[name] = (first, scoped.make(Job).session)

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    (a_first, a_again), (b_first, b_again) = seen["a"], seen["b"]
    assert a_first is a_again
    assert b_first is b_again
    assert a_first is not b_first


def test_a_thread_started_inside_a_scope_does_not_see_it(scoped: Container) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            scoped.make(Session)
        except ScopeError as error:
            errors.append(error)

    with scoped.scope():
        thread = threading.Thread(target=run)
        thread.start()
        thread.join(timeout=10)

    assert len(errors) == 1


def test_asyncio_tasks_in_their_own_scopes_never_share_an_object(scoped: Container) -> None:
    async def job() -> tuple[Session, Session]:
        with scoped.scope():
            first = scoped.make(Session)
            await asyncio.sleep(0.01)  # the other task runs meanwhile
            return first, scoped.make(Session)

    async def main() -> list[tuple[Session, Session]]:
        return list(await asyncio.gather(job(), job()))

    (a_first, a_again), (b_first, b_again) = asyncio.run(main())

    assert a_first is a_again
    assert b_first is b_again
    assert a_first is not b_first
    assert a_first.closed == b_first.closed == 1
