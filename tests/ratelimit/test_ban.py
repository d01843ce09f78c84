"""ban: a key refused again and again is refused outright for a while.

Every refusal is a strike; the ``after``-th strike within its window bans the
key for ``duration`` on every route of the layer. Tested on memory (with a
manual clock) and on the real Redis, through both drivers, for every strategy.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis

from seawall import ConfigurationError, RateLimit
from seawall._ratelimit.lua import SCRIPTS
from seawall._ratelimit.quota import FIXED, Banned, parse_quotas
from seawall.layers.ratelimit import Hit, Strike, _parse_ban
from seawall.storage import LimitsBackend, MemoryBackend
from seawall.testing import ManualClock
from tests.apps import client_for, wrap
from tests.redis_topologies.servers import RedisProcess, free_port

STRATEGIES = ["fixed-window", "moving-window", "sliding-window-counter", "gcra"]
BAN = {"after": "3/10 minutes", "duration": "1 hour"}


def retry_after(response: Any) -> int | None:
    value = response.headers.get("retry-after")
    return None if value is None else int(value)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_third_refusal_bans_for_an_hour(
    interface: str, strategy: str, logs: list[dict[str, Any]]
) -> None:
    layer = RateLimit("2/minute", strategy=strategy, ban=BAN, clock=ManualClock())
    with client_for(wrap(interface, [layer])) as client:
        responses = [client.get("/") for _ in range(6)]
    assert [r.status_code for r in responses] == [200, 200, 429, 429, 429, 429]
    # Refusals 1-3 wait for the limit; once banned, for the ban.
    assert all(retry_after(r) < 61 for r in responses[2:5])  # type: ignore[operator]
    assert retry_after(responses[5]) == 3600
    banned = responses[5].json()
    assert banned["type"].endswith("quota-exceeded")
    assert "repeatedly exceeding" in banned["detail"]
    assert responses[5].headers["ratelimit"].endswith(";r=0;t=3600")
    stats = layer.stats()
    assert (stats["bans"], stats["banned"], stats["limited"]) == (1, 1, 4)
    (event,) = [e for e in logs if e["event"] == "seawall.ratelimit.banned"]
    assert event["log_level"] == "warning"
    assert (event["seconds"], event["strikes"], event["within"]) == (3600, 3, 600)


def test_the_ban_covers_every_route_and_ends(interface: str) -> None:
    clock = ManualClock()
    layer = RateLimit("100/minute", rules={"/status/*": "1/minute"}, ban=BAN, clock=clock)
    with client_for(wrap(interface, [layer])) as client:
        assert client.get("/").status_code == 200
        tight = [client.get("/status/200").status_code for _ in range(4)]
        elsewhere = client.get("/")
        clock.advance(3599)
        still = client.get("/")
        clock.advance(2)
        after = client.get("/")
    assert tight == [200, 429, 429, 429]
    assert elsewhere.status_code == 429
    assert retry_after(elsewhere) == 3600
    assert still.status_code == 429
    assert retry_after(still) == 1
    assert after.status_code == 200


def test_strikes_out_of_their_window_do_not_ban(interface: str) -> None:
    clock = ManualClock()
    layer = RateLimit("1/minute", ban=BAN, clock=clock)
    with client_for(wrap(interface, [layer])) as client:
        first = [client.get("/").status_code for _ in range(3)]  # two strikes
        clock.advance(601)  # the strikes' ten minutes, and the limit's minute, pass
        second = [client.get("/").status_code for _ in range(3)]  # two more
    assert first == second == [200, 429, 429]
    assert layer.stats()["bans"] == 0


def test_shadow_bans_on_paper_only(interface: str, logs: list[dict[str, Any]]) -> None:
    layer = RateLimit("1/minute", ban=BAN, shadow=True, clock=ManualClock())
    with client_for(wrap(interface, [layer])) as client:
        statuses = [client.get("/").status_code for _ in range(6)]
    assert statuses == [200] * 6
    stats = layer.stats()
    assert (stats["bans"], stats["banned"]) == (1, 2)
    assert [e for e in logs if e["event"] == "seawall.ratelimit.banned"]


def test_unban_lifts_the_ban_and_the_strikes(interface: str) -> None:
    clock = ManualClock()
    layer = RateLimit("1/minute", key=lambda r: "user-1", ban=BAN, clock=clock)
    with client_for(wrap(interface, [layer])) as client:
        statuses = [client.get("/").status_code for _ in range(5)]
        assert retry_after(client.get("/")) == 3600
        layer.unban("user-1")
        clock.advance(60)
        again = [client.get("/").status_code for _ in range(3)]
    assert statuses == [200, 429, 429, 429, 429]
    assert again == [200, 429, 429]  # strikes start over: one more is not a ban
    assert layer.stats()["bans"] == 1


def test_the_fast_path_serves_bans_too(interface: str) -> None:
    """Memory, fixed window: the ban is checked only while some key is banned, and ends."""
    clock = ManualClock()
    layer = RateLimit("1/minute", key=lambda r: r.header("x-user"), ban=BAN, clock=clock)
    assert layer._default is not None
    assert layer._default.fast is not None
    bans = layer._mem_bans
    with client_for(wrap(interface, [layer])) as client:
        a = [client.get("/", headers={"x-user": "a"}).status_code for _ in range(5)]
        assert list(bans) == ["seawall:rlban:{a}"]
        b = client.get("/", headers={"x-user": "b"})  # not banned: admitted
        clock.advance(3601)
        again = client.get("/", headers={"x-user": "b"})  # drops the ended ban
    assert a == [200, 429, 429, 429, 429]
    assert b.status_code == 200
    assert again.status_code == 200
    assert bans == {}


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("3/minute", "ban: expected"),
        ({"after": "3/minute"}, "ban: expected"),
        ({"after": "3/minute", "duration": 60, "extra": 1}, "ban: expected"),
        ({"after": "3/minute;5/hour", "duration": 60}, "takes one limit"),
        ({"after": "three", "duration": 60}, "ban: after"),
        ({"after": "3/minute", "duration": "forever"}, "ban: duration"),
        ({"after": "3/minute", "duration": 0}, "ban: duration"),
    ],
)
def test_a_bad_ban_fails_at_startup(value: Any, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        RateLimit("1/minute", ban=value)


def test_durations_in_seconds_or_words() -> None:
    assert _parse_ban({"after": "5/10 minutes", "duration": 90}).duration == 90  # type: ignore[union-attr]
    policy = _parse_ban({"after": "5/10 minutes", "duration": "2 hours"})
    assert policy is not None
    assert (policy.after, policy.within, policy.duration) == (5, 600, 7200)
    assert "5/600s" in repr(policy)


def test_from_config_takes_a_ban_table(tmp_path: Any) -> None:
    from seawall import Seawall

    settings = tmp_path / "seawall.toml"
    settings.write_text(
        '[rate_limit]\ndefault = "10/minute"\n'
        'ban = { after = "5/10 minutes", duration = "1 hour" }\n'
    )
    wall = Seawall.from_config(wsgi_noop, settings)
    (layer,) = wall.stack.layers
    assert isinstance(layer, RateLimit)
    assert layer._ban is not None
    assert layer._ban.duration == 3600


def wsgi_noop(environ: Any, start_response: Any) -> Any:  # pragma: no cover
    start_response("204 No Content", [])
    return []


def test_memory_storage_bans_and_reports_it() -> None:
    clock = ManualClock()
    backend = MemoryBackend(clock=clock)
    quotas = parse_quotas("5/minute;50/hour", "p")
    keys = ["k:m", "k:h"]
    assert [backend.strike("b:s", "b", 2, 60, 30) for _ in range(2)] == [False, True]
    result = backend.hit(FIXED, keys, quotas, 1, True, "b")
    assert type(result) is Banned
    assert result == (False, [(0, 30.0, 30.0), (0, 30.0, 30.0)])
    assert len(backend.storage) == 0  # the strikes are gone, nothing was consumed
    assert backend.storage.bans == {"b": clock() + 30}
    clock.advance(30)
    assert backend.hit(FIXED, keys, quotas, 1, True, "b") == (
        True,
        [(4, 60.0, 0.0), (49, 3600.0, 0.0)],
    )


def test_limits_backend_bans() -> None:
    """The limits-storage backend (memcached and others) on limits' own memory storage."""
    backend = LimitsBackend("memory://")
    quotas = parse_quotas("5/minute", "p")
    assert backend.strike("lb:s", "lb", 2, 60, 30) is False
    assert backend.hit(FIXED, ["lk"], quotas, 1, True, "lb")[0]
    assert backend.strike("lb:s", "lb", 2, 60, 30) is True
    result = backend.hit(FIXED, ["lk"], quotas, 1, True, "lb")
    assert type(result) is Banned
    assert 29 <= result[1][0][2] <= 30
    backend.forget(["lb"])
    assert backend.hit(FIXED, ["lk"], quotas, 1, True, "lb")[0]


