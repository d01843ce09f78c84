"""Generated settings and requests: Flask, Django (sync and async) and FastAPI answer alike.

:mod:`tests.contrib.test_same_behaviour` checks chosen cases against known
answers; here hypothesis draws the ``SEAWALL`` settings (rate limits with
legacy headers and per-route rules, body, query and content-type limits, a
breaker that opens, timing, error capture) and a sequence of requests, and
every adapter must give the same statuses, owned headers and problem
documents as Flask does.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.contrib.test_same_behaviour import FRAMEWORKS, client_for

OWNED = (
    "ratelimit-policy",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
)
VOLATILE = {"request_id", "error_id"}

SETTINGS = st.fixed_dictionaries(
    {},
    optional={
        "timing": st.sampled_from([True, {"response_time_header": True}]),
        "error_capture": st.just(True),
        "rate_limit": st.fixed_dictionaries(
            {"limit": st.sampled_from(["3/minute", "2/minute;4/hour"])},
            optional={
                "legacy_headers": st.booleans(),
                "rules": st.just({"/items/2": "1/minute"}),
                "cost": st.sampled_from([1, 2]),
            },
        ),
        "validation": st.fixed_dictionaries(
            {},
            optional={
                "max_body": st.sampled_from([10, 40]),
                "max_query_params": st.just(2),
                "content_types": st.just(["application/json", "text/plain"]),
                "max_json_depth": st.just(2),
            },
        ),
        "circuit_breaker": st.just({"per": "route", "fail_max": 2}),
        "concurrency": st.just({"max_in_flight": 10}),
    },
)

REQUESTS = st.lists(
    st.tuples(
        st.sampled_from(["/items/1", "/items/2", "/boom", "/rejected"]),
        st.sampled_from(["", "?a=1", "?a=1&b=2&c=3"]),
        st.one_of(
            st.none(),
            st.tuples(
                st.sampled_from(["application/json", "text/plain", "application/xml"]),
                st.sampled_from([b"{}", b'{"a": {"b": {"c": 1}}}', b"x" * 20, b"y" * 60]),
            ),
        ),
        st.sampled_from([None, "abc-123"]),
    ),
    min_size=1,
    max_size=8,
)


def _normalise(answer: Any) -> dict[str, Any]:
    status, raw, body = answer
    headers = {k.lower(): v for k, v in raw.items()}
    ctype = headers.get("content-type", "").split(";")[0]
    out: dict[str, Any] = {
        "status": status,
        "owned": {name: headers.get(name) for name in OWNED},
        # Seconds to a window's reset depend on when each run started.
        "ratelimit": re.sub(r";t=\d+", ";t=T", headers.get("ratelimit", "")),
        # A second may pass between two runs: a Retry-After is only present and sane.
        "retry_after": 0 < int(headers.get("retry-after", "1")) <= 3600,
        "has_retry_after": "retry-after" in headers,
        "timing": ("server-timing" in headers, "x-response-time" in headers),
        # An id on every answer; a well-formed incoming one echoed.
        "request_id": (bool(headers.get("x-request-id")), headers.get("x-request-id") == "abc-123"),
    }
    if ctype == "application/problem+json":
        document = json.loads(body)
        assert document.get("request_id") == headers["x-request-id"]
        out["problem"] = {k: v for k, v in document.items() if k not in VOLATILE}
        if "retry_after" in out["problem"]:
            out["problem"]["retry_after"] = "present"
    elif status == 200:
        out["body"] = {k: v for k, v in json.loads(body).items() if k != "rid"}
    return out


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=SETTINGS, sent=REQUESTS)
def test_generated_settings_get_the_same_answers(
    config: dict[str, Any], sent: list[tuple[Any, ...]]
) -> None:
    """Every adapter answers each request as Flask does."""
    if "error_capture" not in config:
        # Without it an exception is each framework's own 500 page.
        sent = [step for step in sent if step[0] != "/boom"]
    results = {}
    # Logs are captured by tests/conftest.py's _no_hidden_layer_failures,
    # not rendered (a console traceback per /boom is slow).
    for framework in FRAMEWORKS:
        results[framework] = _run(framework, config, sent)
    expected = results.pop("flask")
    for framework, answers in results.items():
        for index, (want, got) in enumerate(zip(expected, answers, strict=True)):
            assert got == want, (framework, index, sent[index], config)


def _run(framework: str, config: dict[str, Any], sent: list[tuple[Any, ...]]) -> list[Any]:
    """Send *sent* through one adapter's test client; the normalised answers."""
    send = client_for(framework, config)
    answers = []
    for path, query, body, rid in sent:
        headers = {} if rid is None else {"x-request-id": rid}
        if body is None or not path.startswith("/items/"):
            # Only the item routes take a POST in every test app.
            answers.append(_normalise(send(path + query, headers)))
        else:
            headers["content-type"] = body[0]
            answers.append(_normalise(send(path + query, headers, body[1])))
    return answers
