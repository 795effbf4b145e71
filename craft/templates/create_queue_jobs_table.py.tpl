"""Create the queue_jobs table, where the database driver keeps pending jobs.

Revision ID: {revision}
Revises: {down_revision}
Created: {created}
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "{revision}"
down_revision = {down_revision_literal}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "queue_jobs",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True, autoincrement=True,
        ),
        sa.Column("uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("queue", sa.String(191), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column(
            "payload", sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb"),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("available_at", sa.BigInteger(), nullable=False),
        sa.Column("reserved_until", sa.BigInteger(), nullable=True),
        sa.Column("reserved_by", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "queue_jobs_queue_available_at_index", "queue_jobs", ["queue", "available_at", "id"]
    )


def downgrade() -> None:
    op.drop_table("queue_jobs")
