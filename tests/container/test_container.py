"""The service container: bindings, resolution, `call`, `swap` and its errors."""

from __future__ import annotations

import fractions
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import pytest

from container import Container, ResolutionError

if TYPE_CHECKING:
    from decimal import Decimal as Ledger
    from fractions import Fraction


class Mailer(ABC):
    """An abstract service: never built without a binding."""

    @abstractmethod
    def send(self, to: str) -> None:
        """Send a message to `to`."""


class PlainMailer(Mailer):
    """A concrete `Mailer` with no dependencies."""

    def send(self, to: str) -> None:
        """Send nothing."""


class FakeMailer(Mailer):
    """What a test swaps in for `Mailer`."""

    def send(self, to: str) -> None:
        """Send nothing."""


class Transport:
    """A dependency of `SmtpMailer`."""


class SmtpMailer(Mailer):
    """A service built from another service."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def send(self, to: str) -> None:
        """Send nothing."""


class WebhookMailer(Mailer):
    """A service needing a setting only a factory can give."""

    def __init__(self, url: str) -> None:
        self.url = url

    def send(self, to: str) -> None:
        """Send nothing."""


class SendWelcomeEmail:
    """A job-like class whose constructor needs a `Mailer`."""

    def __init__(self, mailer: Mailer) -> None:
        self.mailer = mailer


class Signup:
    """Needs `SendWelcomeEmail`, which needs `Mailer`."""

    def __init__(self, welcome: SendWelcomeEmail) -> None:
        self.welcome = welcome


class Untyped:
    """A constructor parameter the container cannot know how to fill."""

    def __init__(self, thing) -> None:  # type: ignore[no-untyped-def]
        self.thing = thing


class Greeter:
    """A bound method whose parameters the container fills."""

    def greet(self, mailer: Mailer, to: str) -> tuple[Greeter, Mailer, str]:
        return self, mailer, to


def charge(mailer: Mailer, ledger: Ledger) -> tuple[Mailer, Ledger]:
    """A function with an annotation that is only importable while type checking."""
    return mailer, ledger


class WithDefault:
    """An unannotated parameter with a default is left to its default."""

    def __init__(self, mailer: Mailer, retries=3) -> None:  # type: ignore[no-untyped-def]
        self.mailer = mailer
        self.retries = retries


class Pricing:
    """Annotated with a name importable only while type checking, found once it is bound."""

    def __init__(self, rate: Fraction) -> None:
        self.rate = rate


class Repository:
    """Built with a `Transport`, like the job that needs both."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport


class Checkout:
    """Needs a `Transport` directly and through its `Repository`."""

    def __init__(self, transport: Transport, repository: Repository) -> None:
        self.transport = transport
        self.repository = repository


# Binding and making ----------------------------------------------------------------


def test_bind_under_a_class_key_builds_a_new_object_each_time(container: Container) -> None:
    container.bind(Mailer, PlainMailer)

    first, second = container.make(Mailer), container.make(Mailer)

    assert isinstance(first, PlainMailer)
    assert first is not second


def test_bind_a_class_key_to_a_subclass(container: Container) -> None:
    container.bind(Mailer, FakeMailer)

    assert type(container.make(Mailer)) is FakeMailer


def test_bind_to_a_factory_calls_it_on_every_make(container: Container) -> None:
    built: list[Mailer] = []

    def factory() -> Mailer:
        built.append(PlainMailer())
        return built[-1]

    container.bind(Mailer, factory)

    first, second = container.make(Mailer), container.make(Mailer)

    assert built == [first, second]


def test_singleton_to_a_factory_calls_it_once(container: Container) -> None:
    built: list[Mailer] = []

    def factory() -> Mailer:
        built.append(PlainMailer())
        return built[-1]

    container.singleton("mailer", factory)

    assert container.make("mailer") is container.make("mailer")
    assert len(built) == 1


def test_singleton_under_a_class_key_is_built_once(container: Container) -> None:
    container.singleton(Mailer, PlainMailer)

    assert container.make(Mailer) is container.make(Mailer)


