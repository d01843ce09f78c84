"""Differential: on the real Redis, RateLimit answers as it does in memory.

The memory storage and the Redis scripts are two implementations of every
strategy, of several limits per rule, of costs, shared rule buckets,
``count_when`` and bans. Generated configurations and request sequences run
against memory (WSGI), Redis through the event loop (ASGI) and Redis through
the sync client (WSGI), and every answer must be the same: status, policy
and limit headers, legacy headers, the 429's problem type. Windows are hours
or days, so the milliseconds the three runs take between them cannot move a
count; the seconds-to-reset may differ by a rounding.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seawall import RateLimit
from tests.apps import client_for, wrap
from tests.conftest import REDIS_URL, delete_keys, require_redis

LIMITS = st.sampled_from(["1/hour", "2/hour", "3/hour", "5/hour", "2/hour;4/day", "3/hour;3/day"])

RULES = st.sampled_from(
    [
        None,
        {"POST /login": "2/hour"},
        {"/status/*": None, "POST /login": {"limit": "1/hour;2/day", "name": "login"}},
        {
            "/api/*": {"limit": "3/hour", "shared": "group"},
            "/status/*": {"limit": "3/hour", "shared": "group"},
        },
        {"/status/*": {"limit": "4/hour", "cost": 2}},
    ]
)

CONFIGS = st.fixed_dictionaries(
    {
        "limit": LIMITS,
        "strategy": st.sampled_from(
            ["fixed-window", "moving-window", "sliding-window-counter", "gcra"]
        ),
        "rules": RULES,
        "cost": st.sampled_from([1, 2, "header"]),
        "count_when": st.sampled_from([None, "failure"]),
        "ban": st.sampled_from([None, {"after": "2/hour", "duration": "1 hour"}]),
        "legacy_headers": st.booleans(),
    }
)

REQUESTS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                ("GET", "/"),
                ("POST", "/login"),
                ("GET", "/api/items"),
                ("GET", "/status/200"),
                ("GET", "/status/401"),
            ]
        ),
        st.sampled_from(["alice", "bob"]),
        st.integers(min_value=1, max_value=3),
    ),
    min_size=1,
    max_size=14,
)


def _layer(config: dict[str, Any], storage: str, prefix: str) -> RateLimit:
    options = dict(config)
    if options["cost"] == "header":
        options["cost"] = lambda request: int(request.header("x-cost") or 1)
    return RateLimit(
        options.pop("limit"),
        storage=storage,
        key_prefix=prefix,
        key="header:X-User",
        storage_timeout=2.0,
        **options,
    )


def _answers(client: httpx.Client, requests: list[Any]) -> list[httpx.Response]:
    return [
        client.request(method, path, headers={"x-user": user, "x-cost": str(cost)})
        for (method, path), user, cost in requests
    ]


def _seconds(value: str) -> list[int]:
    """The ``t=`` numbers of a ``RateLimit`` field, in order."""
    return [int(part.rsplit("t=", 1)[1]) for part in value.split(", ")]


def _same(expected: httpx.Response, got: httpx.Response, strategy: str, where: str) -> None:
    assert got.status_code == expected.status_code, where
    for name in ("ratelimit-policy", "x-ratelimit-limit", "x-ratelimit-remaining"):
        assert got.headers.get(name) == expected.headers.get(name), (where, name)
    field, want = got.headers.get("ratelimit"), expected.headers.get("ratelimit")
    assert (field is None) == (want is None), where
    if field is not None and want is not None:
        # Remaining units exact, seconds to reset within a rounding.
        assert [p.split(";t=")[0] for p in field.split(", ")] == [
            p.split(";t=")[0] for p in want.split(", ")
        ], where
        if strategy != "sliding-window-counter":
            # Memory aligns sliding windows on its monotonic clock, Redis on
            # the epoch: their ends differ, their counts do not.
            for a, b in zip(_seconds(field), _seconds(want), strict=True):
                assert abs(a - b) <= 2, (where, field, want)
    if strategy != "sliding-window-counter":
        for name in ("retry-after", "x-ratelimit-reset"):
            a, b = got.headers.get(name), expected.headers.get(name)
            assert (a is None) == (b is None), (where, name)
            if a is not None and b is not None:
                assert abs(int(a) - int(b)) <= 2, (where, name, a, b)
    if expected.status_code == 429:
        mine, theirs = json.loads(got.content), json.loads(expected.content)
        assert mine["type"] == theirs["type"], where
        assert mine.get("policy") == theirs.get("policy"), where


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(config=CONFIGS, requests=REQUESTS)
def test_redis_answers_as_memory_does(config: dict[str, Any], requests: list[Any]) -> None:
    """Memory, Redis on the event loop and Redis on the sync client agree request by request."""
    require_redis()
    prefix = f"seawall-diff-{uuid.uuid4().hex[:12]}"
    try:
        walls = {
            "memory/wsgi": wrap("wsgi", [_layer(config, "memory://", prefix)]),
            "redis/asgi": wrap("asgi", [_layer(config, REDIS_URL, prefix + "a")]),
            "redis/wsgi": wrap("wsgi", [_layer(config, REDIS_URL, prefix + "w")]),
        }
        answers = {}
        for name, wall in walls.items():
            with client_for(wall) as client:
                answers[name] = _answers(client, requests)
        expected = answers.pop("memory/wsgi")
        for name, got in answers.items():
            for index, (want, answer) in enumerate(zip(expected, got, strict=True)):
                _same(want, answer, config["strategy"], f"{name}, request {index}")
    finally:
        delete_keys(REDIS_URL, prefix)
