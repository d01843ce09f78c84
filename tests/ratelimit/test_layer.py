"""RateLimit driven by hand: flows, headers, rules, exemptions, shadow, cost, dynamic limits."""

from __future__ import annotations

import json
from typing import Any

import pytest

from seawall import ConfigurationError, RateLimit, RequestView, Respond
from seawall._core.client import ClientResolver
from seawall._run import run_flow
from seawall.layers.ratelimit import Hit
from seawall.testing import ManualClock


def view(
    path: str = "/",
    method: str = "GET",
    peer: str = "1.2.3.4",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> RequestView:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "client": (peer, 1234),
        "headers": headers or [],
    }
    return RequestView.from_asgi(scope, resolver=ClientResolver())


def decide(layer: RateLimit, request: RequestView) -> Respond | None:
    decision = layer.on_request(request)
    if decision is None or isinstance(decision, Respond):
        return decision
    return run_flow(decision)  # type: ignore[no-any-return]


# Flows are what a remote storage gets; building the layer connects nothing.
REMOTE = "redis://127.0.0.1:6379/0"


def headers_of(request: RequestView) -> dict[str, str]:
    return dict(request.response_headers)


class TestFlow:
    def test_yields_one_hit_with_every_limit(self) -> None:
        """The flow yields one Hit carrying all limits of the rule and the client's keys."""
        layer = RateLimit("10/second;100/minute", storage=REMOTE, clock=ManualClock())
        flow = layer.on_request(view())
        effect = next(flow)
        assert isinstance(effect, Hit)
        assert [q.amount for q in effect.quotas] == [10, 100]
        assert effect.keys == [
            "seawall:rl0:{1.2.3.4}:d:10/1",
            "seawall:rl0:{1.2.3.4}:d:100/60",
        ]
        assert effect.cost == 1

    def test_refusal_answered_by_hand_is_a_429(self) -> None:
        """Sending a refusal into the flow returns a 429 quota-exceeded problem."""
        layer = RateLimit("10/minute", storage=REMOTE, clock=ManualClock())
        request = view()
        flow = layer.on_request(request)
        next(flow)
        with pytest.raises(StopIteration) as stop:
            flow.send((False, [(0, 42.5, 42.5)]))
        respond = stop.value.value
        assert isinstance(respond, Respond)
        assert respond.status == 429
        body = json.loads(respond.body)
        assert body["type"].endswith("quota-exceeded")
        assert body["policy"] == "default"
        assert body["retry_after"] == 43
        assert ("Retry-After", "43") in respond.headers
        assert headers_of(request)["RateLimit"] == '"default";r=0;t=43'

    def test_key_prefix_namespaces_keys(self) -> None:
        """key_prefix starts every storage key."""
        layer = RateLimit("1/second", key_prefix="shop", storage=REMOTE, clock=ManualClock())
        assert next(layer.on_request(view())).keys[0].startswith("shop:")


