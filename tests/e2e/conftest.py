"""End-to-end tests run the real flow against one Prefect test server per session."""

import pytest


@pytest.fixture(scope="session", autouse=True)
def _prefect(prefect_server):
    yield
