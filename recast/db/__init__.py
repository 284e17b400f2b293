"""recast.db: the SQL database of recast (SQLAlchemy 2 ORM, Alembic migrations, repository).

* :mod:`recast.db.orm` - the tables (see its docstring for the list and conventions).
* :mod:`recast.db.session` - engines and ``session_scope()``.
* :mod:`recast.db.migrate` - ``upgrade``, ``current_revision``, ``ensure_schema``.
* :mod:`recast.db.repository` - every query and write; the only ORM use outside this package.

Typical use::

    from recast.db import repository as repo
    from recast.db.migrate import ensure_schema
    from recast.db.session import session_scope

    ensure_schema(settings)
    with session_scope(settings) as s:
        run = repo.create_run(s, shot_id, params={...})
"""
