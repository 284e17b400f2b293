"""Run owners and heartbeats; run statuses interrupted, crashed, superseded.

A run killed with its process (``kill -9``, a lost machine) stayed ``running`` forever. Each run
now records the process that runs it (``owner_host``, ``owner_pid``, ``owner_started``: the
process's start time, which tells a reused pid apart) and a ``heartbeat_at`` refreshed while it
runs, so the next recast command can mark it ``crashed``. Ctrl-C and SIGTERM end a run as
``interrupted`` (it was ``cancelled``, the status of a cancellation someone asked for), and a
crashed or interrupted run becomes ``superseded`` once a later run of the same shot is done.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 05:40:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

OLD_STATUSES = ('queued', 'running', 'done', 'failed', 'cancelled', 'awaiting_review', 'rejected')
NEW_STATUSES = OLD_STATUSES + ('interrupted', 'crashed', 'superseded')


def _in(values: tuple[str, ...]) -> str:
    return "status IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('run') as batch_op:
        batch_op.add_column(sa.Column('owner_host', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('owner_pid', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('owner_started', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_constraint(op.f('ck_run_status'), type_='check')
        batch_op.create_check_constraint(op.f('ck_run_status'), sa.text(_in(NEW_STATUSES)))


def downgrade() -> None:
    """Downgrade schema (runs in the new statuses become failed, their reason kept in error)."""
    op.execute(sa.text("UPDATE run SET status = 'failed' WHERE status IN ('interrupted', 'crashed', 'superseded')"))
    with op.batch_alter_table('run') as batch_op:
        batch_op.drop_constraint(op.f('ck_run_status'), type_='check')
        batch_op.create_check_constraint(op.f('ck_run_status'), sa.text(_in(OLD_STATUSES)))
        batch_op.drop_column('heartbeat_at')
        batch_op.drop_column('owner_started')
        batch_op.drop_column('owner_pid')
        batch_op.drop_column('owner_host')
