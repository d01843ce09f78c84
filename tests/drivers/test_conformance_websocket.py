"""The ASGI driver's websocket path against generated apps, clients and stacks.

A small server follows the ASGI websocket state machine as uvicorn does
(one handshake answer; ``websocket.send`` only on an open socket; nothing
after a close) and records every message that breaks it. Each example
builds an app from a script (how it answers the handshake, how many client
messages it echoes, how it ends), a client (messages, request id, whether
the server offers the denial-response extension) and a stack, then checks:

- nothing the driver sends breaks the state machine (no second close, no
  send after a close, no answer before the connect was read);
- a refused handshake, by a layer or by a handler's ``Rejected``, gets the
  429 problem response (with the extension) or a 1008 close, and the app
  never runs past it;
- a ``Rejected`` once open closes with 1008; other exceptions propagate;
- a message budget closes with 1008 and the app hears ``websocket.disconnect``;
- every message the app echoed reached the client unless the socket was
  closed first;
- the connection's request id is the client's when well-formed, the same
  one ``seawall.request_id()`` gives inside the app, and unbound afterwards.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import seawall
from seawall import ErrorCapture, RateLimit, Timing
from seawall.exceptions import RateLimited


class Boom(RuntimeError):
    """What a generated app raises."""


class Refuse:
    """A layer that refuses every handshake (as a full rate limit would)."""

    name: ClassVar[str] = "refuse"
    websocket: ClassVar[bool] = True

    def on_request(self, request: Any) -> None:
        raise RateLimited("refused by the stack", retry_after=7)


LAYERS = {
    "timing": Timing,
    "errors": ErrorCapture,
    "ratelimit": lambda: RateLimit("1000000/minute"),
    "messages": lambda: RateLimit("1000000/minute", websocket_messages="2/minute"),
    "refuse": Refuse,
}


@dataclass
class Script:
    handshake: str  # "accept", "close", "deny", "boom", "reject"
    echo: int  # client messages to echo once accepted
    end: str  # "close", "return", "boom", "reject"
    persist: bool  # still ends as above once the client has left
    # What the app saw.
    ran: bool = False
    rid: str | None = None
    bound: str | None = None
    received: list[dict[str, Any]] = field(default_factory=list)


scripts = st.builds(
    Script,
    handshake=st.sampled_from(["accept", "accept", "accept", "close", "deny", "boom", "reject"]),
    echo=st.integers(min_value=0, max_value=4),
    end=st.sampled_from(["close", "return", "boom", "reject"]),
    persist=st.booleans(),
)

clients = st.fixed_dictionaries(
    {
        "messages": st.integers(min_value=0, max_value=5),
        "rid": st.sampled_from([None, b"abc-123", b"<bad id>"]),
        "extension": st.booleans(),
    }
)

stacks = st.lists(st.sampled_from(sorted(LAYERS)), unique=True, max_size=len(LAYERS))


def make_app(script: Script) -> Any:
    def fail(how: str) -> None:
        if how == "reject":
            raise RateLimited("generated", retry_after=3)
        raise Boom("generated")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        script.ran = True
        script.rid = scope.get("seawall.request_id")
        script.bound = seawall.request_id()
        connect = await receive()
        assert connect["type"] == "websocket.connect"
        if script.handshake in ("boom", "reject"):
            fail(script.handshake)
        if script.handshake == "close":
            await send({"type": "websocket.close", "code": 1000})
            return
        if script.handshake == "deny":
            if "websocket.http.response" in scope.get("extensions", {}):
                await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
                await send({"type": "websocket.http.response.body", "body": b"no"})
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "websocket.accept"})
        for _ in range(script.echo):
            message = await receive()
            script.received.append(message)
            if message["type"] != "websocket.receive":
                if not script.persist:
                    return
                break
            await send({"type": "websocket.send", "text": message["text"]})
        if script.end == "close":
            await send({"type": "websocket.close", "code": 1000})
        elif script.end in ("boom", "reject"):
            fail(script.end)

    return app


class Server:
    """The websocket side of an ASGI server, in process, by the ASGI state machine."""

    def __init__(self, client: dict[str, Any]) -> None:
        self.client = client
        self.state = "connecting"  # then "open", "responding", "closed"
        self.sent: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.connect_read = False
        self.pending = [f"m{i}" for i in range(client["messages"])]
        self.disconnected = False

    async def receive(self) -> dict[str, Any]:
        if not self.connect_read:
            self.connect_read = True
            return {"type": "websocket.connect"}
        if self.state == "open" and self.pending:
            return {"type": "websocket.receive", "text": self.pending.pop(0)}
        self.disconnected = True
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        allowed = {
            "connecting": {"websocket.accept", "websocket.close", "websocket.http.response.start"},
            "open": {"websocket.send", "websocket.close"},
            "responding": {"websocket.http.response.body"},
            "closed": set(),
        }[self.state]
        if kind == "websocket.http.response.start" and not self.client["extension"]:
            allowed = set()
        if kind not in allowed or (self.state == "connecting" and not self.connect_read):
            self.violations.append(f"{kind} while {self.state}")
            # As uvicorn does: the app's send raises.
            raise RuntimeError(f"Unexpected ASGI message {kind!r} while {self.state}")
        self.sent.append(message)
        if kind == "websocket.accept":
            self.state = "open"
        elif kind == "websocket.close":
            self.state = "closed"
        elif kind == "websocket.http.response.start":
            self.state = "responding"
        elif kind == "websocket.http.response.body" and not message.get("more_body", False):
            self.state = "closed"

    def serve(self, app: Any) -> BaseException | None:
        headers = [(b"host", b"test")]
        if self.client["rid"] is not None:
            headers.append((b"x-request-id", self.client["rid"]))
        scope: dict[str, Any] = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "scheme": "ws",
            "path": "/ws",
            "raw_path": b"/ws",
            "root_path": "",
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 5000),
            "server": ("test", 80),
            "subprotocols": [],
            "extensions": {"websocket.http.response": {}} if self.client["extension"] else {},
        }

        async def run() -> BaseException | None:
            try:
                await app(scope, self.receive, self.send)
            except Exception as exc:
                return exc
            finally:
                assert seawall.request_id() is None
            return None

        return asyncio.run(run())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=scripts, client=clients, names=stacks)
def test_websocket_path_keeps_its_promises(
    script: Script, client: dict[str, Any], names: list[str]
) -> None:
    server = Server(client)
    layers = [LAYERS[name]() for name in names]
    wall = seawall.Seawall(make_app(script), layers=layers, interface="asgi")
    raised = server.serve(wall)

    assert server.violations == []
    kinds = [m["type"] for m in server.sent]

    if "refuse" in names or (script.handshake == "reject"):
        # Refused before the handshake was answered: our problem, or a 1008 close.
        assert script.ran == ("refuse" not in names)
        assert raised is None
        if client["extension"]:
            assert kinds == ["websocket.http.response.start", "websocket.http.response.body"]
            start = server.sent[0]
            assert start["status"] == 429
            headers = dict(start["headers"])
            assert headers[b"content-type"] == b"application/problem+json"
            assert headers[b"retry-after"] in (b"3", b"7")
            doc = json.loads(server.sent[1]["body"])
            assert doc["status"] == 429
            assert headers[b"x-request-id"] == doc["request_id"].encode()
        else:
            assert kinds == ["websocket.close"]
            assert server.sent[0]["code"] == 1008
        return

    assert script.ran
    # The connection's request id: the client's if well-formed, bound for the app.
    assert script.rid is not None
    assert script.bound == script.rid
    if client["rid"] == b"abc-123":
        assert script.rid == "abc-123"
    else:
        assert script.rid != "<bad id>"

    if script.handshake == "boom":
        assert isinstance(raised, Boom)
        assert kinds == []
        return
    if script.handshake in ("close", "deny"):
        assert raised is None
        assert kinds[-1] in ("websocket.close", "websocket.http.response.body")
        assert "websocket.accept" not in kinds
        return

    assert kinds[0] == "websocket.accept"
    # The request id is echoed on the handshake's answer.
    assert [v for k, v in server.sent[0]["headers"] if k == b"x-request-id"] == [
        script.rid.encode()
    ]
    budget = 2 if "messages" in names else None
    delivered = [m for m in script.received if m["type"] == "websocket.receive"]
    if budget is not None:
        assert len(delivered) <= budget
    echoed = [m["text"] for m in server.sent if m["type"] == "websocket.send"]
    assert echoed == [m["text"] for m in delivered]
    cut = budget is not None and client["messages"] > budget and script.echo > budget
    if cut:
        # The budget ran out: closed with 1008, and the app heard the client leave.
        assert script.received[-1] == {
            "type": "websocket.disconnect",
            "code": 1008,
            "reason": "rate limit exceeded",
        }
        closes = [m for m in server.sent if m["type"] == "websocket.close"]
        assert closes == [
            {"type": "websocket.close", "code": 1008, "reason": "rate limit exceeded"}
        ]
    # The app ends as its script says if the client stayed to the end, or
    # if it persists once the client left (a close then is ours to drop, a
    # Rejected then closes nothing: the socket is closed).
    stayed = all(m["type"] == "websocket.receive" for m in script.received)
    if (stayed or script.persist) and script.end == "boom":
        assert isinstance(raised, Boom)
        return
    assert raised is None
    if stayed and script.end == "reject":
        # A handler's limit once open: a 1008 close.
        assert server.sent[-1] == {
            "type": "websocket.close",
            "code": 1008,
            "reason": "rate limit exceeded",
        }
