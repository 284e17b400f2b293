"""Render provenance: watermark payload, consent used, signed flag.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 12:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('render') as batch_op:
        batch_op.add_column(sa.Column('watermark_payload', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('consent_id', sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column('signed', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.create_foreign_key(op.f('fk_render_consent_id_consent'), 'consent', ['consent_id'], ['id'])
    op.create_index(op.f('ix_render_watermark_payload'), 'render', ['watermark_payload'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index(op.f('ix_render_watermark_payload'), table_name='render')
    with op.batch_alter_table('render') as batch_op:
        batch_op.drop_constraint(op.f('fk_render_consent_id_consent'), type_='foreignkey')
        batch_op.drop_column('signed')
        batch_op.drop_column('consent_id')
        batch_op.drop_column('watermark_payload')
