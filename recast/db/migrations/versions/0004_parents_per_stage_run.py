"""Lineage per stage run; shot codes unique within a project.

``asset_parent`` links were keyed by (asset, parent) only, so a content-addressed asset made by
several runs (the same bytes from other inputs) gathered the parents of all of them, and
``recast lineage`` of one run's deliverable listed inputs that run never used. Each link now
records the stage run that made it (``stage_run_id``, NULL for links made outside a stage and
for every link recorded before this revision), with a surrogate ``id`` as the primary key and
two partial unique indexes: a link once per stage run, and once in all without a stage run.

``shot.code`` becomes unique within a project: two identical submissions in the same second
made two shots with one code, and ``recast qc CODE`` could not tell them apart. Existing
duplicates are renamed ``CODE-2``, ``CODE-3``... (the oldest keeps its code) before the unique
index is created.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 05:30:00

"""
import uuid
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_links = sa.table(
    'asset_parent',
    sa.column('id', sa.Uuid()),
    sa.column('asset_id', sa.Uuid()),
    sa.column('parent_id', sa.Uuid()),
)
_shots = sa.table(
    'shot',
    sa.column('id', sa.Uuid()),
    sa.column('project_id', sa.Uuid()),
    sa.column('code', sa.String(200)),
    sa.column('created', sa.DateTime(timezone=True)),
)
_BATCH = 1000


def _give_links_ids(bind: sa.engine.Connection) -> None:
    # Python-side uuid4s: portable (gen_random_uuid() needs PostgreSQL 13, SQLite has none)
    pairs = bind.execute(sa.select(_links.c.asset_id, _links.c.parent_id)).all()
    stmt = _links.update().where(
        _links.c.asset_id == sa.bindparam('a'), _links.c.parent_id == sa.bindparam('p')
    ).values(id=sa.bindparam('i'))
    for start in range(0, len(pairs), _BATCH):
        bind.execute(stmt, [{'a': a, 'p': p, 'i': uuid.uuid4()} for a, p in pairs[start:start + _BATCH]])


def _rename_duplicate_codes(bind: sa.engine.Connection) -> None:
    rows = bind.execute(
        sa.select(_shots.c.id, _shots.c.project_id, _shots.c.code).order_by(_shots.c.created, _shots.c.id)
    ).all()
    taken = {(project, code) for _, project, code in rows}
    seen: set[tuple[object, str]] = set()
    for shot_id, project, code in rows:
        if (project, code) not in seen:
            seen.add((project, code))
            continue
        n = 2
        while (project, f"{code}-{n}") in taken:
            n += 1
        new = f"{code}-{n}"
        taken.add((project, new))
        seen.add((project, new))
        bind.execute(_shots.update().where(_shots.c.id == shot_id).values(code=new))


def upgrade() -> None:
    """Upgrade schema."""
    bind = op.get_bind()
    with op.batch_alter_table('asset_parent') as batch_op:
        batch_op.add_column(sa.Column('id', sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column('stage_run_id', sa.Uuid(), nullable=True))
    _give_links_ids(bind)
    with op.batch_alter_table('asset_parent') as batch_op:
        batch_op.alter_column('id', existing_type=sa.Uuid(), nullable=False)
        batch_op.drop_constraint(op.f('pk_asset_parent'), type_='primary')
        batch_op.create_primary_key(op.f('pk_asset_parent'), ['id'])
        batch_op.create_foreign_key(op.f('fk_asset_parent_stage_run_id_stage_run'), 'stage_run', ['stage_run_id'], ['id'])
    op.create_index(op.f('ix_asset_parent_asset_id'), 'asset_parent', ['asset_id'], unique=False)
    op.create_index(op.f('ix_asset_parent_stage_run_id'), 'asset_parent', ['stage_run_id'], unique=False)
    op.create_index('uq_asset_parent_link', 'asset_parent', ['asset_id', 'parent_id'], unique=True,
                    sqlite_where=sa.text('stage_run_id IS NULL'), postgresql_where=sa.text('stage_run_id IS NULL'))
    op.create_index('uq_asset_parent_stage_run_link', 'asset_parent', ['asset_id', 'parent_id', 'stage_run_id'], unique=True,
                    sqlite_where=sa.text('stage_run_id IS NOT NULL'), postgresql_where=sa.text('stage_run_id IS NOT NULL'))

    _rename_duplicate_codes(bind)
    op.drop_index('ix_shot_project_id_code', table_name='shot')
    op.create_index('uq_shot_project_id_code', 'shot', ['project_id', 'code'], unique=True)


def downgrade() -> None:
    """Downgrade schema: one link per (asset, parent) again (the oldest is kept); codes stay renamed."""
    bind = op.get_bind()
    op.drop_index('uq_shot_project_id_code', table_name='shot')
    op.create_index('ix_shot_project_id_code', 'shot', ['project_id', 'code'], unique=False)

    op.drop_index('uq_asset_parent_stage_run_link', table_name='asset_parent')
    op.drop_index('uq_asset_parent_link', table_name='asset_parent')
    op.drop_index(op.f('ix_asset_parent_stage_run_id'), table_name='asset_parent')
    op.drop_index(op.f('ix_asset_parent_asset_id'), table_name='asset_parent')
    links = sa.table('asset_parent', sa.column('id', sa.Uuid()), sa.column('asset_id', sa.Uuid()),
                     sa.column('parent_id', sa.Uuid()), sa.column('created', sa.DateTime(timezone=True)))
    seen: set[tuple[object, object]] = set()
    extra = []
    for link_id, a, p in bind.execute(sa.select(links.c.id, links.c.asset_id, links.c.parent_id).order_by(links.c.created)).all():
        if (a, p) in seen:
            extra.append(link_id)
        seen.add((a, p))
    for start in range(0, len(extra), _BATCH):
        bind.execute(links.delete().where(links.c.id.in_(extra[start:start + _BATCH])))
    with op.batch_alter_table('asset_parent') as batch_op:
        batch_op.drop_constraint(op.f('fk_asset_parent_stage_run_id_stage_run'), type_='foreignkey')
        batch_op.drop_constraint(op.f('pk_asset_parent'), type_='primary')
        batch_op.create_primary_key(op.f('pk_asset_parent'), ['asset_id', 'parent_id'])
        batch_op.drop_column('stage_run_id')
        batch_op.drop_column('id')