def test_instance_under_a_class_key_is_returned_as_given(container: Container) -> None:
    mailer = PlainMailer()
    container.instance(Mailer, mailer)

    assert container.make(Mailer) is mailer


@pytest.mark.parametrize("key", ["mailer", "queue.drivers.async", "mail-transport/smtp", "1st"])
def test_bind_under_a_string_key_that_is_not_an_identifier(container: Container, key: str) -> None:
    container.bind(key, PlainMailer)

    first, second = container.make(key), container.make(key)

    assert isinstance(first, PlainMailer)
    assert first is not second


def test_singleton_under_a_string_key_is_built_once(container: Container) -> None:
    container.singleton("queue.drivers.async", PlainMailer)

    assert container.make("queue.drivers.async") is container.make("queue.drivers.async")


def test_instance_under_a_string_key_is_returned_as_given(container: Container) -> None:
    settings = {"mode": "threading"}
    container.instance("queue.settings", settings)

    assert container.make("queue.settings") is settings


def test_a_string_key_bound_to_a_class_builds_its_dependencies(container: Container) -> None:
    container.bind(Transport)
    container.bind("mailer.smtp", SmtpMailer)

    mailer = container.make("mailer.smtp")

    assert isinstance(mailer.transport, Transport)


def test_has_says_whether_a_key_is_bound(container: Container) -> None:
    container.instance("present", 1)

    assert container.has("present")
    assert not container.has("absent")
    assert not container.has(Mailer)


def test_the_container_resolves_itself(container: Container) -> None:
    assert container.make(Container) is container


def test_make_resolves_dependencies_recursively(container: Container) -> None:
    container.bind(Transport)
    container.bind(Mailer, SmtpMailer)
    container.bind(SendWelcomeEmail)

    signup = container.make(Signup)

    assert isinstance(signup.welcome, SendWelcomeEmail)
    assert isinstance(signup.welcome.mailer, SmtpMailer)
    assert isinstance(signup.welcome.mailer.transport, Transport)


def test_a_singleton_dependency_is_shared_by_everything_built(container: Container) -> None:
    container.singleton(Mailer, PlainMailer)

    first, second = container.make(SendWelcomeEmail), container.make(SendWelcomeEmail)

    assert first is not second
    assert first.mailer is second.mailer is container.make(Mailer)


def test_an_instance_dependency_is_injected_as_given(container: Container) -> None:
    mailer = FakeMailer()
    container.instance(Mailer, mailer)

    assert container.make(SendWelcomeEmail).mailer is mailer


def test_an_unbound_class_is_built_from_its_annotations(container: Container) -> None:
    container.instance(Mailer, PlainMailer())

    job = container.make(SendWelcomeEmail)

    assert isinstance(job, SendWelcomeEmail)
    assert job.mailer is container.make(Mailer)
    assert not container.has(SendWelcomeEmail)


def test_an_unbound_class_without_parameters_is_built(container: Container) -> None:
    assert isinstance(container.make(Transport), Transport)


def test_an_unannotated_parameter_with_a_default_keeps_its_default(container: Container) -> None:
    container.bind(Mailer, PlainMailer)

    assert container.make(WithDefault).retries == 3


def test_binding_a_string_key_without_a_class_is_refused(container: Container) -> None:
    with pytest.raises(ResolutionError, match="'mailer'"):
        container.bind("mailer")


def test_binding_to_something_not_callable_points_to_instance(container: Container) -> None:
    with pytest.raises(ResolutionError, match=r"use instance\(\)"):
        container.bind("answer", 42)


# call() -----------------------------------------------------------------------------


def test_call_fills_annotated_parameters_from_bindings(container: Container) -> None:
    mailer = PlainMailer()
    container.instance(Mailer, mailer)

    def handle(mailer: Mailer) -> Mailer:
        return mailer

    assert container.call(handle) is mailer


def test_call_passes_positional_arguments_to_the_other_parameters(
    container: Container,
) -> None:
    container.singleton(Mailer, PlainMailer)

    def handle(to: str, mailer: Mailer, subject: str) -> tuple[str, Mailer, str]:
        return to, mailer, subject

    to, mailer, subject = container.call(handle, "ada@example.com", "Welcome")

    assert (to, subject) == ("ada@example.com", "Welcome")
    assert mailer is container.make(Mailer)