class TestHeaders:
    def test_policy_and_remaining(self) -> None:
        """RateLimit-Policy and RateLimit follow draft-ietf-httpapi-ratelimit-headers-10."""
        clock = ManualClock()
        layer = RateLimit("3/minute", clock=clock)
        request = view()
        assert decide(layer, request) is None
        assert headers_of(request) == {
            "RateLimit-Policy": '"default";q=3;w=60',
            "RateLimit": '"default";r=2;t=60',
        }
        clock.advance(20.2)
        request = view()
        decide(layer, request)
        assert headers_of(request)["RateLimit"] == '"default";r=1;t=40'

    def test_several_limits_named_by_window(self) -> None:
        """A rule with several limits lists one policy per limit."""
        layer = RateLimit("2/second;100/hour", clock=ManualClock())
        request = view()
        decide(layer, request)
        assert headers_of(request) == {
            "RateLimit-Policy": '"default-1s";q=2;w=1, "default-3600s";q=100;w=3600',
            "RateLimit": '"default-1s";r=1;t=1, "default-3600s";r=99;t=3600',
        }

    def test_retry_after_is_the_real_reset_and_not_before_t(self) -> None:
        """Retry-After is the time left in the window, never the full window, and equals t."""
        clock = ManualClock()
        layer = RateLimit("2/minute", clock=clock)
        decide(layer, view())
        decide(layer, view())
        clock.advance(50.5)
        request = view()
        respond = decide(layer, request)
        assert respond is not None
        retry_after = int(dict(respond.headers)["Retry-After"])
        assert retry_after == 10
        assert headers_of(request)["RateLimit"] == '"default";r=0;t=10'
        clock.advance(9.4)
        assert decide(layer, view()) is not None
        clock.advance(0.2)
        assert decide(layer, view()) is None

    def test_headers_off(self) -> None:
        """headers=False adds no RateLimit fields, but a 429 still has Retry-After."""
        layer = RateLimit("1/minute", headers=False, clock=ManualClock())
        request = view()
        decide(layer, request)
        assert request.response_headers == []
        respond = decide(layer, view())
        assert respond is not None
        assert "Retry-After" in dict(respond.headers)

    def test_legacy_headers(self) -> None:
        """legacy_headers adds X-RateLimit-* for the policy nearest exhaustion."""
        layer = RateLimit("5/second;3/minute", legacy_headers=True, clock=ManualClock())
        request = view()
        decide(layer, request)
        headers = headers_of(request)
        assert headers["X-RateLimit-Limit"] == "3"
        assert headers["X-RateLimit-Remaining"] == "2"
        assert headers["X-RateLimit-Reset"] == "60"

    def test_429_body_never_echoes_input(self) -> None:
        """The problem body carries no header value or key the client sent."""
        layer = RateLimit("1/minute", key="header:X-API-Key", clock=ManualClock())
        hostile = b"<script>alert(1)</script>"
        decide(layer, view(headers=[(b"x-api-key", hostile)]))
        respond = decide(layer, view(headers=[(b"x-api-key", hostile)]))
        assert respond is not None
        assert b"script" not in respond.body
        assert b"alert" not in b"".join(v.encode() for _, v in respond.headers)


class TestRules:
    def test_method_and_path_rules_with_default(self) -> None:
        """The first matching rule applies; other routes get the default limit."""
        layer = RateLimit(
            "100/minute",
            rules={"POST /login": "2/minute", "/api/*": "5/second", "/health": None},
            clock=ManualClock(),
        )
        login = [decide(layer, view("/login", "POST")) is None for _ in range(3)]
        assert login == [True, True, False]
        assert decide(layer, view("/login", "GET")) is None  # GET /login: default
        request = view("/api/v1/items")
        decide(layer, request)
        assert headers_of(request)["RateLimit-Policy"] == '"/api/*";q=5;w=1'
        request = view("/health")
        assert decide(layer, request) is None
        assert request.response_headers == []  # not limited at all
        stats = layer.stats()
        assert stats["rules"]["POST /login"] == {"allowed": 2, "limited": 1, "shadow": 0}

    def test_rule_options_and_shared_bucket(self) -> None:
        """Rules naming the same shared bucket count together."""
        layer = RateLimit(
            None,
            rules={
                "/a": {"limit": "3/minute", "shared": "ab"},
                "/b": {"limit": "3/minute", "shared": "ab"},
                "/c": {"limit": "3/minute", "name": "c-policy"},
            },
            clock=ManualClock(),
        )
        results = [decide(layer, view(p)) is None for p in ("/a", "/b", "/a", "/b")]
        assert results == [True, True, True, False]
        request = view("/c")
        decide(layer, request)
        assert headers_of(request)["RateLimit"] == '"c-policy";r=2;t=60'
        assert decide(layer, view("/elsewhere")) is None  # no default: not limited

    def test_path_parameters(self) -> None:
        """{name} matches one path segment."""
        layer = RateLimit(None, rules={"/items/{id}": "1/minute"}, clock=ManualClock())
        assert decide(layer, view("/items/1")) is None
        assert decide(layer, view("/items/2")) is not None  # one bucket for the rule
        assert decide(layer, view("/items/1/sub")) is None  # not matched

    @pytest.mark.parametrize(
        ("limit", "kwargs"),
        [
            pytest.param("lots", {}, id="bad limit string"),
            pytest.param("1/minute", {"rules": {"login": "1/minute"}}, id="pattern without slash"),
            pytest.param("1/minute", {"strategy": "leaky"}, id="unknown strategy"),
            pytest.param("1/minute", {"on_storage_error": "maybe"}, id="unknown policy"),
            pytest.param("1/minute", {"storage": "ftp://x"}, id="unknown storage"),
            pytest.param("1/minute", {"exempt": ["not-a-cidr"]}, id="bad exemption"),
            pytest.param(
                "1/minute", {"rules": {"/x": {"limit": "1/second", "oops": 1}}}, id="option"
            ),
            pytest.param(None, {}, id="nothing to limit"),
            pytest.param("1/minute", {"cost": -1}, id="negative cost"),
            pytest.param("1/minute", {"storage_timeout": 0}, id="zero timeout"),
        ],
    )
    def test_bad_configuration_fails_loudly(self, limit: Any, kwargs: dict[str, Any]) -> None:
        """A limit that cannot work is refused at startup."""
        with pytest.raises(ConfigurationError):
            RateLimit(limit, **kwargs)


