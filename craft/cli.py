"""The `craft` entry point: a Click group, and one clear line for every error."""

from __future__ import annotations

import logging
import os
import sys
import traceback

import click

from craft.commands import REGISTERED
from craft.errors import explain
from providers import find_project_root

# The distribution `craft --version` reports.
DISTRIBUTION = "queueing-toolkit"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name=DISTRIBUTION, prog_name="craft", message="%(prog)s %(version)s")
def cli() -> None:
    """Jobs and queues: make jobs and keys, migrate, run and inspect workers.

    Run craft anywhere inside the project: it works from the nearest folder
    above that holds config/application.py (or $QUEUE_PROJECT_ROOT).
    """
    root = find_project_root()
    if root is not None:
        os.chdir(root)


for command in REGISTERED:
    cli.add_command(command)


def main() -> None:
    """Run craft; any failure becomes one line on stderr and a non-zero exit."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # the amqp driver reports in one line
    try:
        cli.main(prog_name="craft", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("craft: aborted", err=True)
        sys.exit(130)
    except click.UsageError as error:
        command = error.ctx.command_path if error.ctx else "craft"
        click.echo(f"craft: {error.format_message()} (see '{command} --help')", err=True)
        sys.exit(error.exit_code)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as error:
        if os.environ.get("CRAFT_DEBUG"):
            traceback.print_exc()
        click.echo(f"craft: {explain(error)}", err=True)
        sys.exit(1)
    sys.exit(0)
