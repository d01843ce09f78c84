from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seawall import ConfigurationError
from seawall._core.client import ClientResolver
from seawall._core.request import RequestView


def headers(**kw: str | list[str]):
    out = {}
    for name, value in kw.items():
        out[name.replace("_", "-")] = value if isinstance(value, list) else [value]
    return lambda n: out.get(n, [])


class TestClientResolver:
    def test_no_trusted_proxy_ignores_forwarding_headers(self) -> None:
        """With no trusted proxy, nothing a client sends changes its identity."""
        r = ClientResolver()
        h = headers(x_forwarded_for="1.2.3.4", forwarded="for=5.6.7.8")
        assert r.resolve("203.0.113.9", h) == "203.0.113.9"

    def test_untrusted_peer_headers_ignored(self) -> None:
        r = ClientResolver(["10.0.0.0/8"])
        assert r.resolve("203.0.113.9", headers(x_forwarded_for="1.2.3.4")) == "203.0.113.9"

    @pytest.mark.parametrize(
        ("xff", "expected"),
        [
            pytest.param(["1.2.3.4"], "1.2.3.4", id="one hop"),
            pytest.param(["9.9.9.9, 1.2.3.4, 10.0.0.2"], "1.2.3.4", id="skip trusted hops"),
            pytest.param(["9.9.9.9", "1.2.3.4"], "1.2.3.4", id="repeated header lines joined"),
            pytest.param(["garbage, 1.2.3.4"], "1.2.3.4", id="rightmost untrusted wins"),
            pytest.param(["1.2.3.4, garbage"], "10.0.0.1", id="malformed fails closed to peer"),
            pytest.param(["::ffff:1.2.3.4"], "1.2.3.4", id="ipv4-mapped normalised"),
            pytest.param(["[2001:db8::1]:443"], "2001:db8::1", id="bracketed v6 with port"),
            pytest.param(["1.2.3.4:5678"], "1.2.3.4", id="v4 with port"),
            pytest.param(["10.0.0.3, 10.0.0.2"], "10.0.0.3", id="all trusted: leftmost"),
        ],
    )
    def test_x_forwarded_for(self, xff: list[str], expected: str) -> None:
        r = ClientResolver(["10.0.0.0/8"])
        assert r.resolve("10.0.0.1", headers(x_forwarded_for=xff)) == expected

    @pytest.mark.parametrize(
        ("fwd", "expected"),
        [
            pytest.param("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60", id="simple"),
            pytest.param('for="[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17", id="quoted v6"),
            pytest.param("for=1.1.1.1, for=2.2.2.2", "2.2.2.2", id="rightmost"),
            pytest.param("for=_hidden", "10.0.0.1", id="obfuscated fails closed"),
            pytest.param("proto=https", "10.0.0.1", id="element without for fails closed"),
        ],
    )
    def test_forwarded_rfc7239(self, fwd: str, expected: str) -> None:
        r = ClientResolver(["10.0.0.0/8"])
        assert r.resolve("10.0.0.1", headers(forwarded=fwd)) == expected

    @pytest.mark.parametrize(
        ("fwd", "xff", "expected"),
        [
            # nginx, ALB and most proxies add to X-Forwarded-For and pass a
            # client's own Forwarded on: it must not pick the identity.
            pytest.param("for=6.6.6.6", "198.51.100.7", "10.0.0.1", id="forged Forwarded"),
            # A proxy that adds to Forwarded passes a forged X-Forwarded-For on.
            pytest.param("for=198.51.100.7", "6.6.6.6", "10.0.0.1", id="forged XFF"),
            # A proxy that writes both writes the same client in both.
            pytest.param(
                "for=6.6.6.6, for=198.51.100.7",
                "7.7.7.7, 198.51.100.7",
                "198.51.100.7",
                id="agree on the client",
            ),
            pytest.param("for=198.51.100.7", "198.51.100.7", "198.51.100.7", id="agree"),
        ],
    )
    def test_forwarded_and_xff_must_agree(self, fwd: str, xff: str, expected: str) -> None:
        r = ClientResolver(["10.0.0.0/8"])
        assert r.resolve("10.0.0.1", headers(forwarded=fwd, x_forwarded_for=xff)) == expected

    @pytest.mark.parametrize(
        ("hops", "xff", "expected"),
        [
            # One proxy in front: it appended the address it saw, the client.
            pytest.param(1, "6.6.6.6, 1.2.3.4", "1.2.3.4", id="one proxy, forged entry"),
            pytest.param(1, "1.2.3.4", "1.2.3.4", id="one proxy"),
            # Two: the peer and the proxy whose address is right-most.
            pytest.param(2, "6.6.6.6, 1.2.3.4, 10.9.9.9", "1.2.3.4", id="two proxies"),
            pytest.param(2, "1.2.3.4, 10.9.9.9", "1.2.3.4", id="two proxies, no forgery"),
            pytest.param(3, "1.2.3.4", "1.2.3.4", id="fewer entries than hops: left-most"),
        ],
    )
    def test_trusted_hops_counts_the_peer_as_the_first(
        self, hops: int, xff: str, expected: str
    ) -> None:
        """``trusted_hops=N``: N proxies in front, as werkzeug's ProxyFix(x_for=N) counts them."""
        r = ClientResolver(trusted_hops=hops)
        assert r.resolve("203.0.113.1", headers(x_forwarded_for=xff)) == expected
        # A proxy on a unix socket is a hop like any other.
        assert r.resolve(None, headers(x_forwarded_for=xff)) == expected

    def test_no_peer_is_unknown_but_not_skipped(self) -> None:
        assert ClientResolver().resolve(None, headers()) == "unknown"

    def test_unix_socket_proxy(self) -> None:
        r = ClientResolver(["unix"])
        assert r.resolve(None, headers(x_forwarded_for="1.2.3.4")) == "1.2.3.4"

    def test_ipv6_key_is_the_64(self) -> None:
        r = ClientResolver()
        assert r.key_for("2001:db8:1:2:aaaa::1") == r.key_for("2001:db8:1:2:bbbb::9")
        assert r.key_for("2001:db8:1:2::1") != r.key_for("2001:db8:1:3::1")
        assert r.key_for("1.2.3.4") == "1.2.3.4"

    def test_bad_cidr_is_a_configuration_error(self) -> None:
        with pytest.raises(ConfigurationError, match="trusted_proxies"):
            ClientResolver(["10.0.0.0/33"])


class TestRequestView:
    def test_from_asgi_headers_are_lazy_and_case_insensitive(self) -> None:
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/a",
            "query_string": b"x=1",
            "headers": [(b"x-one", b"1"), (b"X-Two", b"2"), (b"x-one", b"3")],
            "client": ("::ffff:1.2.3.4", 5),
        }
        view = RequestView.from_asgi(scope, resolver=ClientResolver())
        assert view.header("X-ONE") == "1"
        assert view.header_list("x-one") == ["1", "3"]
        assert view.header("missing", "d") == "d"
        assert view.header_count == 3
        assert view.client == "1.2.3.4"
        assert view.target == "/a?x=1"

    def test_from_wsgi(self) -> None:
        environ = {
            "REQUEST_METHOD": "GET",
            "SCRIPT_NAME": "/app",
            "PATH_INFO": "/caf\xc3\xa9",
            "QUERY_STRING": "a=b",
            "HTTP_X_THING": "v",
            "CONTENT_TYPE": "",
            "REMOTE_ADDR": "2001:db8::5",
        }
        view = RequestView.from_wsgi(environ)
        assert view.path == "/café"  # inside the app: SCRIPT_NAME is the root path
        assert view.root_path == "/app"
        assert view.header("x-thing") == "v"
        assert "content-type" not in view.headers
        assert view.client_key == "2001:db8::/64"


