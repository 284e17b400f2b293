"""API tokens (bearer tokens of the HTTP API, scoped to a project) and run.cancel_requested_at.

Written by hand in the style of 0001 (checked against the ORM by tests/unit/test_db.py).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 10:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('api_token',
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('project_id', sa.Uuid(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('updated', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_api_token_project_id_project')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_token')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_token_token_hash'))
    )
    op.create_index(op.f('ix_api_token_project_id'), 'api_token', ['project_id'], unique=False)
    # batch mode: SQLite recreates the table (render_as_batch in env.py); PostgreSQL alters in place
    with op.batch_alter_table('run') as batch_op:
        batch_op.add_column(sa.Column('cancel_requested_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('run') as batch_op:
        batch_op.drop_column('cancel_requested_at')
    op.drop_index(op.f('ix_api_token_project_id'), table_name='api_token')
    op.drop_table('api_token')
