"""`python -m bench.container`: what building and calling one job through the container costs.

The job needs three services: a singleton (`Mailer`), an unbound class the
container builds on its own (`Repository`) and a scoped session (`Session`),
closed when the job's scope ends. Each row runs one job and prints its cost
in microseconds, the minimum over rounds of many runs (the least disturbed
round), and its ratio to building the job by hand:

- `hand-built`: the objects made and the session closed by hand.
- `ours (make+call)`: `with container.scope():` around `make(Job)` and
  `call(job.handle, seq)`, as the worker runs an attempt.
- `raw punq`: punq resolving the same graph (it has no scopes: the session
  is a transient and closed by hand), then `job.handle(seq)`.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

import punq

from container import Container


class Mailer:
    """A singleton service."""


class Repository:
    """A class nobody binds: the container builds it from its (empty) constructor."""


class Session:
    """A scoped service, closed at the end of its scope."""

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        """End the session."""
        self.closed = True


class Job:
    """The job: three services in its constructor, the job's argument in `handle`."""

    def __init__(self, mailer: Mailer, repository: Repository, session: Session) -> None:
        self.mailer = mailer
        self.repository = repository
        self.session = session

    def handle(self, seq: int) -> int:
        """Do nothing much with `seq`."""
        return seq


def hand_built() -> Callable[[], object]:
    """The job built by hand, the session closed after it."""
    mailer = Mailer()

    def run() -> object:
        session = Session()
        try:
            return Job(mailer, Repository(), session).handle(1)
        finally:
            session.close()

    return run


def ours() -> Callable[[], object]:
    """The job made and called through our container inside a scope."""
    container = Container()
    container.singleton(Mailer)
    container.scoped(Session)

    def run() -> object:
        with container.scope():
            job = container.make(Job)
            return container.call(job.handle, 1)

    return run


def raw_punq() -> Callable[[], object]:
    """The same graph resolved by punq, the session closed by hand."""
    container = punq.Container()
    container.register(Mailer, scope=punq.Scope.singleton)
    container.register(Repository)
    container.register(Session)
    container.register(Job)

    def run() -> object:
        job = container.resolve(Job)
        try:
            return job.handle(1)
        finally:
            job.session.close()

    return run


ROWS: tuple[tuple[str, Callable[[], Callable[[], object]]], ...] = (
    ("hand-built", hand_built),
    ("ours (make+call)", ours),
    ("raw punq", raw_punq),
)


def measure(rounds: int, number: int) -> list[tuple[str, float]]:
    """Microseconds per job of every row: the minimum over `rounds` rounds of `number` jobs.

    The rows take turns round by round, so a busy moment of the machine
    slows one round of each rather than every round of one row.
    """
    runs = [(name, factory()) for name, factory in ROWS]
    for _, run in runs:
        run()  # the first run compiles and warms caches; it is not what a worker repeats
    best = {name: float("inf") for name, _ in runs}
    for _ in range(rounds):
        for name, run in runs:
            best[name] = min(best[name], timeit.timeit(run, number=number))
    return [(name, best[name] / number * 1e6) for name, _ in runs]


def table(rounds: int, number: int) -> str:
    """Measure every row and return the table as aligned text."""
    results = measure(rounds, number)
    baseline = results[0][1]
    lines = [f"{'row':<18} {'us/job':>8} {'x hand-built':>13}", "-" * 41]
    lines += [f"{name:<18} {cost:>8.2f} {cost / baseline:>13.1f}" for name, cost in results]
    return "\n".join(lines)


def main(arguments: list[str] | None = None) -> None:
    """Read the command line, measure, print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.container", description=__doc__)
    parser.add_argument("--rounds", type=int, default=15, help="rounds per row (minimum kept)")
    parser.add_argument("--number", type=int, default=10000, help="jobs per round")
    options = parser.parse_args(arguments)
    print(table(options.rounds, options.number))


if __name__ == "__main__":
    main()
