"""In-process stacks for the HTTP tests of this tier (``tests/in_process.py``): the same clients
as the end-to-end tests, the servers on threads of the test process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.read_side import ReadSide, cleanup
from tests.in_process import launch_read_side_in_process


@pytest.fixture(scope="module")
def read_side(tmp_path_factory: pytest.TempPathFactory, mongodb_url: str, redis_url: str) -> Iterator[ReadSide]:
    """One vignette read side (command API, projector, query API) per test module, in process."""
    side = launch_read_side_in_process(tmp_path_factory.mktemp("read-side"), mongodb_url, redis_url)
    try:
        yield side
    finally:
        side.stop()
        cleanup(side)