class TestExemptions:
    def test_cidr_path_and_callable(self) -> None:
        """Exempt CIDRs (resolved client), path patterns and callables are never limited."""
        layer = RateLimit(
            "1/minute",
            exempt=[
                "10.0.0.0/8",
                "2001:db8::/32",
                "/health",
                "GET /static/*",
                lambda r: r.header("x-internal") == "yes",
            ],
            clock=ManualClock(),
        )
        for _ in range(3):
            assert decide(layer, view(peer="10.1.2.3")) is None
            assert decide(layer, view(peer="2001:db8::1")) is None
            assert decide(layer, view("/health")) is None
            assert decide(layer, view("/static/app.js")) is None
            assert decide(layer, view(headers=[(b"x-internal", b"yes")])) is None
        assert decide(layer, view()) is None
        assert decide(layer, view()) is not None
        assert decide(layer, view("/static/app.js", "POST")) is not None
        assert layer.stats()["exempted"] == 15


class TestShadowAndCost:
    def test_layer_shadow_lets_through_and_counts(self, logs: list[dict[str, Any]]) -> None:
        """Shadow mode decides, logs and counts, but never refuses."""
        layer = RateLimit("1/minute", shadow=True, clock=ManualClock())
        assert [decide(layer, view()) for _ in range(3)] == [None, None, None]
        assert layer.stats()["rules"]["default"] == {"allowed": 1, "limited": 0, "shadow": 2}
        shadow = [e for e in logs if e["event"] == "seawall.ratelimit.shadow"]
        assert len(shadow) == 2
        assert shadow[0]["policy"] == "default"

    def test_rule_shadow(self) -> None:
        """A shadow rule lets through while the others enforce."""
        layer = RateLimit(
            "1/minute", rules={"/new": {"limit": "1/minute", "shadow": True}}, clock=ManualClock()
        )
        assert decide(layer, view("/new")) is None
        assert decide(layer, view("/new")) is None
        assert decide(layer, view("/")) is None
        assert decide(layer, view("/")) is not None

    def test_cost_int_and_callable(self) -> None:
        """Cost uses several units per request, fixed or computed."""
        layer = RateLimit(
            "10/minute",
            cost=4,
            rules={"/bulk": {"limit": "10/minute", "cost": lambda r: 6}},
            clock=ManualClock(),
        )
        assert [decide(layer, view()) is None for _ in range(3)] == [True, True, False]
        assert [decide(layer, view("/bulk")) is None for _ in range(2)] == [True, False]


class TestDynamicAndKeys:
    def test_per_plan_limits_from_a_callable(self) -> None:
        """A callable limit picks the limit per request (per-plan limits)."""

        def plan(request: RequestView) -> str:
            return "5/minute" if request.header("x-plan") == "pro" else "1/minute"

        layer = RateLimit(plan, key="header:X-User", clock=ManualClock())
        pro = [(b"x-plan", b"pro"), (b"x-user", b"ann")]
        free = [(b"x-plan", b"free"), (b"x-user", b"bob")]
        assert [decide(layer, view(headers=pro)) is None for _ in range(6)] == [True] * 5 + [False]
        assert [decide(layer, view(headers=free)) is None for _ in range(2)] == [True, False]
        request = view(headers=pro)
        decide(layer, request)
        assert headers_of(request)["RateLimit-Policy"] == '"default";q=5;w=60'

    def test_key_none_means_unlimited(self) -> None:
        """A key function returning None leaves the request unlimited."""
        layer = RateLimit("1/minute", key=lambda r: None, clock=ManualClock())
        assert [decide(layer, view()) for _ in range(3)] == [None, None, None]

    def test_async_key_function_runs_on_wsgi_threads(self) -> None:
        """An async key is awaited through an effect, also on the sync path."""

        async def key(request: RequestView) -> str:
            return "user-" + (request.header("x-user") or "")

        layer = RateLimit("1/minute", key=key, clock=ManualClock())
        ann = [(b"x-user", b"ann")]
        assert decide(layer, view(headers=ann)) is None
        assert decide(layer, view(headers=ann)) is not None
        assert decide(layer, view(headers=[(b"x-user", b"bob")])) is None

    def test_long_keys_are_hashed(self) -> None:
        """A huge client-chosen key never reaches the storage raw."""
        layer = RateLimit("1/minute", key="header:X-API-Key", storage=REMOTE, clock=ManualClock())
        flow = layer.on_request(view(headers=[(b"x-api-key", b"k" * 5000)]))
        key = next(flow).keys[0]
        assert len(key) < 100
        assert "kkkk" not in key

    def test_ipv6_clients_share_their_64(self) -> None:
        """Two addresses in one IPv6 /64 share a bucket; another /64 does not."""
        layer = RateLimit("1/minute", clock=ManualClock())
        assert decide(layer, view(peer="2001:db8:1:2::1")) is None
        assert decide(layer, view(peer="2001:db8:1:2::ffff")) is not None
        assert decide(layer, view(peer="2001:db8:1:3::1")) is None


