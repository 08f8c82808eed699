"""Fixtures for the team path: PostgreSQL and an ``mlflow server`` backed by it.

tests/conftest.py registers them with ``pytest_plugins = ["tests.team_services"]``. (Importing
the three fixtures into a conftest works too; importing them into a test module as well would
define them twice, and start the services twice in one session.)

The services are either given or started once per session:

* ``NBMLOPS_TEST_POSTGRES`` (an admin URI: a superuser on the ``postgres`` database) and
  ``NBMLOPS_TEST_TRACKING_URI`` set, e.g. from ``eval "$(grep NBMLOPS_TEST_ DIR/env)"`` after
  ``.ci/team-services start DIR``: the tests use those services and stop nothing.
* Neither set: ``.ci/team-services start`` in a session temporary directory, and ``stop`` at
  the end of the session.

Only the ``NBMLOPS_TEST_*`` variables are read, never ``MLFLOW_TRACKING_URI`` or
``NBMLOPS_LOG_URI``: tests of the embedded default store must not find a server by accident.

Without PostgreSQL (not installed, and the script cannot install it) the tests that use these
fixtures are skipped; with ``NBMLOPS_REQUIRE_POSTGRES=1`` they fail instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "team-services"
NO_POSTGRES = 3  # the script's exit status when PostgreSQL is missing and cannot be installed

_STARTED = pytest.StashKey[dict[str, str]]()


def _required() -> bool:
    return os.environ.get("NBMLOPS_REQUIRE_POSTGRES") == "1"


def _read_env_file(path: Path) -> dict[str, str]:
    """``export NAME=VALUE`` lines as a dict."""
    env = {}
    for line in path.read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        if value:
            env[name] = value
    return env


def _run(command: str, directory: Path) -> subprocess.CompletedProcess[str]:
    # Free ports always: a PGPORT set for libpq elsewhere is likely taken.
    env = {k: v for k, v in os.environ.items() if k not in ("PGPORT", "MLFLOW_PORT")}
    env["MLFLOW_BIN"] = str(Path(sys.executable).parent / "mlflow")
    return subprocess.run(
        [str(SCRIPT), command, str(directory)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,  # may include apt-get install postgresql
        check=False,
    )


@pytest.fixture(scope="session")
def postgres_admin_uri(request, tmp_path_factory) -> Iterator[str]:
    """A superuser URI on the ``postgres`` database; tests create their own databases."""
    given = os.environ.get("NBMLOPS_TEST_POSTGRES")
    if given:
        yield given
        return

    directory = tmp_path_factory.mktemp("team-services")
    try:
        started = _run("start", directory)
        if started.returncode == NO_POSTGRES and not _required():
            pytest.skip(f"no PostgreSQL ({started.stderr.strip()})")
        if started.returncode != 0:
            pytest.fail(
                f"{SCRIPT.name} start {directory} failed ({started.returncode}):\n"
                f"{started.stdout}{started.stderr}",
                pytrace=False,
            )
        env = _read_env_file(directory / "env")
        request.config.stash[_STARTED] = env
        yield env["NBMLOPS_TEST_POSTGRES"]
    finally:
        stopped = _run("stop", directory)
        # When the postgres user could not reach the directory, the cluster lives elsewhere.
        cluster = (directory / "pg").resolve()
        if not cluster.is_relative_to(directory):
            shutil.rmtree(cluster, ignore_errors=True)
        if stopped.returncode != 0:
            pytest.fail(
                f"{SCRIPT.name} stop {directory} failed ({stopped.returncode}):\n"
                f"{stopped.stdout}{stopped.stderr}",
                pytrace=False,
            )


@pytest.fixture(scope="session")
def team_tracking_uri(request, postgres_admin_uri) -> str:
    """The ``http://`` URI of an ``mlflow server`` whose backend store is PostgreSQL."""
    if os.environ.get("NBMLOPS_TEST_POSTGRES"):
        given = os.environ.get("NBMLOPS_TEST_TRACKING_URI")
        if not given:
            pytest.fail(
                "NBMLOPS_TEST_POSTGRES is set but NBMLOPS_TEST_TRACKING_URI is not "
                "(.ci/team-services start DIR writes both to DIR/env)",
                pytrace=False,
            )
        return given
    return request.config.stash[_STARTED]["NBMLOPS_TEST_TRACKING_URI"]


@pytest.fixture
def postgres_log_uri(postgres_admin_uri) -> Iterator[str]:
    """A fresh, empty database for this test (dropped afterwards), as a ``postgresql://`` URI."""
    name = f"nbmlops_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_admin_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(postgres_admin_uri)
    yield urlunsplit(parts._replace(path=f"/{name}"))

    with psycopg.connect(postgres_admin_uri, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        force = sql.SQL(" WITH (FORCE)" if conn.info.server_version >= 130000 else "")
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(name), force))
