"""The fast path (memory, fixed window, one limit): same answers as the model, thread safe."""

from __future__ import annotations

import pickle
import sys
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seawall import RateLimit, RequestView, Respond, keys, limit
from seawall._core.client import ClientResolver
from seawall._ratelimit.memory import BoundedMemoryStorage
from seawall._ratelimit.quota import FIXED, parse_quotas
from seawall._run import run_flow
from seawall.testing import ManualClock


def view(peer: str = "1.2.3.4", headers: list[tuple[bytes, bytes]] | None = None) -> RequestView:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "client": (peer, 1234),
        "headers": headers or [],
    }
    return RequestView.from_asgi(scope, resolver=ClientResolver())


def decide(layer: RateLimit, request: RequestView) -> Respond | None:
    decision = layer.on_request(request)
    if decision is None or isinstance(decision, Respond):
        return decision
    return run_flow(decision)  # type: ignore[no-any-return]


steps = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=25.0, allow_nan=False),  # clock advance
        st.integers(min_value=0, max_value=4),  # cost
        st.sampled_from(["a", "b"]),  # key
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(steps=steps, amount=st.integers(min_value=1, max_value=6))
def test_hit_fixed_follows_the_fixed_window_model(
    steps: list[tuple[float, int, str]], amount: int
) -> None:
    """hit_fixed answers as a fixed window does; retry is 0.0 exactly when admitted."""
    clock = ManualClock(100.0)
    storage = BoundedMemoryStorage(clock=clock)
    (quota,) = parse_quotas(f"{amount}/20 seconds", "d")
    model: dict[str, list[float]] = {}  # key -> [expiry, used]
    for advance, cost, key in steps:
        clock.advance(advance)
        now = clock()
        entry = model.get(key)
        if entry is not None and entry[0] > now:
            reset = entry[0] - now
            if entry[1] + cost <= amount:
                entry[1] += cost
                expected = (amount - int(entry[1]), reset, 0.0)
            else:
                expected = (max(0, amount - int(entry[1])), reset, reset)
        elif cost > amount:
            expected = (amount, 20.0, 20.0)
        else:
            if cost:
                model[key] = [now + 20.0, cost]
            expected = (amount - cost, 20.0, 0.0)
        remaining, reset, retry = storage.hit_fixed(key, quota, cost)
        assert remaining == expected[0]
        assert reset == pytest.approx(expected[1])
        assert retry == pytest.approx(expected[2])
        assert (retry == 0.0) == (expected[2] == 0.0)
        # The general entry point gives the same answer for the same state.
        allowed, [stat] = storage.hit_many(FIXED, [key], (quota,), 0)
        assert allowed
        assert stat[0] == (
            amount - int(model[key][1]) if key in model and model[key][0] > now else amount
        )


def test_hit_fixed_is_thread_safe() -> None:
    """Threads racing on one key are admitted exactly `amount` times, never more."""
    storage = BoundedMemoryStorage()
    (quota,) = parse_quotas("3000/hour", "d")
    admitted = [0] * 8

    def hammer(i: int) -> None:
        for _ in range(1000):
            if storage.hit_fixed("k", quota, 1)[2] == 0.0:
                admitted[i] += 1

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert sum(admitted) == 3000
    assert storage.hit_fixed("k", quota, 1)[0] == 0


def test_storage_pickles_with_its_counters() -> None:
    """A pickled storage keeps its counters and works (its lock and bound methods are rebuilt)."""
    storage = BoundedMemoryStorage()  # ManualClock holds a lock: it does not pickle
    (quota,) = parse_quotas("5/minute", "d")
    storage.hit_fixed("k", quota, 2)
    copy = pickle.loads(pickle.dumps(storage))
    assert copy.hit_fixed("k", quota, 1)[0] == 2
    assert storage.hit_fixed("k", quota, 1)[0] == 2  # the original is independent


class TestChoice:
    @pytest.mark.parametrize(
        ("args", "options", "fast"),
        [
            (("10/minute",), {}, True),
            (("10/minute",), {"key": "header:X-Key"}, True),
            (("10/minute",), {"cost": 2}, True),
            (("10/minute;100/hour",), {}, False),
            (("10/minute",), {"strategy": "gcra"}, False),
            (("10/minute",), {"strategy": "moving-window"}, False),
            (("10/minute",), {"cost": lambda r: 1}, False),
            ((lambda r: "10/minute",), {}, False),
            (("10/minute",), {"storage": "redis://127.0.0.1:6379/0"}, False),
        ],
    )
    def test_fast_path_only_for_the_common_case(
        self, args: tuple, options: dict, fast: bool
    ) -> None:
        """Only memory, fixed window, one static limit, fixed cost and a sync key take it."""
        layer = RateLimit(*args, clock=ManualClock(), **options)
        assert layer._default is not None
        assert (layer._default.fast is not None) is fast

    def test_async_key_takes_the_general_path(self) -> None:
        """An async key function needs a flow, so its rule has no fast path."""

        async def key(request: RequestView) -> str:
            return "k"

        layer = RateLimit("10/minute", key=key, clock=ManualClock())
        assert layer._default is not None
        assert layer._default.fast is None

    def test_client_key_is_read_without_the_key_function(self) -> None:
        """The default key and keys.client read request.client_key; others are called."""
        assert RateLimit("1/minute")._default.by_client  # type: ignore[union-attr]
        assert RateLimit("1/minute", key=keys.client)._default.by_client  # type: ignore[union-attr]
        assert not RateLimit("1/minute", key=keys.path)._default.by_client  # type: ignore[union-attr]


