"""Fixtures for the batch-job tests: the tiny model in the session's store, a
folder of generated images, and `netscope serve` processes to kill."""
from __future__ import annotations

import pytest

from .helpers import ServeProcess, save_tiny_checkpoint, shapes_folder

N_IMAGES = 300


@pytest.fixture(scope="session")
def tiny_store(store):
    """The session server's store, holding the tiny checkpoint (served processes read it too)."""
    save_tiny_checkpoint(store)
    return store


@pytest.fixture(scope="session")
def shapes(tmp_path_factory):
    return shapes_folder(tmp_path_factory.mktemp("shapes"), N_IMAGES)


@pytest.fixture
def serve(tiny_store, tmp_path):
    """serve(n): n `netscope serve` processes of the tiny model, SERVING; all ended after the test."""
    started: list[ServeProcess] = []

    def start(n: int = 1) -> list[ServeProcess]:
        procs = [ServeProcess(tiny_store, tmp_path / f"serve{len(started) + i}.log").start() for i in range(n)]
        started.extend(procs)
        for p in procs:
            p.wait_ready()
        return procs

    yield start
    for p in started:
        p.close()
