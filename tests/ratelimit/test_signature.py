"""The keyword names and defaults of RateLimit and limit() are part of the public contract."""

from __future__ import annotations

import inspect
import typing

import seawall
from seawall import RateLimit

# As issue 3 states them: RateLimit(limit, *, strategy=..., storage="memory://",
# key=..., key_prefix="seawall", rules=..., exempt=..., cost=1, headers=True,
# on_storage_error="allow", shadow=False).
CONTRACT = {
    "strategy": "fixed-window",
    "storage": "memory://",
    "key_prefix": "seawall",
    "cost": 1,
    "headers": True,
    "on_storage_error": "allow",
    "shadow": False,
}
KEYWORDS_WITHOUT_FIXED_DEFAULT = ("key", "rules", "exempt")


def test_ratelimit_signature_matches_the_contract() -> None:
    """limit is the one positional parameter; every contract name is keyword-only."""
    params = inspect.signature(RateLimit.__init__).parameters
    names = list(params)
    assert names[:2] == ["self", "limit"]
    assert params["limit"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    for name, default in CONTRACT.items():
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert params[name].default == default, name
    for name in KEYWORDS_WITHOUT_FIXED_DEFAULT:
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name


def test_strategy_names_are_the_documented_ones() -> None:
    """The strategy Literal lists limits' three names and the token bucket."""
    hints = typing.get_type_hints(RateLimit.__init__)
    allowed = set(typing.get_args(hints["strategy"]))
    assert {"fixed-window", "moving-window", "sliding-window-counter", "gcra"} <= allowed
    for strategy in sorted(allowed):
        assert RateLimit("1/second", strategy=strategy).strategy == strategy


def test_the_issue_examples_construct() -> None:
    """Both examples of the issue build as written."""
    RateLimit("100/minute;2000/hour")
    layer = RateLimit(
        "100/minute",
        storage="redis://127.0.0.1:6379/0",
        rules={"POST /login": "5/minute", "/api/*": "50/second"},
        key=seawall.keys.header("X-API-Key"),
        exempt=["10.0.0.0/8", "/health"],
    )
    assert layer.storage_uri == "redis://127.0.0.1:6379/0"  # nothing connects at build time


def test_limit_decorator_takes_key() -> None:
    """seawall.limit("5/minute", key=...) is the handler-level form."""
    params = inspect.signature(seawall.limit).parameters
    assert next(iter(params)) == "limit"
    assert params["key"].kind is inspect.Parameter.KEYWORD_ONLY