class TestSameAsGeneralPath:
    """The fast path gives exactly what the general path gives, header for header."""

    @pytest.mark.parametrize(
        "options",
        [
            {},
            {"cost": 3},
            {"cost": 0},
            {"headers": False},
            {"legacy_headers": True},
            {"shadow": True},
            {"key": "header:X-Key"},
        ],
    )
    def test_answers_and_headers_match(self, options: dict) -> None:
        """Run the same requests through both paths: same decisions, headers and stats."""
        fast_clock, slow_clock = ManualClock(), ManualClock()
        fast = RateLimit("2/minute", clock=fast_clock, **options)
        slow = RateLimit("2/minute", clock=slow_clock, **options)
        assert fast._default is not None
        assert slow._default is not None
        slow._default.fast = None  # force the general path
        for i in range(12):
            for clock in (fast_clock, slow_clock):
                clock.advance(2.7)
            peer = "1.2.3.4" if i % 3 else "5.6.7.8"
            headers = [(b"x-key", b"a}b" if i % 4 == 1 else b"abc")] if i % 2 else []
            a, b = view(peer, headers), view(peer, headers)
            answer_a, answer_b = decide(fast, a), decide(slow, b)
            assert (answer_a is None) == (answer_b is None)
            if answer_a is not None and answer_b is not None:
                assert answer_a.status == answer_b.status
                assert answer_a.headers == answer_b.headers
                assert answer_a.body == answer_b.body
            assert a.response_headers == b.response_headers
        assert fast.stats() == slow.stats()

    @pytest.mark.parametrize("spec", ["1000/minute", "1000/day"])
    def test_reset_seconds_match_past_the_precomputed_ones(self, spec: str) -> None:
        """t beyond the fast path's table (a day, a clock stepping back) is still exact."""
        now = [1000.0]

        def clock() -> float:
            return now[0]

        fast = RateLimit(spec, clock=clock)
        slow = RateLimit(spec, clock=clock)
        assert fast._default is not None
        assert slow._default is not None
        slow._default.fast = None  # force the general path
        for step in (0.0, 0.4, 30.0, -45.5, 3599.3, 0.0, 20000.1, -2.0):
            now[0] += step
            a, b = view(), view()
            assert decide(fast, a) is None
            assert decide(slow, b) is None
            assert a.response_headers == b.response_headers

    def test_key_cache_is_bounded(self) -> None:
        """A flood of distinct clients cannot grow the fast path's key cache without bound."""
        from seawall.layers.ratelimit import _KEY_CACHE

        layer = RateLimit("1/minute", clock=ManualClock())
        rule = layer._default
        assert rule is not None
        for i in range(_KEY_CACHE + 50):
            assert decide(layer, view(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")) is None
        assert len(rule.keys) <= _KEY_CACHE
        respond = decide(layer, view("10.0.0.0"))
        assert respond is not None
        assert respond.status == 429

    def test_long_or_braced_keys_are_digested(self) -> None:
        """A key too long or with a brace is digested on the fast path too."""
        layer = RateLimit("1/minute", key="header:X-Key", clock=ManualClock())
        long_key = [(b"x-key", b"k" * 500)]
        assert decide(layer, view(headers=long_key)) is None
        respond = decide(layer, view(headers=long_key))
        assert respond is not None
        assert respond.status == 429
        stored = list(layer._backend.storage._entries)  # type: ignore[union-attr]
        assert len(stored) == 1
        assert "kkkk" not in stored[0]
        assert decide(layer, view(headers=[(b"x-key", b"a}b")])) is None
        assert all("a}b" not in key for key in layer._backend.storage._entries)  # type: ignore[union-attr]

    def test_handler_limit_keeps_its_own_bucket(self) -> None:
        """limit() renames the bucket after construction; the fast path uses the new keys."""
        limiter = limit("1/minute", name="invoices", clock=ManualClock())

        @limiter
        def handler() -> str:
            return "ok"

        rule = limiter.ratelimit._default
        assert rule is not None
        assert rule.fast is not None
        assert limiter.check(view()) is None
        assert limiter.check(view()) is not None
        (stored,) = list(limiter.ratelimit._backend.storage._entries)  # type: ignore[union-attr]
        assert ":h.invoices:" in stored
