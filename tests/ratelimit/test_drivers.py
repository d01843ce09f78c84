"""RateLimit through both drivers (memory storage): headers on every response, 429s, spoofing."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from seawall import RateLimit
from seawall.testing import ManualClock
from tests.apps import client_for, wrap

MakeClient = Callable[..., httpx.Client]


def test_headers_on_the_app_response_and_the_429(make_client: MakeClient) -> None:
    """The RateLimit fields reach the app's response and the rejection alike."""
    client = make_client([RateLimit("2/minute", clock=ManualClock())])
    first = client.get("/")
    assert first.status_code == 200
    assert first.text == "ok"
    assert first.headers["ratelimit-policy"] == '"default";q=2;w=60'
    assert first.headers["ratelimit"] == '"default";r=1;t=60'
    client.get("/")
    refused = client.get("/")
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "60"
    assert refused.headers["ratelimit"] == '"default";r=0;t=60'
    body = json.loads(refused.content)
    assert body["status"] == 429
    assert body["type"].endswith("quota-exceeded")
    assert body["policy"] == "default"
    assert body["retry_after"] == 60
    assert body["request_id"] == refused.headers["x-request-id"]


def test_streaming_response_keeps_headers_and_body(make_client: MakeClient) -> None:
    """A streamed app response gets the headers and its body untouched."""
    client = make_client([RateLimit("5/minute", clock=ManualClock())])
    response = client.get("/stream")
    assert response.text == "chunk0\nchunk1\nchunk2\n"
    assert response.headers["ratelimit"] == '"default";r=4;t=60'


@pytest.mark.parametrize(
    "spoof",
    [
        pytest.param(lambda i: {"X-Forwarded-For": f"203.0.113.{i}"}, id="X-Forwarded-For"),
        pytest.param(lambda i: {"Forwarded": f"for=198.51.100.{i}"}, id="Forwarded"),
        pytest.param(lambda i: {"X-Real-IP": f"192.0.2.{i}"}, id="X-Real-IP"),
    ],
)
def test_rotating_forwarding_headers_share_one_bucket(
    make_client: MakeClient, spoof: Callable[[int], dict[str, str]]
) -> None:
    """With no trusted proxy, forwarding headers never change the client's bucket."""
    client = make_client([RateLimit("3/minute", clock=ManualClock())])
    statuses = [client.get("/", headers=spoof(i)).status_code for i in range(5)]
    assert statuses == [200, 200, 200, 429, 429]


def test_trusted_proxy_separates_clients(make_client: MakeClient, interface: str) -> None:
    """Behind a trusted proxy, each forwarded client gets its own bucket."""
    client = make_client(
        [RateLimit("1/minute", clock=ManualClock())],
        trusted_proxies=["127.0.0.1"] if interface == "wsgi" else ["unix"],
    )
    a = [client.get("/", headers={"X-Forwarded-For": "203.0.113.1"}).status_code for _ in "ab"]
    b = client.get("/", headers={"X-Forwarded-For": "203.0.113.2"}).status_code
    assert a == [200, 429]
    assert b == 200


@pytest.mark.parametrize(
    ("settings", "spoof"),
    [
        # One proxy in front (nginx appends the address it saw): a client's own
        # X-Forwarded-For entries sit to the left of it.
        pytest.param(
            {"trusted_hops": 1},
            lambda i: {"X-Forwarded-For": f"6.6.6.{i}, 198.51.100.7"},
            id="trusted_hops=1, forged XFF entries",
        ),
        # The proxy adds to X-Forwarded-For and passes the client's Forwarded on.
        pytest.param(
            {"trusted_proxies": "proxy"},
            lambda i: {"X-Forwarded-For": "198.51.100.7", "Forwarded": f"for=6.6.6.{i}"},
            id="trusted proxy, forged Forwarded",
        ),
    ],
)
def test_a_client_behind_a_trusted_proxy_cannot_pick_its_bucket(
    make_client: MakeClient,
    interface: str,
    settings: dict[str, Any],
    spoof: Callable[[int], dict[str, str]],
) -> None:
    if settings.get("trusted_proxies") == "proxy":
        settings = {"trusted_proxies": ["127.0.0.1"] if interface == "wsgi" else ["unix"]}
    client = make_client([RateLimit("3/minute", clock=ManualClock())], **settings)
    statuses = [client.get("/", headers=spoof(i)).status_code for i in range(5)]
    assert statuses == [200, 200, 200, 429, 429]


def test_rules_and_exemptions(make_client: MakeClient) -> None:
    """Rules pick limits by method and path; exempt paths pass without headers."""
    client = make_client(
        [
            RateLimit(
                "100/minute",
                rules={"GET /status/*": "1/minute"},
                exempt=["/rid"],
                clock=ManualClock(),
            )
        ]
    )
    assert client.get("/status/201").status_code == 201
    assert client.get("/status/202").status_code == 429
    rid = client.get("/rid")
    assert rid.status_code == 200
    assert "ratelimit" not in rid.headers
    assert client.get("/").headers["ratelimit"] == '"default";r=99;t=60'


def test_shadow_never_refuses(make_client: MakeClient, logs: list[dict[str, Any]]) -> None:
    """Shadow mode: every request passes, would-be rejections are logged."""
    client = make_client([RateLimit("1/minute", shadow=True, clock=ManualClock())])
    assert [client.get("/").status_code for _ in range(3)] == [200, 200, 200]
    assert sum(e["event"] == "seawall.ratelimit.shadow" for e in logs) == 2


def test_stats_through_the_wall(interface: str) -> None:
    """Allowed and limited counts show in the stack's stats."""
    wall = wrap(interface, [RateLimit("1/minute", clock=ManualClock())])
    with client_for(wall) as client:
        client.get("/")
        client.get("/")
    stats = wall.stack.stats()["ratelimit"]
    assert (stats["allowed"], stats["limited"]) == (1, 1)
