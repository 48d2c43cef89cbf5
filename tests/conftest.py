"""Repository-wide fixtures: a throwaway PostgreSQL server (session) and a fresh database per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from phoenix_recsys.testing.postgres import PostgresServer, PostgresUnavailable

_db_counter = itertools.count()


def _started_pg_server() -> Iterator[PostgresServer]:
    """A new PostgreSQL cluster, stopped afterwards; skips (with the reason) when unavailable."""
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as e:
        pytest.skip(f"PostgreSQL unavailable: {e}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the whole session; skips (with the reason) when unavailable."""
    yield from _started_pg_server()


@pytest.fixture
def own_pg_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of the test's own, for tests that stop and start it; skips when unavailable."""
    yield from _started_pg_server()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """The URL of a new empty database on the session's server (one per test)."""
    return pg_server.create_database(f"t{next(_db_counter)}")
