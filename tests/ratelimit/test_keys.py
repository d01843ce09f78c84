"""Key functions: client, header, composite, string specs."""

from __future__ import annotations

import asyncio

import pytest

from seawall import ConfigurationError, RequestView, keys


def view(headers: list[tuple[bytes, bytes]] | None = None, peer: str = "1.2.3.4") -> RequestView:
    return RequestView.from_asgi(
        {
            "type": "http",
            "method": "POST",
            "path": "/p",
            "client": (peer, 1),
            "headers": headers or [],
        }
    )


def test_client_key_groups_ipv6_by_64() -> None:
    """The default key is the client address, IPv6 grouped by /64."""
    assert keys.client(view(peer="1.2.3.4")) == "1.2.3.4"
    assert keys.client(view(peer="2001:db8::1")) == keys.client(view(peer="2001:db8::2"))


@pytest.mark.parametrize(
    ("fallback", "expected"),
    [
        pytest.param("client", "1.2.3.4", id="client"),
        pytest.param("skip", None, id="skip"),
        pytest.param("anonymous", "anonymous", id="fixed"),
    ],
)
def test_header_key_and_fallbacks(fallback: str, expected: str | None) -> None:
    """header() keys on the value; a missing header falls back as told."""
    key = keys.header("X-API-Key", fallback=fallback)
    assert key(view([(b"x-api-key", b"abc")])) == "h:abc"
    assert key(view()) == expected
    assert key == keys.header("x-api-key", fallback=fallback)
    assert "X-API-Key".lower() in repr(key)


def test_composite_sync_and_async() -> None:
    """composite() joins parts; with an async part it becomes awaitable."""
    sync = keys.composite(keys.client, keys.method, keys.path)
    assert sync(view()) == "1.2.3.4|POST|/p"
    assert not keys.is_async_key(sync)

    async def tenant(request: RequestView) -> str:
        return "t1"

    mixed = keys.composite(tenant, keys.client)
    assert keys.is_async_key(mixed)
    assert asyncio.run(mixed(view())) == "t1|1.2.3.4"
    assert keys.composite(lambda r: None, keys.client)(view()) is None


def test_string_specs() -> None:
    """Settings files name keys as strings."""
    assert keys.resolve_key(None) is keys.client
    assert keys.resolve_key("client") is keys.client
    assert keys.resolve_key("path") is keys.path
    assert keys.resolve_key("header:X-Team") == keys.header("X-Team")
    with pytest.raises(ConfigurationError):
        keys.resolve_key("cookie:session")
    with pytest.raises(ConfigurationError):
        keys.header("")
    with pytest.raises(ConfigurationError):
        keys.composite()
