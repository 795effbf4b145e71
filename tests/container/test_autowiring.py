"""Autowiring: unbound concrete classes built to any depth, and the errors when they cannot be."""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from typing import Protocol

import pytest

from container import Container, ResolutionError


class Transport:
    """Needs a setting nothing can guess."""

    def __init__(self, host: str) -> None:
        self.host = host


class Mailer:
    """Concrete, built unbound, needing a `Transport`."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport


class SendWelcomeEmail:
    """The job of the issue's example."""

    def __init__(self, mailer: Mailer) -> None:
        self.mailer = mailer


class Clock:
    """Concrete, no dependencies."""


class Repository:
    """Concrete, needs a `Clock`."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock


class Service:
    """Concrete, needs a `Repository`, which needs a `Clock`."""

    def __init__(self, repository: Repository) -> None:
        self.repository = repository


class Report:
    """Three levels deep: `Report` -> `Service` -> `Repository` -> `Clock`."""

    def __init__(self, service: Service, clock: Clock) -> None:
        self.service = service
        self.clock = clock


class Notifier(ABC):
    """Abstract: never built without a binding."""

    @abstractmethod
    def notify(self) -> None:
        """Notify someone."""


class EmailNotifier(Notifier):
    """A concrete `Notifier`."""

    def notify(self) -> None:
        """Notify nobody."""


class Sender(Protocol):
    """A Protocol: never built without a binding."""

    def send(self) -> None:
        """Send."""


class Colour(enum.Enum):
    """An enumeration: never built without a binding."""

    RED = "red"


class NeedsNotifier:
    """Needs an abstract class."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier


class NeedsSender:
    """Needs a Protocol."""

    def __init__(self, sender: Sender) -> None:
        self.sender = sender


class NeedsCount:
    """Needs a builtin."""

    def __init__(self, count: int) -> None:
        self.count = count


class NeedsColour:
    """Needs an enumeration."""

    def __init__(self, colour: Colour) -> None:
        self.colour = colour


class WithDefaults:
    """Defaults are kept when nothing is bound, even for classes that could be built."""

    def __init__(self, retries: int = 3, clock: Clock | None = None, *, label: str = "x") -> None:
        self.retries = retries
        self.clock = clock
        self.label = label


class DefaultThenService:
    """A default before a parameter the container fills: the latter goes by name."""

    def __init__(self, retries: int = 3, clock: Clock = Clock()) -> None:  # noqa: B008
        self.retries = retries
        self.clock = clock


class Chicken:
    """Half of a cycle."""

    def __init__(self, egg: Egg) -> None:
        self.egg = egg


class Egg:
    """The other half."""

    def __init__(self, chicken: Chicken) -> None:
        self.chicken = chicken


class Ouroboros:
    """Needs itself."""

    def __init__(self, itself: Ouroboros) -> None:
        self.itself = itself


def deliver(report: Report, to: str) -> tuple[Report, str]:
    """A function whose `report` the container builds when the caller gives none."""
    return report, to


def send_welcome(mailer: Mailer) -> Mailer:
    """A function whose parameter leads to a `Transport` nobody can build."""
    return mailer


# Building ----------------------------------------------------------------------------


def test_make_builds_unbound_concrete_classes_to_any_depth(container: Container) -> None:
    report = container.make(Report)

    assert isinstance(report, Report)
    assert isinstance(report.service.repository.clock, Clock)
    assert isinstance(report.clock, Clock)


def test_every_unbound_class_is_built_anew_each_time_it_is_needed(container: Container) -> None:
    first, second = container.make(Report), container.make(Report)

    assert first is not second
    assert first.clock is not first.service.repository.clock
    assert first.service is not second.service


def test_a_binding_deep_in_the_graph_is_used_by_what_is_built_above_it(
    container: Container,
) -> None:
    clock = Clock()
    container.instance(Clock, clock)

    report = container.make(Report)

    assert report.clock is clock
    assert report.service.repository.clock is clock


def test_a_factory_bound_to_a_key_has_its_own_parameters_filled(container: Container) -> None:
    def smtp(host: str = "mail.example.com") -> Transport:
        return Transport(host)

    def mailer(transport: Transport, clock: Clock) -> Mailer:
        built = Mailer(transport)
        built.clock = clock  # type: ignore[attr-defined]
        return built

    container.bind(Transport, smtp)
    container.singleton("mailer", mailer)

    built = container.make("mailer")

    assert built.transport.host == "mail.example.com"
    assert isinstance(built.clock, Clock)


