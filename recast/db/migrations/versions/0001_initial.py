"""Initial schema: every table of recast 0.1.

Generated with autogenerate against an empty SQLite database, then read over by hand:
server defaults are portable expressions (``now()``, ``true``/``false``) instead of SQLite text,
and indexes of new tables are created directly rather than in batch blocks.

Revision ID: 0001
Revises:
Create Date: 2026-11-23 11:15:59.142226

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0001'
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('asset',
    sa.Column('uri', sa.String(length=2048), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('media_type', sa.String(length=200), nullable=False),
    sa.Column('media_info', sa.JSON(), nullable=True),
    sa.Column('role', sa.String(length=32), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('updated', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_asset')),
    sa.UniqueConstraint('uri', 'sha256', name=op.f('uq_asset_uri_sha256'))
    )
    op.create_index(op.f('ix_asset_role'), 'asset', ['role'], unique=False)
    op.create_index(op.f('ix_asset_sha256'), 'asset', ['sha256'], unique=False)
    op.create_index(op.f('ix_asset_uri'), 'asset', ['uri'], unique=False)

    op.create_table('audit_event',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('action', sa.String(length=100), nullable=False),
    sa.Column('subject_type', sa.String(length=50), nullable=False),
    sa.Column('subject_id', sa.String(length=200), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_event'))
    )
    op.create_index(op.f('ix_audit_event_action'), 'audit_event', ['action'], unique=False)
    op.create_index(op.f('ix_audit_event_created'), 'audit_event', ['created'], unique=False)

    op.create_table('identity',
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('updated', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_identity'))
    )
    op.create_index(op.f('ix_identity_name'), 'identity', ['name'], unique=False)

    op.create_table('project',
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('media_type', sa.String(length=16), nullable=True),
    sa.Column('consent_required', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('commercial', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('qc_thresholds', sa.JSON(), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('updated', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.CheckConstraint("media_type IS NULL OR media_type IN ('film', 'ad')", name=op.f('ck_project_media_type')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_project')),
    sa.UniqueConstraint('name', name=op.f('uq_project_name'))
    )
    op.create_table('asset_parent',
    sa.Column('asset_id', sa.Uuid(), nullable=False),
    sa.Column('parent_id', sa.Uuid(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['asset_id'], ['asset.id'], name=op.f('fk_asset_parent_asset_id_asset')),
    sa.ForeignKeyConstraint(['parent_id'], ['asset.id'], name=op.f('fk_asset_parent_parent_id_asset')),
    sa.PrimaryKeyConstraint('asset_id', 'parent_id', name=op.f('pk_asset_parent'))
    )
    op.create_index(op.f('ix_asset_parent_parent_id'), 'asset_parent', ['parent_id'], unique=False)

    op.create_table('consent',
    sa.Column('identity_id', sa.Uuid(), nullable=False),
    sa.Column('scope', sa.JSON(), nullable=False),
    sa.Column('valid_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('valid_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('release_asset_id', sa.Uuid(), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('updated', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['identity_id'], ['identity.id'], name=op.f('fk_consent_identity_id_identity')),
    sa.ForeignKeyConstraint(['release_asset_id'], ['asset.id'], name=op.f('fk_consent_release_asset_id_asset')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_consent'))
    )
    op.create_index(op.f('ix_consent_identity_id'), 'consent', ['identity_id'], unique=False)

    op.create_table('identity_photo',
    sa.Column('identity_id', sa.Uuid(), nullable=False),
    sa.Column('asset_id', sa.Uuid(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['asset_id'], ['asset.id'], name=op.f('fk_identity_photo_asset_id_asset')),
    sa.ForeignKeyConstraint(['identity_id'], ['identity.id'], name=op.f('fk_identity_photo_identity_id_identity'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('identity_id', 'asset_id', name=op.f('pk_identity_photo'))
    )
    op.create_index(op.f('ix_identity_photo_asset_id'), 'identity_photo', ['asset_id'], unique=False)

    op.create_table('shot',
    sa.Column('project_id', sa.Uuid(), nullable=False),
    sa.Column('code', sa.String(length=200), nullable=False),
    sa.Column('plate_asset_id', sa.Uuid(), nullable=True),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=32), server_default='new', nullable=False),
    sa.Column('identity_id', sa.Uuid(), nullable=True),
    sa.Column('source_asset_ids', sa.JSON(), nullable=False),
    sa.Column('priority', sa.Integer(), server_default='0', nullable=False),
    sa.Column('idempotency_key', sa.String(length=200), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('updated', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['identity_id'], ['identity.id'], name=op.f('fk_shot_identity_id_identity')),
    sa.ForeignKeyConstraint(['plate_asset_id'], ['asset.id'], name=op.f('fk_shot_plate_asset_id_asset')),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_shot_project_id_project')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_shot')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_shot_idempotency_key'))
    )
    op.create_index('ix_shot_project_id_code', 'shot', ['project_id', 'code'], unique=False)
    op.create_index(op.f('ix_shot_status'), 'shot', ['status'], unique=False)

    op.create_table('run',
    sa.Column('shot_id', sa.Uuid(), nullable=False),
    sa.Column('status', sa.String(length=32), server_default='queued', nullable=False),
    sa.Column('params', sa.JSON(), nullable=True),
    sa.Column('prefect_flow_run_id', sa.String(length=64), nullable=True),
    sa.Column('started', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('output_asset_id', sa.Uuid(), nullable=True),
    sa.Column('summary', sa.JSON(), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('updated', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.CheckConstraint("status IN ('queued', 'running', 'done', 'failed', 'cancelled', 'awaiting_review', 'rejected')", name=op.f('ck_run_status')),
    sa.ForeignKeyConstraint(['output_asset_id'], ['asset.id'], name=op.f('fk_run_output_asset_id_asset')),
    sa.ForeignKeyConstraint(['shot_id'], ['shot.id'], name=op.f('fk_run_shot_id_shot')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_run'))
    )
    op.create_index(op.f('ix_run_prefect_flow_run_id'), 'run', ['prefect_flow_run_id'], unique=False)
    op.create_index(op.f('ix_run_shot_id'), 'run', ['shot_id'], unique=False)
    op.create_index(op.f('ix_run_status'), 'run', ['status'], unique=False)

    op.create_table('qc_result',
    sa.Column('run_id', sa.Uuid(), nullable=False),
    sa.Column('shot_id', sa.Uuid(), nullable=False),
    sa.Column('verdict', sa.String(length=16), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('reasons', sa.JSON(), nullable=False),
    sa.Column('report_asset_id', sa.Uuid(), nullable=True),
    sa.Column('models', sa.JSON(), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('updated', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.CheckConstraint("verdict IN ('pass', 'review', 'fail')", name=op.f('ck_qc_result_verdict')),
    sa.ForeignKeyConstraint(['report_asset_id'], ['asset.id'], name=op.f('fk_qc_result_report_asset_id_asset')),
    sa.ForeignKeyConstraint(['run_id'], ['run.id'], name=op.f('fk_qc_result_run_id_run')),
    sa.ForeignKeyConstraint(['shot_id'], ['shot.id'], name=op.f('fk_qc_result_shot_id_shot')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_qc_result'))
    )
    op.create_index(op.f('ix_qc_result_run_id'), 'qc_result', ['run_id'], unique=False)
    op.create_index(op.f('ix_qc_result_shot_id'), 'qc_result', ['shot_id'], unique=False)

    op.create_table('render',
    sa.Column('run_id', sa.Uuid(), nullable=False),
    sa.Column('shot_id', sa.Uuid(), nullable=False),
    sa.Column('asset_id', sa.Uuid(), nullable=False),
    sa.Column('approved', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('delivered_to', sa.Text(), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('updated', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['asset_id'], ['asset.id'], name=op.f('fk_render_asset_id_asset')),
    sa.ForeignKeyConstraint(['run_id'], ['run.id'], name=op.f('fk_render_run_id_run')),
    sa.ForeignKeyConstraint(['shot_id'], ['shot.id'], name=op.f('fk_render_shot_id_shot')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_render'))
    )
    op.create_index(op.f('ix_render_run_id'), 'render', ['run_id'], unique=False)
    op.create_index(op.f('ix_render_shot_id'), 'render', ['shot_id'], unique=False)

    op.create_table('review',
    sa.Column('shot_id', sa.Uuid(), nullable=False),
    sa.Column('run_id', sa.Uuid(), nullable=True),
    sa.Column('decision', sa.String(length=32), nullable=False),
    sa.Column('reviewer', sa.String(length=200), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('updated', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['run.id'], name=op.f('fk_review_run_id_run')),
    sa.ForeignKeyConstraint(['shot_id'], ['shot.id'], name=op.f('fk_review_shot_id_shot')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_review'))
    )
    op.create_index(op.f('ix_review_run_id'), 'review', ['run_id'], unique=False)
    op.create_index(op.f('ix_review_shot_id'), 'review', ['shot_id'], unique=False)

    op.create_table('stage_run',
    sa.Column('run_id', sa.Uuid(), nullable=True),
    sa.Column('shot_id', sa.Uuid(), nullable=True),
    sa.Column('stage', sa.String(length=32), nullable=False),
    sa.Column('chunk_index', sa.Integer(), nullable=True),
    sa.Column('frame_start', sa.Integer(), nullable=True),
    sa.Column('frame_end', sa.Integer(), nullable=True),
    sa.Column('work_key', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reused_from_id', sa.Uuid(), nullable=True),
    sa.Column('prefect_flow_run_id', sa.String(length=64), nullable=True),
    sa.Column('prefect_task_run_id', sa.String(length=64), nullable=True),
    sa.Column('params', sa.JSON(), nullable=True),
    sa.Column('models', sa.JSON(), nullable=True),
    sa.Column('code_version', sa.String(length=64), nullable=True),
    sa.Column('input_asset_ids', sa.JSON(), nullable=True),
    sa.Column('output_asset_ids', sa.JSON(), nullable=True),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('metrics', sa.JSON(), nullable=True),
    sa.Column('started', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended', sa.DateTime(timezone=True), nullable=True),
    sa.Column('host', sa.String(length=255), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column('updated', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.CheckConstraint("status IN ('running', 'done', 'failed', 'reused')", name=op.f('ck_stage_run_status')),
    sa.ForeignKeyConstraint(['reused_from_id'], ['stage_run.id'], name=op.f('fk_stage_run_reused_from_id_stage_run')),
    sa.ForeignKeyConstraint(['run_id'], ['run.id'], name=op.f('fk_stage_run_run_id_run')),
    sa.ForeignKeyConstraint(['shot_id'], ['shot.id'], name=op.f('fk_stage_run_shot_id_shot')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_stage_run'))
    )
    op.create_index(op.f('ix_stage_run_run_id'), 'stage_run', ['run_id'], unique=False)
    op.create_index(op.f('ix_stage_run_work_key'), 'stage_run', ['work_key'], unique=False)



def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index(op.f('ix_stage_run_work_key'), table_name='stage_run')
    op.drop_index(op.f('ix_stage_run_run_id'), table_name='stage_run')

    op.drop_table('stage_run')
    op.drop_index(op.f('ix_review_shot_id'), table_name='review')
    op.drop_index(op.f('ix_review_run_id'), table_name='review')

    op.drop_table('review')
    op.drop_index(op.f('ix_render_shot_id'), table_name='render')
    op.drop_index(op.f('ix_render_run_id'), table_name='render')

    op.drop_table('render')
    op.drop_index(op.f('ix_qc_result_shot_id'), table_name='qc_result')
    op.drop_index(op.f('ix_qc_result_run_id'), table_name='qc_result')

    op.drop_table('qc_result')
    op.drop_index(op.f('ix_run_status'), table_name='run')
    op.drop_index(op.f('ix_run_shot_id'), table_name='run')
    op.drop_index(op.f('ix_run_prefect_flow_run_id'), table_name='run')

    op.drop_table('run')
    op.drop_index(op.f('ix_shot_status'), table_name='shot')
    op.drop_index('ix_shot_project_id_code', table_name='shot')

    op.drop_table('shot')
    op.drop_index(op.f('ix_identity_photo_asset_id'), table_name='identity_photo')

    op.drop_table('identity_photo')
    op.drop_index(op.f('ix_consent_identity_id'), table_name='consent')

    op.drop_table('consent')
    op.drop_index(op.f('ix_asset_parent_parent_id'), table_name='asset_parent')

    op.drop_table('asset_parent')
    op.drop_table('project')
    op.drop_index(op.f('ix_identity_name'), table_name='identity')

    op.drop_table('identity')
    op.drop_index(op.f('ix_audit_event_created'), table_name='audit_event')
    op.drop_index(op.f('ix_audit_event_action'), table_name='audit_event')

    op.drop_table('audit_event')
    op.drop_index(op.f('ix_asset_uri'), table_name='asset')
    op.drop_index(op.f('ix_asset_sha256'), table_name='asset')
    op.drop_index(op.f('ix_asset_role'), table_name='asset')

    op.drop_table('asset')
