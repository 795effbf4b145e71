"""`craft job` and `craft key`: files and secrets a project needs."""

from __future__ import annotations

import base64
import keyword
import secrets
from importlib import resources
from pathlib import Path

import click
from dotenv import dotenv_values, set_key

from craft.errors import CraftError


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
def make_key(store: bool, force: bool, if_missing: bool) -> None:
    """Print a new application key, or store it in .env with --store."""
    key = new_key()
    if not store:
        click.echo(key)
        return
    path = Path.cwd() / ".env"
    existing = dotenv_values(path).get("APP_KEY") if path.exists() else None
    if existing and not force:
        if if_missing:
            click.echo("APP_KEY already set in .env; kept it")
            return
        raise CraftError(
            "APP_KEY is already set in .env; refusing to replace it "
            "(--force replaces it, and payloads signed with the old key will be refused)"
        )
    if not path.exists():
        path.touch(mode=0o600)
    set_key(str(path), "APP_KEY", key, quote_mode="never")
    click.echo("APP_KEY written to .env")