def test_an_abstract_class_bound_to_a_concrete_one_is_built_through_it(
    container: Container,
) -> None:
    container.bind(Notifier, EmailNotifier)

    assert type(container.make(NeedsNotifier).notifier) is EmailNotifier


# Defaults ----------------------------------------------------------------------------


def test_defaults_are_kept_when_nothing_is_bound(container: Container) -> None:
    built = container.make(WithDefaults)

    assert (built.retries, built.clock, built.label) == (3, None, "x")


def test_a_bound_annotation_replaces_the_default(container: Container) -> None:
    clock = Clock()
    container.instance(Clock, clock)

    built = container.make(DefaultThenService)

    assert built.retries == 3
    assert built.clock is clock


# What is never built without a binding -------------------------------------------------


def test_the_chain_to_a_parameter_nothing_can_fill_is_named(container: Container) -> None:
    with pytest.raises(ResolutionError) as raised:
        container.make(SendWelcomeEmail)

    assert str(raised.value) == (
        "cannot build SendWelcomeEmail -> Mailer -> Transport: parameter 'host: str' has no binding"
    )


@pytest.mark.parametrize(
    ("cls", "parameter"),
    [
        (NeedsNotifier, "'notifier: Notifier'"),
        (NeedsSender, "'sender: Sender'"),
        (NeedsCount, "'count: int'"),
        (NeedsColour, "'colour: Colour'"),
    ],
    ids=["abstract", "protocol", "builtin", "enumeration"],
)
def test_a_parameter_that_is_not_a_concrete_class_has_no_binding(
    container: Container, cls: type, parameter: str
) -> None:
    with pytest.raises(ResolutionError) as raised:
        container.make(cls)

    assert str(raised.value) == f"cannot build {cls.__name__}: parameter {parameter} has no binding"


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (Notifier, "cannot resolve Notifier: nothing is bound to it (it is abstract)"),
        (Sender, "cannot resolve Sender: nothing is bound to it (it is a Protocol)"),
        (
            int,
            "cannot resolve int: nothing is bound to it (builtins are never built without a"
            " binding)",
        ),
    ],
    ids=["abstract", "protocol", "builtin"],
)
def test_making_what_cannot_be_built_unbound_says_nothing_is_bound(
    container: Container, key: type, message: str
) -> None:
    with pytest.raises(ResolutionError) as raised:
        container.make(key)

    assert str(raised.value) == message


def test_a_cycle_is_named_as_one(container: Container) -> None:
    with pytest.raises(ResolutionError) as raised:
        container.make(Chicken)

    assert (
        str(raised.value) == "cannot build Chicken -> Egg -> Chicken: the dependencies form a cycle"
    )


def test_a_class_needing_itself_is_a_cycle(container: Container) -> None:
    with pytest.raises(ResolutionError) as raised:
        container.make(Ouroboros)

    assert str(raised.value) == (
        "cannot build Ouroboros -> Ouroboros: the dependencies form a cycle"
    )


def test_a_cycle_through_bindings_is_named_with_the_bound_classes(container: Container) -> None:
    container.bind(Notifier, Chicken)

    with pytest.raises(ResolutionError) as raised:
        container.make(NeedsNotifier)

    assert str(raised.value) == (
        "cannot build NeedsNotifier -> Notifier (Chicken) -> Egg -> Chicken -> Egg: "
        "the dependencies form a cycle"
    )


# call() --------------------------------------------------------------------------------


def test_call_builds_an_unbound_class_for_a_parameter_the_caller_left_open(
    container: Container,
) -> None:
    report, to = container.call(deliver, to="ada@example.com")

    assert isinstance(report.service.repository.clock, Clock)
    assert to == "ada@example.com"


def test_call_gives_an_unbound_parameter_the_positional_argument_the_caller_gave(
    container: Container,
) -> None:
    mine = container.make(Report)

    report, to = container.call(deliver, mine, "ada@example.com")

    assert report is mine
    assert to == "ada@example.com"


def test_call_keeps_the_default_of_an_unbound_parameter(container: Container) -> None:
    def handle(clock: Clock | None = None, retries: int = 2) -> tuple[Clock | None, int]:
        return clock, retries

    assert container.call(handle) == (None, 2)


def test_call_names_the_chain_to_what_it_cannot_build(container: Container) -> None:
    with pytest.raises(ResolutionError) as raised:
        container.call(send_welcome)

    assert str(raised.value) == (
        "cannot call send_welcome -> Mailer -> Transport: parameter 'host: str' has no binding"
    )