def test_call_uses_a_positional_instance_of_the_annotated_type_as_given(
    container: Container,
) -> None:
    container.singleton(Mailer, PlainMailer)
    mine = FakeMailer()

    def handle(mailer: Mailer, to: str) -> tuple[Mailer, str]:
        return mailer, to

    mailer, to = container.call(handle, mine, "ada@example.com")

    assert mailer is mine
    assert to == "ada@example.com"


def test_call_passes_keyword_arguments_by_name(container: Container) -> None:
    container.singleton(Mailer, PlainMailer)

    def handle(to: str, mailer: Mailer, subject: str = "Hello", *, urgent: bool = False) -> tuple:
        return to, mailer, subject, urgent

    to, mailer, subject, urgent = container.call(
        handle, "ada@example.com", subject="Welcome", urgent=True
    )

    assert (to, subject, urgent) == ("ada@example.com", "Welcome", True)
    assert isinstance(mailer, Mailer)


def test_call_a_keyword_argument_overrides_the_binding(container: Container) -> None:
    container.singleton(Mailer, PlainMailer)
    mine = FakeMailer()

    def handle(mailer: Mailer) -> Mailer:
        return mailer

    assert container.call(handle, mailer=mine) is mine


def test_call_leaves_defaults_alone_when_nothing_is_given(container: Container) -> None:
    def handle(subject: str = "Hello") -> str:
        return subject

    assert container.call(handle) == "Hello"


def test_call_a_bound_method_fills_its_parameters(container: Container) -> None:
    container.singleton(Mailer, PlainMailer)
    job = Greeter()

    itself, mailer, to = container.call(job.greet, "ada@example.com")

    assert itself is job
    assert mailer is container.make(Mailer)
    assert to == "ada@example.com"


def test_call_injects_what_it_can_when_another_annotation_cannot_be_evaluated(
    container: Container,
) -> None:
    # `Ledger` exists only for type checkers; `mailer` can still be filled.
    container.singleton(Mailer, PlainMailer)

    mailer, ledger = container.call(charge, "the ledger")

    assert mailer is container.make(Mailer)
    assert ledger == "the ledger"


def test_call_passes_extra_positionals_to_var_positional(container: Container) -> None:
    def handle(first: str, *rest: str) -> tuple[str, tuple[str, ...]]:
        return first, rest

    assert container.call(handle, "a", "b", "c") == ("a", ("b", "c"))


def test_call_with_an_annotated_parameter_nothing_fills_names_it(container: Container) -> None:
    def handle(mailer: Mailer) -> None:
        raise AssertionError("not called")

    with pytest.raises(ResolutionError) as raised:
        container.call(handle)

    assert "parameter 'mailer: Mailer' has no binding" in str(raised.value)
    assert "handle" in str(raised.value)


def test_call_with_a_missing_plain_argument_names_it(container: Container) -> None:
    def handle(to) -> None:  # type: ignore[no-untyped-def]
        raise AssertionError("not called")

    with pytest.raises(ResolutionError, match="parameter 'to' has no value"):
        container.call(handle)


def test_call_with_too_many_arguments_says_so(container: Container) -> None:
    def handle(to: str) -> None:
        raise AssertionError("not called")

    with pytest.raises(TypeError, match=r"handle.*1 argument"):
        container.call(handle, "ada@example.com", "surplus")


# swap() -----------------------------------------------------------------------------


def test_swap_resolves_the_replacement_inside_the_block(container: Container) -> None:
    container.singleton(Mailer, PlainMailer)
    fake = FakeMailer()

    with container.swap(Mailer, fake) as swapped:
        assert swapped is fake
        assert container.make(Mailer) is fake
        assert container.make(SendWelcomeEmail).mailer is fake


def test_swap_restores_the_original_after_the_block(container: Container) -> None:
    container.singleton(Mailer, PlainMailer)
    original = container.make(Mailer)

    with container.swap(Mailer, FakeMailer()):
        pass

    assert container.make(Mailer) is original
    assert container.make(SendWelcomeEmail).mailer is original


