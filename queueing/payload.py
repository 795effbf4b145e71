"""The one wire format of the queue, shared by every driver.

A pushed item becomes an `Envelope`: metadata any driver can store and read
without unpickling (id, job name, queue, driver, created, attempts, when it is
due) around a signed body. The body is the cloudpickled job (`obj`, `args`,
`kwargs`, `callback`, ...) behind an HMAC-SHA256 of those bytes made with the
application key. `Signer.load` checks the HMAC before it unpickles anything,
so a body that someone else wrote is refused without ever being loaded. After
a key rotation the previous keys still verify (never sign), so jobs queued
before it still run.
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import hmac
import inspect
import json
import math
import os
import pickle
import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import cloudpickle

MAGIC = b"QJ1"
DIGEST_SIZE = hashlib.sha256().digest_size
MINIMUM_KEY_BYTES = 16
MAKE_KEY_HINT = "run `craft key --store` to make one"


class PayloadError(Exception):
    """A payload could not be made or read."""


class MissingKeyError(PayloadError):
    """No usable application key is configured, so nothing can be signed or verified."""


class ForgedPayloadError(PayloadError):
    """The body's signature does not match: it was not written with our key."""

    reason = "signature"


class CorruptPayloadError(PayloadError):
    """The bytes are not a payload of ours (truncated, garbled or foreign)."""

    reason = "corrupt"


def decode_key(key: str | bytes | None) -> bytes:
    """Turn the configured key (`base64:...` or plain text) into HMAC key bytes."""
    if key is None or (isinstance(key, str | bytes) and not key.strip()):
        raise MissingKeyError(f"no application key is configured (APP_KEY): {MAKE_KEY_HINT}")
    try:
        return key_bytes(key)
    except ValueError as problem:
        raise MissingKeyError(f"the application key {problem}: {MAKE_KEY_HINT}") from problem


def decode_previous_key(number: int, key: str | bytes) -> bytes:
    """Turn entry `number` (from 1) of `APP_PREVIOUS_KEYS` into HMAC key bytes."""
    try:
        if isinstance(key, str | bytes) and not key.strip():
            raise ValueError("is empty")
        return key_bytes(key)
    except ValueError as problem:
        raise MissingKeyError(
            f"previous key {number} in APP_PREVIOUS_KEYS {problem}: fix it or remove it"
        ) from problem


def key_bytes(key: str | bytes) -> bytes:
    """Decode one key; a `ValueError` says what is wrong with it, without quoting it."""
    if isinstance(key, bytes):
        raw = key
    elif isinstance(key, str) and key.startswith("base64:"):
        try:
            raw = base64.b64decode(key.removeprefix("base64:"), validate=True)
        except ValueError as error:
            raise ValueError(f"is not valid base64 ({error})") from None
    elif isinstance(key, str):
        raw = key.encode()
    else:
        raise ValueError(f"is a {type(key).__name__}, not text")
    if len(raw) < MINIMUM_KEY_BYTES:
        raise ValueError(f"is too short ({len(raw)} bytes, at least {MINIMUM_KEY_BYTES} needed)")
    return raw


