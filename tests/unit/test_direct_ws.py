"""direct_ws leans on aiohttp internals: the start-up check must notice when they change."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import WSMsgType
from aiohttp._websocket.writer import WebSocketWriter

from gateway import direct_ws


@pytest.fixture(autouse=True)
def restore_switch() -> Iterator[None]:
    before = direct_ws._Switch.enabled
    yield
    direct_ws._Switch.enabled = before


def test_the_pinned_aiohttp_has_the_expected_shape() -> None:
    # Fails on an aiohttp whose internals moved: read the change, update the mirror and pin.
    assert direct_ws.shape_problem() is None
    assert direct_ws.configure(True) is True


def test_a_changed_signature_turns_the_shortcuts_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def moved(self: Any, protocol: Any, *, use_mask: bool = False) -> None: ...  # no transport

    monkeypatch.setattr(WebSocketWriter, "__init__", moved)
    problem = direct_ws.shape_problem()
    assert problem is not None and "WebSocketWriter.__init__" in problem
    assert direct_ws.configure(True) is False
    assert "direct dispatch off: aiohttp" in caplog.text
    assert direct_ws.dispatch_enabled() is False


def test_a_changed_mirrored_method_turns_the_shortcuts_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aiohttp import web

    def _post_start(self: Any, request: Any, protocol: Any, writer: Any) -> None:
        self._writer = writer  # not the method direct_ws mirrors

    monkeypatch.setattr(web.WebSocketResponse, "_post_start", _post_start)
    assert "changed" in (direct_ws.shape_problem() or "")


def test_switched_off_write_now_always_defers_to_the_caller() -> None:
    direct_ws.configure(False)
    assert direct_ws.dispatch_enabled() is False
    # Never touches the response: the caller queues and sends through aiohttp's public API.
    assert direct_ws.write_now(object(), b"{}", WSMsgType.TEXT) is False  # type: ignore[arg-type]
