"""Generated faults: Redis stopped, restarted, paused and resumed between requests.

Every layer that keeps state in Redis (RateLimit, ConcurrencyLimit and a
CircuitBreaker, one private ``redis-server``) sits in front of the twin app,
on either driver, with ``allow`` or ``local`` as the failure policy. A
generated sequence of requests and faults must never get a 5xx for a good
request, and once Redis is back and a probe period has passed, the next
requests are limited through Redis again (their headers show the shared
count, which a second wall on the same Redis moves).
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seawall import CircuitBreaker, ConcurrencyLimit, RateLimit
from tests.apps import client_for, wrap
from tests.ratelimit.conftest import PrivateRedis, free_port

# A layer that raised is passed over (fail open): the answers alone would hide it.
pytestmark = pytest.mark.usefixtures("no_layer_failures")

PROBE = 0.1
STEPS = st.lists(
    st.sampled_from(["request", "request", "request", "stop", "start", "pause", "resume"]),
    min_size=1,
    max_size=14,
)


def _layers(url: str, policy: str) -> list[Any]:
    return [
        RateLimit(
            "1000/hour",
            key=lambda request: "everyone",  # one bucket for both walls' clients
            storage=url,
            key_prefix="faults",
            on_storage_error=policy,  # type: ignore[arg-type]
            storage_timeout=0.05,
            storage_probe=PROBE,
        ),
        ConcurrencyLimit(
            50,
            storage=url,
            key_prefix="faults",
            on_storage_error=policy,  # type: ignore[arg-type]
            storage_timeout=0.05,
            storage_probe=PROBE,
        ),
        CircuitBreaker(
            per="route", fail_max=3, storage=url, key_prefix="faults", storage_timeout=0.05
        ),
    ]


def _remaining(response: Any) -> int:
    return int(response.headers["ratelimit"].split(";r=")[1].split(";")[0])


class Server:
    """The private redis-server, with the faults a test can put it through."""

    def __init__(self) -> None:
        self.redis = PrivateRedis(free_port())
        self.redis.start()
        self.paused = False

    def apply(self, fault: str) -> None:
        process = self.redis.process
        if fault == "stop" and process is not None:
            if self.paused:
                process.send_signal(signal.SIGCONT)
                self.paused = False
            self.redis.stop()
        elif fault == "start" and process is None:
            self.redis.start()
        elif fault == "pause" and process is not None and not self.paused:
            process.send_signal(signal.SIGSTOP)
            self.paused = True
        elif fault == "resume" and self.paused and process is not None:
            process.send_signal(signal.SIGCONT)
            self.paused = False

    def heal(self) -> None:
        self.apply("resume")
        self.apply("start")

    def close(self) -> None:
        self.apply("resume")
        self.redis.stop()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=STEPS,
    interface=st.sampled_from(["asgi", "wsgi"]),
    policy=st.sampled_from(["allow", "local"]),
)
def test_no_5xx_through_redis_faults_and_shared_limits_come_back(
    steps: list[str], interface: str, policy: str
) -> None:
    """Good requests answer 200 whatever Redis does; after healing, limits are shared again."""
    server = Server()
    try:
        wall = wrap(interface, _layers(server.redis.url, policy))
        with client_for(wall) as client:
            for index, step in enumerate(steps):
                if step == "request":
                    response = client.get("/")
                    assert response.status_code == 200, (index, steps)
                else:
                    server.apply(step)
            server.heal()
            time.sleep(PROBE * 2)
            # A probe may meet a connection the restart closed: a few requests
            # later the layer is on Redis again, counting with the others.
            for _ in range(5):
                assert client.get("/").status_code == 200
            before = _remaining(client.get("/"))
            other = wrap("wsgi", _layers(server.redis.url, policy))
            with client_for(other) as second:
                assert second.get("/").status_code == 200
            after = _remaining(client.get("/"))
            assert after == before - 2, (before, after, steps)
    finally:
        server.close()


def test_the_fault_server_counts_what_it_is_sent() -> None:
    """The helper's own check: a stopped server refuses, a resumed one answers."""
    server = Server()
    try:
        client = redis.Redis.from_url(server.redis.url, socket_timeout=0.2)
        assert client.ping()
        server.apply("pause")
        try:
            client.ping()
        except redis.exceptions.TimeoutError:
            pass
        else:  # pragma: no cover - the assertion below reports it
            raise AssertionError("a paused server answered")
        server.apply("resume")
        client = redis.Redis.from_url(server.redis.url, socket_timeout=0.2)
        assert client.ping()
        client.close()
    finally:
        server.close()
