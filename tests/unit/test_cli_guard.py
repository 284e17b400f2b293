"""The exit code of a lost database connection: the environment (6), not a bug (1)."""

from __future__ import annotations

import pytest
import sqlalchemy.exc as sa_exc

from recast.cli.guard import EXIT_INTERNAL, EXIT_SERVICE, exit_code_for


def _terminated() -> sa_exc.OperationalError:
    # what psycopg reports through SQLAlchemy when PostgreSQL terminates the backend mid-run
    return sa_exc.OperationalError("UPDATE run SET status=%(status)s", {}, Exception("terminating connection due to administrator command"))


def test_a_terminated_connection_raised_from_inside_a_task_is_exit_6():
    try:
        try:
            raise _terminated()
        except sa_exc.OperationalError as inner:
            raise RuntimeError("task swap-3 failed") from inner
    except RuntimeError as outer:
        assert exit_code_for(outer) == EXIT_SERVICE


@pytest.mark.parametrize("exc", [sa_exc.PendingRollbackError("Can't reconnect until invalid transaction is rolled back"),
                                 sa_exc.InterfaceError("SELECT 1", {}, Exception("connection already closed"))])
def test_an_unusable_connection_is_exit_6(exc):
    assert exit_code_for(exc) == EXIT_SERVICE


def test_other_errors_stay_internal():
    assert exit_code_for(ValueError("a bug")) == EXIT_INTERNAL
