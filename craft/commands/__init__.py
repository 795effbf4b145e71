"""Every craft command, in the order `craft --help` lists them."""

from craft.commands.generate import make_job, make_key
from craft.commands.migrate import migrate, migrate_rollback, migrate_status, queue_table
from craft.commands.queue import (
    queue_clear,
    queue_failed,
    queue_flush,
    queue_forget,
    queue_retry,
    queue_status,
    queue_work,
)

REGISTERED = [
    make_job,
    make_key,
    queue_table,
    migrate,
    migrate_status,
    migrate_rollback,
    queue_work,
    queue_status,
    queue_failed,
    queue_retry,
    queue_forget,
    queue_flush,
    queue_clear,
]