def test_swap_restores_the_original_when_the_block_raises(container: Container) -> None:
    container.singleton(Mailer, PlainMailer)
    original = container.make(Mailer)

    with pytest.raises(RuntimeError, match="inside the swap"), container.swap(Mailer, FakeMailer()):
        raise RuntimeError("inside the swap")

    assert container.make(Mailer) is original


def test_swap_with_a_class_builds_the_replacement_on_each_make(container: Container) -> None:
    container.singleton(Mailer, PlainMailer)

    with container.swap(Mailer, FakeMailer):
        first, second = container.make(Mailer), container.make(Mailer)

    assert type(first) is FakeMailer
    assert first is not second
    assert type(container.make(Mailer)) is PlainMailer


def test_swap_under_a_string_key(container: Container) -> None:
    container.instance("queue.drivers.async", "real")

    with container.swap("queue.drivers.async", "fake"):
        assert container.make("queue.drivers.async") == "fake"

    assert container.make("queue.drivers.async") == "real"


def test_swap_of_an_unbound_key_leaves_it_unbound(container: Container) -> None:
    with container.swap("mailer", FakeMailer()):
        assert container.has("mailer")

    assert not container.has("mailer")


def test_bindings_made_inside_a_swap_are_dropped_after_it(container: Container) -> None:
    with container.swap(Mailer, FakeMailer()):
        container.instance(Transport, Transport())

    assert not container.has(Transport)


def test_a_singleton_first_made_inside_a_swap_stays_the_same_after(
    container: Container,
) -> None:
    container.singleton(Transport)

    with container.swap(Mailer, FakeMailer()):
        inside = container.make(Transport)

    assert container.make(Transport) is inside


# What make() and call() keep between calls -------------------------------------------


def test_a_swap_after_a_first_make_and_call_is_honoured_by_the_next_ones(
    container: Container,
) -> None:
    container.singleton(Mailer, PlainMailer)
    greeter = Greeter()
    original = container.make(SendWelcomeEmail).mailer
    container.call(greeter.greet, "ada@example.com")
    fake = FakeMailer()

    with container.swap(Mailer, fake):
        assert container.make(SendWelcomeEmail).mailer is fake
        assert container.call(greeter.greet, "ada@example.com")[1] is fake

    assert container.make(SendWelcomeEmail).mailer is original
    assert container.call(greeter.greet, "ada@example.com")[1] is original


def test_a_binding_registered_after_a_failed_make_and_call_is_used_by_the_next_ones(
    container: Container,
) -> None:
    with pytest.raises(ResolutionError):
        container.make(SendWelcomeEmail)
    with pytest.raises(ResolutionError):
        container.call(Greeter().greet, "ada@example.com")
    mailer = PlainMailer()
    container.instance(Mailer, mailer)

    assert container.make(SendWelcomeEmail).mailer is mailer
    assert container.call(Greeter().greet, "ada@example.com")[1] is mailer


def test_a_forward_reference_resolves_once_a_class_of_that_name_is_bound(
    container: Container,
) -> None:
    with pytest.raises(ResolutionError, match="annotation not found"):
        container.make(Pricing)
    rate = fractions.Fraction(1, 3)
    container.instance(fractions.Fraction, rate)

    assert container.make(Pricing).rate is rate


def test_a_transient_service_is_built_anew_everywhere_one_make_needs_it(
    container: Container,
) -> None:
    container.bind(Transport)
    container.bind(Repository)

    checkout = container.make(Checkout)

    assert isinstance(checkout.transport, Transport)
    assert checkout.transport is not checkout.repository.transport


def test_each_bound_method_is_called_on_its_own_instance(container: Container) -> None:
    container.singleton(Mailer, PlainMailer)
    ada, grace = Greeter(), Greeter()

    assert container.call(ada.greet, "ada@example.com")[0] is ada
    assert container.call(grace.greet, "grace@example.com")[0] is grace


