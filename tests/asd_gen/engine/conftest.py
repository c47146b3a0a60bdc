"""Fixtures for the generation-engine tests: a real chat-completions server on loopback, Needs, options."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.chat_server import ChatServer


@pytest.fixture
def server() -> Iterator[ChatServer]:
    srv = ChatServer().start()
    yield srv
    srv.stop()
