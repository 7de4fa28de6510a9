"""The commands of README.md, CONTRIBUTING.md and docs/*.md, run as written against one
real server on localhost:7000 (how a block says what it needs: tests/e2e/doc_blocks.py)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import doc_blocks
from tests.e2e.doc_blocks import Block
from tests.support.processes import start_server_process

pytestmark = pytest.mark.tools

BLOCKS = doc_blocks.blocks()
COMMANDS = [block for block in BLOCKS if block.kind and "server" not in block.directives]


@pytest.fixture(scope="module")
def server() -> Iterator[None]:
    """The service with its defaults on localhost:7000, as `make run` starts it."""
    assert doc_blocks.port_is_free(), "localhost:7000 is taken; the documented commands use it"
    process = start_server_process({"PORT": str(doc_blocks.PORT)}, args=("-m", "payments_service"))
    try:
        doc_blocks.wait_until_serving(process)
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def test_every_block_runs_or_says_why_not() -> None:
    wrong = {block.id: doc_blocks.problems(block) for block in BLOCKS}
    assert {name: found for name, found in wrong.items() if found} == {}
    runnable = [block for block in BLOCKS if block.language in doc_blocks.RUNNABLE]
    skipped = {block.id: block.directives["skip"] for block in runnable if block.kind is None}
    print(f"{len(runnable) - len(skipped)} of {len(runnable)} blocks run; not run: {skipped}")
    assert len(COMMANDS) >= 8


@pytest.mark.usefixtures("server")
@pytest.mark.parametrize("block", COMMANDS, ids=lambda block: block.id)
def test_documented_command(block: Block, tmp_path: Path) -> None:
    doc_blocks.run(block, tmp_path)