class TestFastIPv4Path:
    """The dotted-quad shortcut must give exactly what the full parse gives."""

    @staticmethod
    def parsed(value: str) -> str | None:
        from seawall._core.client import _parse

        addr = _parse(value)
        return None if addr is None else str(addr)

    @given(st.ip_addresses(v=4))
    def test_canonical_quads_match_the_parse(self, addr) -> None:
        from seawall._core.client import normalize_address

        assert normalize_address(str(addr)) == self.parsed(str(addr)) == str(addr)

    @pytest.mark.parametrize(
        "value",
        ["01.2.3.4", "256.1.1.1", "1.2.3", "1.2.3.4.5", "\u0661.2.3.4", " 1.2.3.4", "1.2.3.4:80"],
    )
    def test_non_canonical_text_still_goes_through_the_parse(self, value: str) -> None:
        from seawall._core.client import normalize_address

        assert normalize_address(value) == self.parsed(value)


@pytest.mark.parametrize(
    "peer", ["10.1.2.3", "::ffff:10.1.2.3", "2001:db8::1", "not-an-ip", "/tmp/sock", "", None]
)
def test_view_without_trusted_proxies_resolves_as_the_resolver_does(peer: str | None) -> None:
    """The view's shortcut for "no proxy trusted" gives what resolve() gives."""
    from seawall._core.client import ClientResolver
    from seawall._core.request import RequestView

    resolver = ClientResolver()
    headers = [(b"x-forwarded-for", b"203.0.113.9")]
    view = RequestView(method="GET", path="/", peer=peer, headers=headers, resolver=resolver)
    assert view.client == resolver.resolve(peer, lambda name: ["203.0.113.9"])
    assert view.client != "203.0.113.9"  # the header is never trusted
    assert view.client_key == resolver.key_for(view.client)


