"""Edges of the rate limiter's numbers and inputs, each found wrong once.

A refusal in a window's last millisecond (Redis ``PTTL`` 0) said ``t=0``
and sent no ``Retry-After``; a float's last-bit error made ``t`` one more
than ``w``; a cost callable's negative answer gave quota back; rules
naming one shared bucket with different limits kept apart counters; a
ConcurrencyLimit key function answering a number made the Redis slots fail
(the layer, passed over, limited nothing).
"""

from __future__ import annotations

import pytest

from seawall import ConcurrencyLimit, ConfigurationError, RateLimit, RequestView, Respond
from seawall._core.client import ClientResolver
from seawall._run import run_flow
from seawall.exceptions import RateLimited
from seawall.testing import ManualClock
from tests.apps import client_for, wrap


def view(path: str = "/") -> RequestView:
    scope = {"type": "http", "method": "GET", "path": path, "client": ("1.2.3.4", 1), "headers": []}
    return RequestView.from_asgi(scope, resolver=ClientResolver())


def decide(layer: RateLimit, request: RequestView) -> object:
    decision = layer.on_request(request)
    if decision is None or isinstance(decision, Respond):
        return decision
    return run_flow(decision)


def test_a_refusal_as_the_window_ends_still_says_when_to_come_back() -> None:
    layer = RateLimit("1/second")
    rule = layer._default
    assert rule is not None
    request = view()
    # What the Redis fixed-window script answers when PTTL is 0: no time left.
    refusal = layer._respond(request, rule, rule.quotas, 1, (False, [(0, 0.0, 0.0)]))
    assert isinstance(refusal, RateLimited)
    assert refusal.retry_after == 1.0
    assert ("RateLimit", '"default";r=0;t=1') in request.response_headers


@pytest.mark.parametrize("strategy", ["moving-window", "gcra", "sliding-window-counter"])
def test_t_is_never_past_the_window(interface: str, strategy: str) -> None:
    # A clock where (now + 60) - now is 60.0000000000073: a ceil() of it is 61.
    clock = ManualClock(start=65483.98140820866)
    layer = RateLimit("1/minute", strategy=strategy, clock=clock)
    with client_for(wrap(interface, [layer])) as client:
        client.get("/")
        refused = client.get("/")
    assert refused.status_code == 429
    t = int(refused.headers["ratelimit"].rsplit("t=", 1)[1])
    assert 1 <= t <= 60
    assert int(refused.headers["retry-after"]) >= t


def test_a_negative_cost_from_a_callable_counts_as_one(interface: str) -> None:
    layer = RateLimit("3/minute", cost=lambda request: -50)
    with client_for(wrap(interface, [layer])) as client:
        assert [client.get("/").status_code for _ in range(4)] == [200, 200, 200, 429]


def test_rules_sharing_a_bucket_must_give_one_limit() -> None:
    with pytest.raises(ConfigurationError, match="same limit"):
        RateLimit(
            None,
            rules={
                "/search": {"limit": "2/minute", "shared": "api"},
                "/export": {"limit": "1/minute", "shared": "api"},
            },
        )
    layer = RateLimit(
        None,
        rules={
            "/search": {"limit": "2/minute", "shared": "api"},
            "/export": {"limit": "2/minute", "shared": "api"},
        },
    )
    answers = [decide(layer, view(p)) for p in ("/search", "/export", "/export")]
    assert [a is None for a in answers] == [True, True, False]


@pytest.mark.redis
def test_a_concurrency_key_that_is_not_a_string_works_on_redis(
    interface: str, redis_url: str, key_prefix: str
) -> None:
    layer = ConcurrencyLimit(
        4, per_key=1, storage=redis_url, key_prefix=key_prefix, key=lambda request: 42
    )
    with client_for(wrap(interface, [layer])) as client:
        assert client.get("/").status_code == 200
    # The autouse guard fails the test had the layer raised (and been passed over).
    assert layer.stats()["admitted"] == 1


def test_during_an_outage_the_headers_state_the_local_share(interface: str) -> None:
    """on_storage_error="local" counts each worker's share: the headers say that share."""
    layer = RateLimit(
        "4/minute", storage="redis://127.0.0.1:1/0", on_storage_error="local", workers=2
    )  # nothing listens on port 1
    with client_for(wrap(interface, [layer])) as client:
        responses = [client.get("/") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert {r.headers["ratelimit-policy"] for r in responses} == {'"default";q=2;w=60'}
