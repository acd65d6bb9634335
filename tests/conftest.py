"""Fixtures shared by every test directory; helpers live in tests/support."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.listserver import ListServer
from support.listserver import list_server
from support.world import World
from support.world import make_world

# postgres_server / postgres_url: a real PostgreSQL started for the session.
pytest_plugins = ["support.postgres"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Everything under tests/e2e runs real processes: `-m "not e2e"` leaves it out.
    for item in items:
        if "e2e" in item.path.parts:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="session")
def curl() -> str:
    path = shutil.which("curl")
    if path is None:
        pytest.fail("curl is required for the end-to-end tests (apt-get install curl)")
    return path


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[ListServer]:
    """A log-list mirror over HTTPS on 127.0.0.1, serving files from ``tmp_path/mirror``."""
    directory = tmp_path / "mirror"
    directory.mkdir()
    with list_server(directory) as server:
        yield server