class TestProxySetupWarnings:
    """The first requests are looked at for a proxy set-up the settings do not match."""

    @staticmethod
    def _client(interface: str, wall: object, outer: object | None = None):
        import httpx
        from starlette.testclient import TestClient

        app = outer if outer is not None else wall
        if interface == "asgi":
            return TestClient(app)
        return httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://testserver")

    @staticmethod
    def _wall(interface: str, **kw: object):
        from seawall import RateLimit
        from tests.apps import wrap

        return wrap(interface, [RateLimit("1000/minute")], **kw)

    @staticmethod
    def _events(logs: list[dict[str, object]], prefix: str = "seawall.client.") -> list[str]:
        return [str(e["event"]) for e in logs if str(e["event"]).startswith(prefix)]

    def test_forwarding_from_an_untrusted_peer_is_reported_once(self, interface, logs) -> None:
        wall = self._wall(interface)
        with self._client(interface, wall) as client:
            for i in range(5):
                r = client.get("/", headers={"X-Forwarded-For": f"198.51.100.{i}"})
                assert r.status_code == 200
        assert self._events(logs) == ["seawall.client.forwarding_ignored"]
        warning = next(e for e in logs if e["event"] == "seawall.client.forwarding_ignored")
        assert warning["log_level"] == "warning"
        assert "trusted_proxies" in str(warning["advice"])

    def test_forwarded_header_counts_too(self, interface, logs) -> None:
        with self._client(interface, self._wall(interface)) as client:
            client.get("/", headers={"Forwarded": "for=198.51.100.7"})
        assert self._events(logs) == ["seawall.client.forwarding_ignored"]

    def test_no_forwarding_headers_no_warning(self, interface, logs) -> None:
        with self._client(interface, self._wall(interface)) as client:
            for _ in range(3):
                assert client.get("/").status_code == 200
        assert self._events(logs) == []

    def test_a_trusted_proxy_forwarding_is_not_reported(self, interface, logs) -> None:
        # Starlette's test client has no IP peer: trust "unix" (no address).
        wall = self._wall(interface, trusted_proxies=["127.0.0.1", "unix"])
        with self._client(interface, wall) as client:
            client.get("/", headers={"X-Forwarded-For": "198.51.100.7"})
        assert self._events(logs) == []

    def test_probing_stops(self, interface, logs) -> None:
        wall = self._wall(interface)
        with self._client(interface, wall) as client:
            client.get("/")
            assert wall.resolver.probes == 999
            wall.resolver.probes = 1
            client.get("/")
            assert wall.resolver.probes == 0
            client.get("/", headers={"X-Forwarded-For": "198.51.100.7"})
        assert self._events(logs) == []

    @staticmethod
    def _rewriting(interface: str, wall: object) -> object:
        """The server's own forwarding support in front of seawall (the real ones)."""
        if interface == "asgi":
            from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

            return ProxyHeadersMiddleware(wall, trusted_hosts="*")  # type: ignore[arg-type]
        from werkzeug.middleware.proxy_fix import ProxyFix

        return ProxyFix(wall, x_for=1)  # type: ignore[arg-type]

    def test_rewritten_by_the_server_and_trusted_again_is_reported(self, interface, logs) -> None:
        wall = self._wall(interface, trusted_proxies=["10.0.0.0/8"])
        with self._client(interface, wall, self._rewriting(interface, wall)) as client:
            for _ in range(3):
                r = client.get("/", headers={"X-Forwarded-For": "10.1.2.3"})
                assert r.status_code == 200
        assert self._events(logs) == ["seawall.client.already_rewritten"]

    def test_rewritten_by_the_server_alone_is_the_right_set_up(self, interface, logs) -> None:
        wall = self._wall(interface)
        with self._client(interface, wall, self._rewriting(interface, wall)) as client:
            client.get("/", headers={"X-Forwarded-For": "198.51.100.7"})
        assert self._events(logs) == []


def test_probes_never_go_below_zero() -> None:
    """A probe that races past the last one (threads) leaves 0, not a true -1."""
    resolver = ClientResolver()
    resolver.probes = 0
    resolver.probe(RequestView(method="GET", path="/"))
    assert resolver.probes == 0


def test_client_port_zero_alone_is_not_a_rewrite() -> None:
    """A scope with port 0 whose peer is not in the chain (test clients do this) is no rewrite."""
    import asyncio

    import httpx
    import structlog

    from seawall import RateLimit
    from tests.apps import wrap

    wall = wrap("asgi", [RateLimit("1000/minute")], trusted_proxies=["127.0.0.1"])

    async def run() -> int:
        transport = httpx.ASGITransport(app=wall, client=("127.0.0.1", 0))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            r = await c.get("/", headers={"X-Forwarded-For": "198.51.100.7"})
            return r.status_code

    with structlog.testing.capture_logs() as logs:
        assert asyncio.run(run()) == 200
    assert [e for e in logs if str(e["event"]).startswith("seawall.client.")] == []
