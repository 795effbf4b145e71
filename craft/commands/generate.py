"""`craft job` and `craft key`: files and secrets a project needs."""

from __future__ import annotations

import base64
import keyword
import os
import secrets
from importlib import resources
from pathlib import Path

import click
from dotenv import dotenv_values, set_key

from craft.errors import CraftError
from providers.environment import comma_separated
from queueing.payload import MAKE_KEY_HINT, key_bytes


@click.command("job")
@click.argument("name")
def make_job(name: str) -> None:
    """Write app/jobs/NAME.py, a Queueable job to fill in."""
    if not name.isidentifier() or keyword.iskeyword(name):
        raise CraftError(f"{name!r} is not a valid class name (letters, digits, _; not a keyword)")
    target = Path.cwd() / "app" / "jobs" / f"{name}.py"
    if target.exists():
        raise CraftError(f"{target.relative_to(Path.cwd())} already exists; not overwriting it")
    template = resources.files("craft").joinpath("templates/job.py.tpl").read_text()
    target.parent.mkdir(parents=True, exist_ok=True)
    init = target.parent / "__init__.py"
    if not init.exists():
        init.touch()
    target.write_text(template.replace("{name}", name))
    click.echo(f"created {target.relative_to(Path.cwd())}")


def new_key() -> str:
    """Return a fresh application key: 32 random bytes, base64."""
    return "base64:" + base64.b64encode(secrets.token_bytes(32)).decode()


@click.command("key")
@click.option("--store", is_flag=True, help="Write the key to .env as APP_KEY.")
@click.option("--force", is_flag=True, help="With --store, replace an existing APP_KEY.")
@click.option(
    "--if-missing", is_flag=True, help="With --store, do nothing when .env already has a key."
)
@click.option(
    "--rotate",
    is_flag=True,
    help="Write a new APP_KEY to .env and put the old one first in APP_PREVIOUS_KEYS, "
    "so jobs signed with it still run. Earlier previous keys are kept.",
)
def make_key(store: bool, force: bool, if_missing: bool, rotate: bool) -> None:
    """Print a new application key, or store it in .env with --store or --rotate."""
    path = Path.cwd() / ".env"
    if rotate:
        if force or if_missing:
            raise CraftError(
                "--rotate keeps the old key; it cannot be combined with --force or --if-missing"
            )
        rotate_key(path)
        return
    key = new_key()
    if not store:
        click.echo(key)
        return
    existing = dotenv_values(path).get("APP_KEY") if path.exists() else None
    if existing and not force:
        if if_missing:
            click.echo("APP_KEY already set in .env; kept it")
            return
        raise CraftError(
            "APP_KEY is already set in .env; refusing to replace it "
            "(--rotate replaces it and keeps the old one for queued jobs; --force replaces it, "
            "and payloads signed with the old key will be refused)"
        )
    if not path.exists():
        path.touch(mode=0o600)
    set_key(str(path), "APP_KEY", key, quote_mode="never")
    click.echo("APP_KEY written to .env")


def rotate_key(path: Path) -> None:
    """Replace APP_KEY in the .env at `path`, the old key moving to the front of APP_PREVIOUS_KEYS.

    There is no cap on APP_PREVIOUS_KEYS: dropping a key on our own could
    strand jobs still signed with it, so the operator removes one once no
    queued or failed job needs it.
    """
    values = dotenv_values(path) if path.exists() else {}
    current = (values.get("APP_KEY") or "").strip()
    if not current:
        raise CraftError(f"no APP_KEY in .env to rotate: {MAKE_KEY_HINT}")
    try:
        key_bytes(current)
    except ValueError as problem:
        raise CraftError(
            f"APP_KEY in .env {problem}, so it is not worth keeping: "
            "replace it with `craft key --store --force`"
        ) from None
    previous = [current] + [
        key for key in comma_separated(values.get("APP_PREVIOUS_KEYS") or "") if key != current
    ]
    # The old key is saved before it is replaced: stopped between the two
    # writes, .env still verifies everything queued.
    set_key(str(path), "APP_PREVIOUS_KEYS", ",".join(previous), quote_mode="never")
    set_key(str(path), "APP_KEY", new_key(), quote_mode="never")
    click.echo(
        f"APP_KEY rotated in .env; APP_PREVIOUS_KEYS now holds {len(previous)} key(s), "
        "the old one first, to verify jobs signed before"
    )
    overridden = [name for name in ("APP_KEY", "APP_PREVIOUS_KEYS") if name in os.environ]
    if overridden:
        verb = "is" if len(overridden) == 1 else "are"
        click.echo(
            f"craft: warning: {' and '.join(overridden)} {verb} also set in the environment, "
            "which wins over .env",
            err=True,
        )
