"""The Dashboard: opt-in and token-protected, its JSON feed, and the page in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import pytest
from tests.apps import wsgi_app

from seawall import (
    Dashboard,
    ErrorCapture,
    LoadShedding,
    Metrics,
    RateLimit,
    Seawall,
    Timeout,
    Timing,
)
from seawall._observe.page import CSS, SCRIPT, csp
from seawall._observe.sampler import StaticSignals
from seawall.config import build_layer
from seawall.exceptions import ConfigurationError

MakeClient = Callable[..., httpx.Client]
TOKEN = "correct-horse-battery-staple"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"


def real_breaker() -> Any:
    """The project's CircuitBreaker: three failures open it."""
    from seawall import CircuitBreaker

    return CircuitBreaker(fail_max=3)


class KeyedLimits:
    """A layer reporting top limited keys, in the shape the dashboard reads (``top_limited``)."""

    name = "keyedlimits"

    def stats(self) -> dict[str, Any]:
        return {"top_limited": [{"key": "client-<b>7</b>", "rule": "burst", "count": 5}]}


class TestOptIn:
    @pytest.mark.parametrize("token", [None, "", "short"])
    def test_it_refuses_to_start_without_a_real_token(self, token: str | None) -> None:
        """No token, an empty one or a short one: ConfigurationError at startup."""
        with pytest.raises(ConfigurationError, match="token"):
            Dashboard(token=token)

    def test_a_config_table_without_a_token_is_refused(self) -> None:
        """[seawall.dashboard] without token= fails loudly, never opens silently."""
        with pytest.raises(ConfigurationError, match="token"):
            build_layer("dashboard", {})

    def test_it_is_not_in_the_recommended_stack(self) -> None:
        """Seawall(app) alone never serves a dashboard."""
        wall = Seawall(wsgi_app)
        assert not any(isinstance(layer, Dashboard) for layer in wall.layers)
        assert "token=<hidden>" in repr(Dashboard(token=TOKEN))
        assert TOKEN not in repr(Dashboard(token=TOKEN))


