"""The documented ways to start the service (`make run`, `make traces`, on PostgreSQL),
each started as written, called on localhost:7000 and stopped with Ctrl+C's SIGINT (how a
block says what it needs: tests/e2e/doc_blocks.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e import doc_blocks
from tests.e2e.doc_blocks import Block

pytestmark = pytest.mark.tools

SERVERS = [block for block in doc_blocks.blocks() if block.kind and "server" in block.directives]


def test_the_quick_start_and_the_storage_docs_start_servers() -> None:
    assert {block.document for block in SERVERS} >= {"README.md", "docs/storage.md"}
    assert any(block.text.startswith("make run") for block in SERVERS)
    assert any(block.text.startswith("make traces") for block in SERVERS)


@pytest.mark.parametrize("block", SERVERS, ids=lambda block: block.id)
def test_documented_server(block: Block, tmp_path: Path) -> None:
    assert doc_blocks.port_is_free(), "localhost:7000 is taken; the documented servers use it"
    doc_blocks.serve(block, tmp_path)
