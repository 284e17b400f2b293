"""Alembic environment of recast's database (configured programmatically by recast.db.migrate).

The migration target is the ORM metadata in :mod:`recast.db.orm`. recast passes an open
connection in ``config.attributes["connection"]``; without one (plain ``alembic`` command line
use), the URL comes from the ``sqlalchemy.url`` option. SQLite gets ``render_as_batch=True``
because it cannot ALTER most things in place: batch mode recreates the table instead.
"""

from __future__ import annotations

from typing import Any

from alembic import context

from recast.db.orm import Base, UTCDateTime

config = context.config
target_metadata = Base.metadata


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Render recast's own column types as their plain SQLAlchemy equivalents.

    Migrations must not import the ORM module (its types may change later); UTCDateTime is
    only a Python-side conversion around ``DateTime(timezone=True)``.
    """
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(connection: Any = None, url: str | None = None) -> None:
    dialect = connection.dialect.name if connection is not None else url.split(":", 1)[0].split("+", 1)[0]
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        render_as_batch=dialect == "sqlite",
        render_item=render_item,
        compare_type=True,
        literal_binds=connection is None,
    )


def run_migrations_offline() -> None:
    """Emit SQL to stdout instead of running it (``--sql``)."""
    _configure(url=config.get_main_option("sqlalchemy.url"))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run migrations on recast's connection, or on one made from ``sqlalchemy.url``."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    from recast.db.session import make_engine

    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as conn:
            _configure(connection=conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
