"""What the adapters' generated-input tests share: the probe, the strategies, the checks.

``test_conformance_django.py``, ``_flask.py`` and ``_fastapi.py`` each build
an app of their framework from a generated script; the requests they send,
the stacks they wrap it in and the promises every answer keeps are here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

from hypothesis import strategies as st

from seawall._core.layer import Outcome
from tests.drivers.test_conformance_asgi import LAYERS, SMALL_BODY, assert_released

PROBLEM = "application/problem+json"
#: The X-Request-ID a generated handler may set on its own response.
OWN_ID = "from-the-app"

STATUSES = st.sampled_from([200, 201, 302, 404, 418, 500, 503])
CHUNKS = st.lists(st.binary(max_size=64), min_size=1, max_size=4)
STACKS = st.lists(st.sampled_from(sorted(LAYERS)), unique=True, max_size=len(LAYERS))

#: The request every adapter test sends (each adds fields of its own).
REQUEST_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "method": st.sampled_from(["GET", "POST"]),
    "content_type": st.sampled_from(
        ["application/octet-stream", "application/json", "application/x-www-form-urlencoded"]
    ),
    "body": st.one_of(
        st.binary(max_size=300),
        st.just(b'{"a": [1, 2, {"b": null}]}'),
        st.just(b"a=1&b=2"),
    ),
    "rid": st.sampled_from([None, "abc-123", "<bad id>"]),
}


class Probe:
    """The outermost layer (``order`` 0): records what the adapter tells the layers."""

    name: ClassVar[str] = "probe"
    order: ClassVar[int] = 0

    def __init__(self) -> None:
        self.requests = 0
        self.outcomes: list[Outcome] = []

    def on_request(self, request: Any) -> None:
        self.requests += 1

    def on_complete(self, request: Any, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


@dataclass
class Answer:
    """What the client got, in the same terms on every framework."""

    status: int
    content_type: str | None
    body: bytes
    rids: list[str]  # the X-Request-ID lines


def check_common(
    answer: Answer,
    probe: Probe,
    layers: list[Any],
    script: Any,
    request: dict[str, Any],
    names: list[str],
    *,
    own_id: bool,
    problem: bool,
) -> bool:
    """The promises every answer keeps; ``True`` when nothing more is to be checked.

    That is when a layer refused the request, or the handler's read of the
    body met a 413. *script* is the handler's record (``called``, ``rid``,
    ``read_body``, ``received``); *own_id*: the response carries the
    handler's own X-Request-ID line; *problem*: a 413 is ours (the app has
    no handler of its own for it).
    """
    assert probe.requests == 1
    assert len(probe.outcomes) == 1
    outcome = probe.outcomes[0]
    assert outcome.status == answer.status
    assert_released(layers)
    assert len(answer.rids) == 1
    if not script.called:
        # A layer refused the request: a problem response of its own.
        assert outcome.responded_by is not None
        assert 400 <= answer.status < 600
        assert answer.content_type == PROBLEM
        assert json.loads(answer.body)["request_id"] == answer.rids[0]
        return True
    if not own_id:
        # The id the handler saw is the one the response carries.
        assert script.rid == answer.rids[0]
    request_rid = request["rid"]
    if request_rid == "abc-123":
        assert script.rid == "abc-123"
    elif request_rid is not None:
        assert script.rid != request_rid
    sent = request["body"] if request["method"] == "POST" else b""
    return script.read_body and check_body(answer, names, sent, script.received, problem=problem)


def check_body(
    answer: Answer, names: list[str], sent: bytes, received: bytes | None, *, problem: bool
) -> bool:
    """The handler read the body as sent, or met a 413; ``True`` on a 413.

    *problem*: the 413 is ours (the app has no handler of its own for it).
    """
    if "small_body" in names and len(sent) > SMALL_BODY:
        # Past the layer's limit: a 413, whichever way the handler met it.
        assert answer.status == 413
        if problem:
            assert answer.content_type == PROBLEM
            assert json.loads(answer.body)["max_body"] == SMALL_BODY
        return True
    assert received == sent
    return False


def check_echo(answer: Answer, request_rid: str | None, *, own_id: bool) -> None:
    """The one X-Request-ID line: the handler's own, else the client's if well-formed, else ours."""
    if own_id:
        assert answer.rids == [OWN_ID]
    elif request_rid == "abc-123":
        assert answer.rids == ["abc-123"]
    else:
        assert answer.rids[0] != "<bad id>"
