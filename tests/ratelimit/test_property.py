"""Property: never more than N admitted in any window, whatever the requests and the clock."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from seawall import RateLimit, RequestView, Respond
from seawall._run import run_flow
from seawall.testing import ManualClock


def _decide(layer: RateLimit, request: RequestView) -> Any:
    """The layer's answer: memory decides in the hook, a flow is run to its end."""
    decision = layer.on_request(request)
    if decision is None or isinstance(decision, Respond):
        return decision
    return run_flow(decision)


steps = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=4.0, allow_nan=False),  # clock advance
        st.integers(min_value=1, max_value=3),  # cost
        st.sampled_from(["1.1.1.1", "2.2.2.2"]),  # client
    ),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(steps=steps, amount=st.integers(min_value=1, max_value=6))
def test_moving_window_never_admits_more_than_the_limit(
    steps: list[tuple[float, int, str]], amount: int
) -> None:
    """Memory, moving window: in every 10 s span, admitted units per client <= the limit."""
    clock = ManualClock(0.0)
    layer = RateLimit(
        f"{amount}/10 seconds",
        strategy="moving-window",
        clock=clock,
        cost=lambda r: int(r.header("x-cost") or 1),
    )
    admitted: dict[str, list[tuple[float, int]]] = {}
    for advance, cost, client in steps:
        clock.advance(advance)
        request = RequestView.from_asgi(
            {
                "type": "http",
                "method": "GET",
                "path": "/",
                "client": (client, 1),
                "headers": [(b"x-cost", str(cost).encode())],
            }
        )
        if _decide(layer, request) is None:
            admitted.setdefault(client, []).append((clock(), cost))
    for events in admitted.values():
        for start, _ in events:
            used = sum(c for t, c in events if start <= t < start + 10.0)
            assert used <= amount


@settings(max_examples=100, deadline=None)
@given(steps=steps, amount=st.integers(min_value=1, max_value=6))
def test_fixed_window_admits_at_most_the_limit_per_window(
    steps: list[tuple[float, int, str]], amount: int
) -> None:
    """Memory, fixed window: each window (from its first hit) admits at most the limit."""
    clock = ManualClock(0.0)
    layer = RateLimit(f"{amount}/10 seconds", clock=clock, key=lambda r: "one")
    window_start = None
    used = 0
    for advance, _, _ in steps:
        clock.advance(advance)
        request = RequestView(method="GET", path="/", peer="1.1.1.1")
        if window_start is None or clock() >= window_start + 10.0:
            window_start, used = None, 0
        if _decide(layer, request) is None:
            if window_start is None:
                window_start = clock()
            used += 1
            assert used <= amount
