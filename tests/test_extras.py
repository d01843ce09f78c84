"""A missing optional dependency is named, with the extra that installs it, when it is needed.

Absence is simulated the way the import system itself spells it: a ``None``
entry in ``sys.modules`` makes ``import name`` raise ``ModuleNotFoundError``
and ``importlib.util.find_spec(name)`` return ``None``.
"""

from __future__ import annotations

import importlib
import sys

import pytest

from seawall import CircuitBreaker, ConcurrencyLimit, RateLimit, Seawall
from seawall.exceptions import ConfigurationError


def _forget(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make the next import of *modules* run their code again (restored after the test)."""
    for name in modules:
        monkeypatch.delitem(sys.modules, name, raising=False)


@pytest.mark.parametrize(
    ("adapter", "missing", "extra"),
    [
        ("flask", "flask", "flask"),
        ("flask", "werkzeug", "flask"),
        ("django", "django", "django"),
        # Django's own dependency, the first import that used to fail.
        ("django", "asgiref", "django"),
        ("fastapi", "starlette", "fastapi"),
    ],
)
def test_an_adapter_without_its_framework_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, adapter: str, missing: str, extra: str
) -> None:
    _forget(monkeypatch, f"seawall.{adapter}", f"seawall.contrib.{adapter}")
    # Its submodules too, as on a machine where the package was never installed.
    _forget(monkeypatch, *[m for m in list(sys.modules) if m.startswith(f"{missing}.")])
    monkeypatch.setitem(sys.modules, missing, None)
    with pytest.raises(ModuleNotFoundError) as caught:
        importlib.import_module(f"seawall.{adapter}")
    assert caught.value.name == missing
    assert f"pip install 'seawall[{extra}]'" in str(caught.value)
    assert f"seawall.{adapter} needs {missing!r}" in str(caught.value)


@pytest.mark.parametrize("adapter", ["flask", "django", "fastapi"])
def test_an_adapter_with_its_framework_imports(adapter: str) -> None:
    module = importlib.import_module(f"seawall.{adapter}")
    assert module.__all__


def _app(environ: object, start_response: object) -> list[bytes]:  # pragma: no cover
    return []


@pytest.mark.parametrize(
    "make",
    [
        lambda: RateLimit("5/minute", storage="redis://127.0.0.1:6379/0"),
        lambda: RateLimit("5/minute", storage="redis+cluster://127.0.0.1:7000"),
        lambda: RateLimit("5/minute", storage="valkey://127.0.0.1:6379"),
        lambda: CircuitBreaker(storage="redis://127.0.0.1:6379/0"),
        lambda: ConcurrencyLimit(4, storage="redis://127.0.0.1:6379/0"),
    ],
    ids=["ratelimit", "ratelimit-cluster", "ratelimit-valkey", "breaker", "concurrency"],
)
def test_a_redis_storage_without_redis_py_fails_at_startup(
    monkeypatch: pytest.MonkeyPatch, make: object
) -> None:
    """Not at the first request, as an outage that never ends."""
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'seawall\[redis\]'"):
        Seawall(_app, layers=[make()])  # type: ignore[operator]


def test_a_redis_health_check_without_redis_py_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from seawall.layers.health import RedisCheck

    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ConfigurationError, match=r"RedisCheck: .*pip install 'seawall\[redis\]'"):
        RedisCheck("redis://127.0.0.1:6379/0")


def test_a_redis_storage_with_redis_py_builds_without_connecting() -> None:
    # Port 1 has no server: nothing connects until the first request.
    wall = Seawall(
        _app,
        layers=[
            RateLimit("5/minute", storage="redis://127.0.0.1:1/0"),
            CircuitBreaker(storage="redis://127.0.0.1:1/0"),
            ConcurrencyLimit(4, storage="redis://127.0.0.1:1/0"),
        ],
    )
    assert len(wall.stack.layers) == 3