class Signer:
    """Signs bodies on push and verifies them before they are unpickled."""

    def __init__(self, key: str | bytes | None, previous_keys: Iterable[str | bytes] = ()) -> None:
        """Sign with `key`; accept signatures made with it or with any of `previous_keys`.

        `previous_keys` are the keys used before the last rotations, newest
        first. They only verify: nothing new is ever signed with them.
        """
        try:
            self._key: bytes | None = decode_key(key)
            previous = [
                decode_previous_key(number, item) for number, item in enumerate(previous_keys, 1)
            ]
            self._problem: MissingKeyError | None = None
        except MissingKeyError as problem:
            self._key, self._problem, previous = None, problem, []
        # Each key's HMAC is keyed once; every signature starts from a copy of it.
        self._keyed = None if self._key is None else hmac.new(self._key, digestmod=hashlib.sha256)
        # The current key is tried first and alone in the common case; earlier
        # keys only when it does not match, each once, in the order given.
        self._previous = tuple(
            hmac.new(raw, digestmod=hashlib.sha256)
            for raw in dict.fromkeys(previous)
            if raw != self._key
        )

    def _mac(self, body: bytes) -> bytes:
        # Callers have asked `require_key` first.
        assert self._keyed is not None
        mac = self._keyed.copy()  # inline rather than `_digest`: this runs on every push and job
        mac.update(body)
        return mac.digest()

    @property
    def ready(self) -> bool:
        """Say whether a usable key is configured."""
        return self._key is not None

    def require_key(self) -> bytes:
        """Return the key, or raise `MissingKeyError` saying what is missing or unusable."""
        if self._key is None:
            assert self._problem is not None
            raise MissingKeyError(str(self._problem))
        return self._key

    def dump(self, job: dict[str, Any]) -> bytes:
        """Pickle `job` and return the signed body."""
        self.require_key()
        try:
            body = _dumps(job)
        except Exception as error:
            raise PayloadError(f"cannot serialize {job.get('name')}: {error}") from error
        return MAGIC + self._mac(body) + body

    def verify(self, signed: bytes) -> bytes:
        """Return the pickled body of `signed` once its signature checks out."""
        self.require_key()
        if not isinstance(signed, bytes | bytearray | memoryview):
            raise CorruptPayloadError(f"payload is {type(signed).__name__}, not bytes")
        signed = bytes(signed)
        if not signed.startswith(MAGIC) or len(signed) <= len(MAGIC) + DIGEST_SIZE:
            if signed.startswith(b"\x80"):  # a bare pickle: someone tried to skip the signature
                raise ForgedPayloadError("payload is an unsigned pickle")
            raise CorruptPayloadError("payload does not start with a signed header")
        mac_end = len(MAGIC) + DIGEST_SIZE
        mac, body = signed[len(MAGIC) : mac_end], signed[mac_end:]
        if hmac.compare_digest(mac, self._mac(body)) or any(
            hmac.compare_digest(mac, _digest(keyed, body)) for keyed in self._previous
        ):
            return body
        if self._previous:
            raise ForgedPayloadError(
                "payload signature matches neither the application key nor a previous key"
            )
        raise ForgedPayloadError("payload signature does not match the application key")

    def load(self, signed: bytes) -> dict[str, Any]:
        """Verify `signed`, then unpickle and return the job dict."""
        body = self.verify(signed)
        try:
            job = pickle.loads(body)
        except Exception as error:
            raise CorruptPayloadError(f"signed payload cannot be loaded: {error}") from error
        if not isinstance(job, dict) or "obj" not in job:
            raise CorruptPayloadError("signed payload is not a job")
        return job


def _digest(keyed: hmac.HMAC, body: bytes) -> bytes:
    """Return the HMAC of `body` from a copy of the already keyed `keyed`."""
    mac = keyed.copy()
    mac.update(body)
    return mac.digest()


def _dumps(job: dict[str, Any]) -> bytes:
    """Pickle `job`: plain `pickle` when cloudpickle would make the same bytes' meaning.

    The common push, a job class importable by name with arguments made of
    plain values, is pickled by reference either way; the standard pickler
    does it without cloudpickle's per-call set-up. Anything else (instances,
    functions, lambdas, classes of `__main__`, other argument types) goes
    through cloudpickle.
    """
    if _by_reference(job["obj"]) and _plain(job["args"]) and _plain(job["kwargs"]):
        return pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
    return cloudpickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)


# cloudpickle's own rule for what it pickles by reference (absent: never guess).
_should_pickle_by_reference = getattr(
    getattr(cloudpickle, "cloudpickle", None), "_should_pickle_by_reference", None
)
_PLAIN_TYPES = frozenset({str, int, float, bool, bytes, type(None)})


def _by_reference(obj: Any) -> bool:
    return (
        isinstance(obj, type)
        and _should_pickle_by_reference is not None
        and bool(_should_pickle_by_reference(obj))
    )


def _plain(value: Any, depth: int = 0) -> bool:
    """Say whether `value` is built only of plain values (exact types, shallow nesting)."""
    kind = type(value)
    if kind in _PLAIN_TYPES:
        return True
    if depth >= 3:
        return False
    if kind is tuple or kind is list:
        return all(_plain(item, depth + 1) for item in value)
    if kind is dict:
        return all(type(key) is str and _plain(item, depth + 1) for key, item in value.items())
    return False


def signature_of(signed: bytes) -> str:
    """Return the hex HMAC a signed body carries, for headers and logs (never trusted as such)."""
    return bytes(signed[len(MAGIC) : len(MAGIC) + DIGEST_SIZE]).hex()