def test_a_function_called_bound_and_unbound_fills_the_right_parameters(
    container: Container,
) -> None:
    container.singleton(Mailer, PlainMailer)
    greeter = Greeter()
    mailer = container.make(Mailer)

    bound = container.call(greeter.greet, "ada@example.com")
    unbound = container.call(Greeter.greet, greeter, "grace@example.com")

    assert bound == (greeter, mailer, "ada@example.com")
    assert unbound == (greeter, mailer, "grace@example.com")


# Resolution errors ------------------------------------------------------------------


def test_a_missing_binding_names_class_parameter_and_annotation(container: Container) -> None:
    with pytest.raises(ResolutionError) as raised:
        container.make(SendWelcomeEmail)

    assert str(raised.value) == (
        "cannot build SendWelcomeEmail: parameter 'mailer: Mailer' has no binding"
    )


def test_a_nested_missing_binding_names_the_chain_to_it(container: Container) -> None:
    container.bind(SendWelcomeEmail)

    with pytest.raises(ResolutionError) as raised:
        container.make(Signup)

    assert str(raised.value) == (
        "cannot build Signup -> SendWelcomeEmail: parameter 'mailer: Mailer' has no binding"
    )


def test_a_missing_binding_behind_a_string_key_names_the_key_and_class(
    container: Container,
) -> None:
    container.bind("mailer.webhook", WebhookMailer)

    with pytest.raises(ResolutionError) as raised:
        container.make("mailer.webhook")

    assert str(raised.value) == (
        "cannot build 'mailer.webhook' (WebhookMailer): parameter 'url: str' has no binding"
    )


def test_an_unannotated_parameter_without_default_is_named(container: Container) -> None:
    with pytest.raises(ResolutionError) as raised:
        container.make(Untyped)

    assert str(raised.value) == (
        "cannot build Untyped: parameter 'thing' has no binding"
        " (it has no type annotation and no default)"
    )


def test_an_unbound_string_key_says_nothing_is_bound(container: Container) -> None:
    with pytest.raises(ResolutionError, match="cannot resolve 'mailer': nothing is bound"):
        container.make("mailer")


def test_resolution_errors_are_never_bare_punq_or_type_errors(container: Container) -> None:
    container.bind(SendWelcomeEmail)

    for key in (SendWelcomeEmail, Signup, Untyped, "nothing-here"):
        with pytest.raises(Exception) as raised:
            container.make(key)
        assert type(raised.value) is ResolutionError, key


def test_resolution_error_is_a_lookup_error(container: Container) -> None:
    with pytest.raises(LookupError):
        container.make(SendWelcomeEmail)


class Stamp:
    """A concrete class a test binds only after a first call."""


class Stamping:
    """A bound method whose parameter is first given by the caller, later by a binding."""

    def handle(self, stamp: Stamp, note: str = "") -> tuple[Stamp | str, str]:
        return stamp, note


def test_a_rebind_after_a_make_is_used_by_the_next_make(container: Container) -> None:
    container.bind(Mailer, PlainMailer)
    first = container.make(SendWelcomeEmail)

    container.bind(Mailer, FakeMailer)

    assert type(first.mailer) is PlainMailer
    assert type(container.make(SendWelcomeEmail).mailer) is FakeMailer
    assert type(container.make(Mailer)) is FakeMailer


def test_a_rebound_singleton_is_a_new_object(container: Container) -> None:
    container.singleton(Mailer, PlainMailer)
    first = container.make(Mailer)

    container.singleton(Mailer, PlainMailer)

    assert container.make(Mailer) is not first
    assert container.make(Mailer) is container.make(Mailer)


def test_a_binding_made_after_a_call_changes_what_the_next_call_fills(
    container: Container,
) -> None:
    job = Stamping()
    before = container.call(job.handle, "hello")
    stamp = Stamp()

    container.instance(Stamp, stamp)

    assert before == ("hello", "")
    assert container.call(job.handle, "hello") == (stamp, "hello")


def test_a_swap_of_a_scoped_key_inside_a_scope_is_seen_by_the_next_make(
    container: Container,
) -> None:
    container.scoped(Mailer, PlainMailer)
    fake = FakeMailer()

    with container.scope():
        real = container.make(Mailer)
        with container.swap(Mailer, fake):
            assert container.make(SendWelcomeEmail).mailer is fake
        assert container.make(Mailer) is real