class TestStatsAndRepr:
    def test_stats_and_reset(self) -> None:
        """stats() reports counts, keys and storage state; reset() forgets them."""
        layer = RateLimit("1/minute", max_keys=2, clock=ManualClock())
        for peer in ("1.1.1.1", "1.1.1.1", "2.2.2.2", "3.3.3.3"):
            decide(layer, view(peer=peer))
        stats = layer.stats()
        assert stats["allowed"] == 3
        assert stats["limited"] == 1
        assert stats["keys"] == 2
        assert stats["evictions"] == 1
        assert stats["storage_state"] == "up"
        layer.reset()
        assert layer.stats()["allowed"] == 0
        assert layer.stats()["keys"] == 0
        assert "RateLimit(" in repr(layer)

    def test_top_limited_keys_are_counted_bounded_and_masked(self, monkeypatch) -> None:
        import seawall.layers.ratelimit as module

        monkeypatch.setattr(module, "_TOP_LIMITED", 8)
        layer = RateLimit("1/minute", key=lambda request: request.header("x-api-key"))
        for _ in range(4):  # 3 refusals for the heavy key
            decide(layer, view(headers=[(b"x-api-key", b"sk_live_secret_1")]))
        for n in range(20):  # a flood of distinct keys, each refused once
            decide(layer, view(headers=[(b"x-api-key", f"flood-{n}".encode())]))
            decide(layer, view(headers=[(b"x-api-key", f"flood-{n}".encode())]))
        top = layer.stats()["top_limited"]
        assert len(top) <= 10
        assert len(layer._top_limited) <= 8
        assert top[0] == {"key": "sk_l\u2026", "rule": "default", "count": 3}
        assert all("secret" not in row["key"] and "flood-" not in row["key"] for row in top)
        ip = RateLimit("1/minute")
        decide(ip, view(peer="203.0.113.9"))
        decide(ip, view(peer="203.0.113.9"))
        assert ip.stats()["top_limited"] == [{"key": "203.0.113.9", "rule": "default", "count": 1}]
        ip.reset()
        assert ip.stats()["top_limited"] == []


class TestSettings:
    def test_built_from_a_settings_table(self) -> None:
        """Every keyword can come from TOML/env: strings for keys, tables for rules."""
        from seawall.config import build_layer

        layer = build_layer(
            "rate_limit",
            {
                "limit": "100/minute",
                "strategy": "moving-window",
                "key": "header:X-API-Key",
                "exempt": ["10.0.0.0/8", "/health"],
                "on_storage_error": "local",
                "rules": {"POST /login": "5/minute", "/api/*": {"limit": "50/second"}},
            },
        )
        assert isinstance(layer, RateLimit)
        assert layer.strategy == "moving-window"
        assert (
            build_layer("rate_limit", {"limit": "1/second", "key": "seawall.keys:path"})._key(
                view("/x")
            )
            == "/x"
        )
        with pytest.raises(ConfigurationError, match="strategy"):
            build_layer("rate_limit", {"limit": "1/second", "strategy": "nope"})


def test_long_policy_names_stay_distinct() -> None:
    from seawall._ratelimit.quota import policy_name

    a = policy_name("myproject.views.accounts." + "x" * 60 + ".login_view")
    b = policy_name("myproject.views.accounts." + "x" * 60 + ".logout_view")
    assert a != b
    assert len(a) == len(b) == 64
    assert policy_name("short name") == "short name"