def job_name(obj: Any) -> str:
    """Return the name that identifies `obj` in logs, tables and headers.

    A class or function at the top of its module is `module.Name`. Anything
    nested (a bound method, a lambda, a closure, a local class) is
    `module:qualified.name`, so the colon marks where the module ends:
    `app.jobs.reports:Report.send`, `app.jobs.reports:build.<locals>.<lambda>`.
    """
    if isinstance(obj, functools.partial):
        return job_name(obj.func)
    if inspect.ismethod(obj):
        target = obj.__func__
    elif isinstance(obj, type) or inspect.isfunction(obj) or inspect.isbuiltin(obj):
        target = obj
    else:
        target = type(obj)
    module = getattr(target, "__module__", None) or "?"
    qualname = getattr(target, "__qualname__", None) or repr(target)
    return f"{module}{':' if '.' in qualname else '.'}{qualname}"


def new_job_id() -> str:
    """Return a new job id: 128 random bits as 32 hex digits.

    The generator is our own, seeded from the operating system, and seeded
    again in each new process (however it was forked), so processes never
    repeat each other's ids and an application's `random.seed()` cannot make
    ids repeat. Unlike `uuid.uuid4()` it reads no system randomness per id,
    which shows on every push. Ids are unique, not secret.
    """
    global _ids_pid
    pid = os.getpid()
    if pid != _ids_pid:
        _ids.seed()
        _ids_pid = pid
    return f"{_ids.getrandbits(128):032x}"


_ids = random.Random()
_ids_pid = os.getpid()


def iso_now(now: float) -> str:
    """Return `now` (epoch seconds) as ISO-8601 with microseconds and the local offset.

    The date, time and offset of the current second are worked out once per
    second (by the standard library, so a change of the local offset is seen
    within a second); each push only adds its microseconds.
    """
    global _second_text
    second = math.floor(now)
    cached = _second_text
    if cached is None or cached[0] != second:
        text = datetime.datetime.fromtimestamp(second, datetime.UTC).astimezone().isoformat()
        cached = _second_text = (second, text[:19], text[19:])
    microseconds = min(999_999, int((now - second) * 1_000_000))
    return f"{cached[1]}.{microseconds:06d}{cached[2]}"


# The second `iso_now` last formatted: (epoch second, date and time, offset).
_second_text: tuple[int, str, str] | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    """One queued job: metadata readable without unpickling, and the signed body.

    `attempts` counts the attempts started so far; a driver increments it when
    it hands the job out to run. `available_at` is when the job is due, in
    epoch seconds.
    """

    id: str
    name: str
    queue: str
    driver: str
    created: str
    available_at: float
    body: bytes = field(repr=False)
    attempts: int = 0
    # The database connection holding the job (database driver only).
    connection: str | None = None

    def metadata(self) -> dict[str, Any]:
        """Return every field but the body, as JSON-friendly values."""
        data = asdict(self)
        del data["body"]
        return data

    def to_bytes(self) -> bytes:
        """Return the envelope as one byte string: a JSON header line, then the body."""
        return json.dumps(self.metadata(), separators=(",", ":")).encode() + b"\n" + self.body

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        """Read bytes written by `to_bytes` (raises `CorruptPayloadError`)."""
        header, separator, body = bytes(data).partition(b"\n")
        try:
            if not separator:
                raise ValueError("no header line")
            return cls(**json.loads(header), body=body)
        except (ValueError, TypeError) as error:
            raise CorruptPayloadError(f"envelope cannot be read: {error}") from error

    def started(self) -> Envelope:
        """Return a copy counting one more attempt."""
        return replace(self, attempts=self.attempts + 1)

    def later(self, available_at: float) -> Envelope:
        """Return a copy due at `available_at`."""
        return replace(self, available_at=available_at)


def seal(
    signer: Signer,
    obj: Any,
    *,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    callback: str,
    queue: str,
    driver: str,
    now: float,
    delay: float,
) -> Envelope:
    """Serialize and sign one pushed item into an `Envelope`."""
    identifier = new_job_id()
    name = job_name(obj)
    created = iso_now(now)
    job = {
        "obj": obj,
        "args": tuple(args),
        "kwargs": dict(kwargs),
        "callback": callback,
        "id": identifier,
        "name": name,
        "created": created,
    }
    return Envelope(
        id=identifier,
        name=name,
        queue=queue,
        driver=driver,
        created=created,
        available_at=now + delay,
        body=signer.dump(job),
    )