def test_effects_name_their_ban() -> None:
    backend = MemoryBackend()
    quotas = parse_quotas("1/minute", "p")
    policy = _parse_ban(BAN)
    assert policy is not None
    assert Hit(backend, FIXED, ["k"], quotas, 1, ban="b") != Hit(backend, FIXED, ["k"], quotas, 1)
    strike = Strike(backend, "b", policy)
    assert "'b'" in repr(strike)
    assert [strike.run() for _ in range(3)] == [False, False, True]
    assert type(Hit(backend, FIXED, ["k"], quotas, 1, ban="b").run()) is Banned


# -- the real Redis -------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_redis_bans_across_apps(
    interface: str, redis_url: str, key_prefix: str, strategy: str
) -> None:
    """A ban one app (worker) starts refuses the key in another sharing the Redis."""

    def layer() -> RateLimit:
        return RateLimit(
            "2/minute",
            strategy=strategy,
            storage=redis_url,
            key_prefix=key_prefix,
            key=lambda r: "user-7",
            storage_timeout=1.0,
            ban=BAN,
        )

    first, second = layer(), layer()
    other = "wsgi" if interface == "asgi" else "asgi"
    with client_for(wrap(interface, [first])) as a, client_for(wrap(other, [second])) as b:
        statuses = [a.get("/").status_code for _ in range(5)]
        banned = b.get("/")
        first.unban("user-7")
        store = redis.Redis.from_url(redis_url)
        assert store.keys(f"{key_prefix}:rlban:*") == []
        store.close()
    assert statuses == [200, 200, 429, 429, 429]
    assert banned.status_code == 429
    assert 3590 <= retry_after(banned) <= 3600  # type: ignore[operator]
    assert (first.stats()["bans"], second.stats()["banned"]) == (1, 1)


