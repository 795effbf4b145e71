"""The errors the container raises, and how their messages name what failed."""

from __future__ import annotations

from collections.abc import Sequence


class ResolutionError(LookupError):
    """Raised when the container cannot build a class or fill a parameter.

    The message names the chain of what was being built, then the problem,
    for example ``cannot build SendWelcomeEmail -> Mailer -> Transport:
    parameter 'host: str' has no binding``. No later attempt can mend such an
    error, so the queue fails a job that raises it without retrying.
    """


class ScopeError(ResolutionError):
    """Raised when a scoped binding is resolved while no scope is open."""


def chain_error(
    verb: str, chain: Sequence[str], problem: str, kind: type[ResolutionError] = ResolutionError
) -> ResolutionError:
    """Return an error reading ``cannot <verb> A -> B -> C: <problem>``."""
    return kind(f"cannot {verb} {' -> '.join(chain)}: {problem}")