class TestAccess:
    def test_without_credentials_it_answers_401(self, make_client: MakeClient) -> None:
        """Page and feed both need the cookie or the bearer token."""
        client = make_client([Dashboard(token=TOKEN)])
        for path in ("/_seawall", "/_seawall/stats.json"):
            response = client.get(path)
            assert response.status_code == 401
            assert response.headers["content-type"] == "application/problem+json"
            assert "www-authenticate" in response.headers
        wrong = client.get("/_seawall/stats.json", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401

    def test_a_wrong_query_token_is_refused_and_not_echoed(self, make_client: MakeClient) -> None:
        """Hostile input in the token parameter is never reflected."""
        client = make_client([Dashboard(token=TOKEN)])
        response = client.get("/_seawall", params={"token": "<script>alert(1)</script>"})
        assert response.status_code == 401
        assert "<script>" not in response.text
        assert "set-cookie" not in response.headers

    def test_the_token_sets_a_cookie_and_leaves_the_url(self, make_client: MakeClient) -> None:
        """?token= -> 303 to the bare path with an HttpOnly, SameSite=Strict cookie."""
        client = make_client([Dashboard(token=TOKEN)])
        response = client.get("/_seawall", params={"token": TOKEN}, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == "/_seawall"
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert "Path=/_seawall" in cookie
        assert TOKEN not in cookie
        value = cookie.split(";")[0].split("=", 1)[1]
        page = client.get("/_seawall", headers={"Cookie": f"seawall_dashboard={value}"})
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["content-security-policy"] == csp()
        assert page.headers["x-frame-options"] == "DENY"
        assert "<script>" in page.text
        # Self-contained: no external script, style, image or font.
        assert not re.search(r'(src|href)="(?!data:)', page.text)
        assert "@import" not in page.text

    def test_the_feed_has_every_layer_and_a_summary(self, make_client: MakeClient) -> None:
        """stats.json: the wall, each layer's stats and the at-a-glance summary."""
        client = make_client(
            [Timing(), Metrics(), LoadShedding(signals=StaticSignals(cpu=99.0), rng=lambda: 0.0),
             Dashboard(token=TOKEN), real_breaker()]
        )  # fmt: skip
        client.get("/")
        client.get("/")
        doc = client.get("/_seawall/stats.json", headers=BEARER).json()
        assert doc["wall"]["layers"][:3] == ["timing", "dashboard", "metrics"]
        assert set(doc["layers"]) >= {"timing", "metrics", "shedding", "breaker", "dashboard"}
        summary = doc["summary"]
        assert summary["shed"]["cpu"] == 2
        assert summary["shed_total"] == 2
        assert summary["rejected"] == {"shedding": 2}
        assert summary["breakers"][0]["name"] in ("payments", "global")

    def test_other_paths_under_it_are_404_and_lookalikes_pass(
        self, make_client: MakeClient
    ) -> None:
        """/_seawall/x is ours (404); /_seawallx is the app's."""
        client = make_client([Dashboard(token=TOKEN)])
        assert client.get("/_seawall/x", headers=BEARER).status_code == 404
        assert client.get("/_seawallx").text == "ok"
        assert client.post("/_seawall", headers=BEARER).status_code == 405

    def test_the_page_only_allows_its_own_script_and_style(self) -> None:
        """The CSP hashes match the inline blocks, and the script never uses innerHTML."""
        import base64
        import hashlib

        policy = csp()
        for block in (CSS, SCRIPT):
            digest = base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
            assert f"'sha256-{digest}'" in policy
        assert "innerHTML" not in SCRIPT
        assert "eval(" not in SCRIPT
        assert "default-src 'none'" in policy
        assert "connect-src 'self'" in policy


# -- headless Chromium ------------------------------------------------------------


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def served_wall() -> Iterator[tuple[str, Any, Any]]:
    """A wall with a breaker, errors and shedding, served by wsgiref on 127.0.0.1."""
    breaker = real_breaker()
    layers = [Timing(), ErrorCapture(), Metrics(),
              LoadShedding(signals=StaticSignals(cpu=10.0)), Dashboard(token=TOKEN, refresh=1),
              RateLimit(rules={"/status/*": "1/minute"}), Timeout(5, rules={"/slow/*": 9}),
              breaker]  # fmt: skip
    wall = Seawall(wsgi_app, layers=layers)
    server = make_server("127.0.0.1", 0, wall, server_class=WSGIServer, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        yield base, wall, breaker
    finally:
        server.shutdown()
        server.server_close()


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def run_chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    binary = chromium_binary()
    assert binary is not None
    args = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--enable-logging=stderr",
        "--v=0", "--virtual-time-budget=4000", "--window-size=1400,1000", *extra, url,
    ]  # fmt: skip
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.server
def test_the_dashboard_loads_in_headless_chromium(
    served_wall: tuple[str, Any, Any], tmp_path: Path, logs: list[dict[str, Any]]
) -> None:
    """The page loads with no console error and shows the breaker this test opened."""
    if chromium_binary() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    base, _wall, _breaker = served_wall
    with httpx.Client(base_url=base, timeout=10) as client:
        for _ in range(3):
            assert client.get("/boom").status_code == 500  # opens the breaker, groups an error
        for _ in range(3):
            client.get("/")
        # The first passes the rate limit and meets the open breaker; then 429s.
        assert [client.get("/status/200").status_code for _ in range(3)] == [503, 429, 429]
        feed = client.get("/_seawall/stats.json", headers=BEARER).json()
    assert [b["state"] for b in feed["summary"]["breakers"]] == ["open"]
    [(rule, counts)] = feed["layers"]["ratelimit"]["rules"].items()
    assert counts["limited"] == 2

    url = f"{base}/_seawall?token={TOKEN}"
    [dashboard] = [layer for layer in _wall.stack.layers if isinstance(layer, Dashboard)]
    views = dashboard.views
    dom = run_chromium(url, tmp_path / "profile", "--dump-dom")
    # The page itself, then the feed again and again: it refreshes itself.
    assert dashboard.views - views >= 3, dashboard.views - views
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    assert 'data-loaded="1"' in dom.stdout, dom.stdout[:2000]
    assert 'data-state="open"' in dom.stdout
    assert feed["summary"]["breakers"][0]["name"] in dom.stdout
    assert "tests.apps.Boom" in dom.stdout  # the error group
    # Top limited keys and rules: this client under the rule, when RateLimit
    # reports its top limited keys, and the rule with its refusals; never
    # Timeout's per-route seconds (settings, not counts).
    expected = []
    if "top_limited" in feed["layers"]["ratelimit"]:
        expected += ["ratelimit", f"key ({rule})", "127.0.0.1", "2"]
    assert limits_cells(dom.stdout) == [*expected, "ratelimit", "rule", rule, "2"]

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    result = run_chromium(url, tmp_path / "profile2", f"--screenshot={shot}")
    assert [line for line in result.stderr.splitlines() if ":CONSOLE" in line] == []
    assert shot.exists()
    assert shot.stat().st_size > 10_000
    # The docs' screenshot is refreshed on request only, so a test run never
    # dirties the checkout: SEAWALL_UPDATE_DOCS_IMG=1 pytest -k dashboard.
    if os.environ.get("SEAWALL_UPDATE_DOCS_IMG"):
        shutil.copyfile(shot, ROOT / "docs" / "img" / "dashboard.png")


def limits_cells(dom: str) -> list[str]:
    """The cells of the page's "top limited keys and rules" table."""
    limits = re.search(r'<div id="limits">(.*?)</div>', dom, re.S)
    assert limits is not None, dom[:2000]
    return re.findall(r"<td[^>]*>(.*?)</td>", limits.group(1))


@pytest.mark.server
def test_top_limited_keys_are_shown_as_text(tmp_path: Path) -> None:
    """A layer reporting ``top_limited`` gets its keys listed, markup shown as text."""
    if chromium_binary() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    wall = Seawall(wsgi_app, layers=[Dashboard(token=TOKEN), KeyedLimits()])
    server = make_server("127.0.0.1", 0, wall, server_class=WSGIServer, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/_seawall?token={TOKEN}"
        dom = run_chromium(url, tmp_path / "profile", "--dump-dom")
    finally:
        server.shutdown()
        server.server_close()
    assert [line for line in dom.stderr.splitlines() if ":CONSOLE" in line] == []
    assert 'data-loaded="1"' in dom.stdout
    assert limits_cells(dom.stdout) == [
        "keyedlimits",
        "key (burst)",
        "client-&lt;b&gt;7&lt;/b&gt;",
        "5",
    ]
    assert "<b>7</b>" not in dom.stdout


@pytest.mark.server
def test_the_console_check_catches_errors(tmp_path: Path) -> None:
    """The console filter used above is not vacuous: an error and a CSP violation show up."""
    if chromium_binary() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")

    def broken(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [
            ("Content-Type", "text/html"),
            ("Content-Security-Policy", "script-src 'self'"),
        ])  # fmt: skip
        return [b'<html><body><script src="/x.js"></script><script>1</script></body></html>'
                if environ["PATH_INFO"] == "/" else b'console.error("planted error");']  # fmt: skip

    server = make_server("127.0.0.1", 0, broken, server_class=WSGIServer, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = run_chromium(
            f"http://127.0.0.1:{server.server_port}/", tmp_path / "p", "--dump-dom"
        )
    finally:
        server.shutdown()
        server.server_close()
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert any("planted error" in line for line in console), result.stderr[-2000:]
    assert any("Content Security Policy" in line for line in console), console


def test_every_layer_builds_from_settings() -> None:
    """Health, Metrics, LoadShedding and Dashboard take their keys from SEAWALL_* variables."""
    env = {
        "SEAWALL_HEALTH__CACHE_FOR": "5",
        "SEAWALL_METRICS__MAX_ROUTES": "50",
        "SEAWALL_LOAD_SHEDDING__CRITICAL": '["/login"]',
        "SEAWALL_LOAD_SHEDDING__SHADOW": "true",
        "SEAWALL_DASHBOARD__TOKEN": TOKEN,
    }
    wall = Seawall.from_config(wsgi_app, {}, env=env)
    names = [name for _, name, _ in wall.describe()]
    assert names == ["health", "dashboard", "metrics", "shedding"]
    health, _, metrics, shedding = wall.layers
    assert health.cache_for == 5.0  # type: ignore[attr-defined]
    assert metrics.registry.max_routes == 50  # type: ignore[attr-defined]
    assert shedding.critical == ("/login",)
    assert shedding.shadow
