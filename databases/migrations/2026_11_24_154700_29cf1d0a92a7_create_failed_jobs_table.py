"""Create the failed_jobs table, where every driver keeps jobs that failed for good.

Revision ID: 29cf1d0a92a7
Revises: 6c6a1df912f9
Created: 2026-11-24T15:47:00+00:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "29cf1d0a92a7"
down_revision = '6c6a1df912f9'
branch_labels = None
depends_on = None


def upgrade() -> None:
    long_text = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
    op.create_table(
        "failed_jobs",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True, autoincrement=True,
        ),
        sa.Column("uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("driver", sa.String(32), nullable=False),
        sa.Column("connection", sa.String(64), nullable=True),
        sa.Column("queue", sa.String(191), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column(
            "payload", sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb"),
            nullable=False,
        ),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("exception_type", sa.String(255), nullable=False),
        sa.Column("message", long_text, nullable=False),
        sa.Column("traceback", long_text, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("failed_jobs_failed_at_index", "failed_jobs", ["failed_at"])


def downgrade() -> None:
    op.drop_table("failed_jobs")