def test_redis_ban_check_costs_no_round_trip(interface: str, private_redis: RedisProcess) -> None:
    """Admitted and banned requests: one round trip each; a refusal adds its strike."""
    layer = RateLimit("3/minute;100/hour", storage=private_redis.url, storage_timeout=1.0, ban=BAN)
    store = redis.Redis.from_url(private_redis.url)
    for source in SCRIPTS.values():
        store.script_load(source)  # as after the first refusal of a long-running app
    with client_for(wrap(interface, [layer])) as client:
        client.get("/")  # connects: not counted

        def reads(n: int) -> int:
            before = int(store.info("stats")["total_reads_processed"])
            for _ in range(n):
                client.get("/")
            # the INFO itself is one read
            return int(store.info("stats")["total_reads_processed"]) - before - 1

        admitted = reads(2)
        reads(1)  # the first refusal opens the connection strikes go through
        refused, banned = reads(2), reads(4)
    store.close()
    assert (admitted, refused, banned) == (2, 4, 4)


def test_a_dead_storage_bans_nobody(interface: str) -> None:
    layer = RateLimit(
        "1/minute",
        storage=f"redis://127.0.0.1:{free_port()}/0",
        on_storage_error="allow",
        ban=BAN,
        clock=ManualClock(),
    )
    with client_for(wrap(interface, [layer])) as client:
        statuses = [client.get("/").status_code for _ in range(5)]
    assert statuses == [200] * 5
    assert layer.stats()["bans"] == 0


def test_local_fallback_bans_locally(interface: str) -> None:
    layer = RateLimit(
        "1/minute",
        storage=f"redis://127.0.0.1:{free_port()}/0",
        on_storage_error="local",
        ban=BAN,
        clock=ManualClock(),
    )
    with client_for(wrap(interface, [layer])) as client:
        responses = [client.get("/") for _ in range(5)]
    assert [r.status_code for r in responses] == [200, 429, 429, 429, 429]
    assert retry_after(responses[4]) == 3600


def test_the_ban_map_is_bounded_oldest_first() -> None:
    clock = ManualClock()
    backend = MemoryBackend(max_keys=3, clock=clock)
    for i in range(5):
        assert backend.strike(f"b{i}:s", f"b{i}", 1, 60, 300)
        clock.advance(1)
    assert list(backend.storage.bans) == ["b2", "b3", "b4"]
    clock.advance(300)  # every ban has ended: the next one makes room by expiry alone
    assert backend.strike("b5:s", "b5", 1, 60, 300)
    assert list(backend.storage.bans) == ["b5"]


def test_the_layer_says_what_it_does() -> None:
    """seawall check and the demo print each layer's repr: the new options show."""
    plain = repr(RateLimit("1/minute"))
    assert "ban" not in plain
    assert "count_when" not in plain
    assert "websocket" not in plain
    full = repr(
        RateLimit(
            "1/minute",
            rules={"POST /login": {"limit": "5/minute", "count_when": "failure"}},
            ban=BAN,
            websocket_messages="10/second",
        )
    )
    assert "rules=1," in full
    assert "count_when=1 rule(s)" in full
    assert "ban(after=3/600s, duration=3600s)" in full
    assert "websocket_messages='10 per 1 second'" in full
