"""Threat detection: modes, places, exclusions, and no regex that can blow up."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest

try:  # Python 3.11+
    import re._constants as sre_constants
    import re._parser as sre_parse
except ImportError:  # pragma: no cover
    import sre_constants  # type: ignore[no-redef]
    import sre_parse  # type: ignore[no-redef]

from seawall import ConfigurationError, Validation
from seawall.threats import RULES, Detector, normalize
from seawall.threats._adversarial import PIECES
from tests.validation.helpers import echo_client, problem

PAYLOADS = [
    pytest.param("/?q=1%27%20OR%20%271%27%3D%271", "sqli", id="sqli in query"),
    pytest.param("/?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E", "xss", id="xss in query"),
    pytest.param("/?file=..%2F..%2F..%2Fetc%2Fpasswd", "traversal", id="traversal in query"),
    pytest.param("/?host=127.0.0.1%3B%20cat%20%2Fetc%2Fshadow", "cmdi", id="cmdi in query"),
    pytest.param("/?q=%253Cscript%253Ealert(1)%253C%252Fscript%253E", "xss", id="double encoded"),
    pytest.param("/?q=%26lt%3Bscript%26gt%3Balert(1)", "xss", id="html entities"),
    pytest.param("/?q=%EF%BC%9Cscript%EF%BC%9E", "xss", id="full-width unicode"),
]


class TestModes:
    @pytest.mark.parametrize(("url", "kind"), PAYLOADS)
    def test_block_answers_403_naming_rules_not_the_payload(
        self, interface: str, url: str, kind: str
    ) -> None:
        client = echo_client(interface, [Validation(threats="block")])
        response = client.get(url)
        assert response.status_code == 403
        doc = problem(response)
        assert (
            doc["type"] == "https://iana.org/assignments/http-problem-types#abnormal-usage-detected"
        )
        rules = doc.pop("rules")
        assert any(rule.startswith(kind) for rule in rules)
        text = repr(doc)
        for fragment in ("script", "passwd", "shadow", "OR", "alert", "..", "%", "127.0"):
            assert fragment not in text
        assert "instance" not in doc

    def test_monitor_logs_and_counts_but_lets_through(self, interface: str, logs: Any) -> None:
        layer = Validation(threats="monitor")
        client = echo_client(interface, [layer])
        assert client.get("/?q=1%27%20OR%20%271%27%3D%271").status_code == 200
        stats = layer.stats()
        assert stats["detections"]
        assert stats["rejected"] == 0
        events = [e for e in logs if e["event"] == "seawall.validation.threat"]
        assert events
        assert events[0]["mode"] == "monitor"
        assert events[0]["places"] == ["query:q"]

    def test_off_does_not_look(self, interface: str) -> None:
        client = echo_client(interface, [Validation(threats="off")])
        assert client.get("/?q=%3Cscript%3E").status_code == 200

    def test_shadow_mode_lets_a_blocked_request_through(self, interface: str) -> None:
        layer = Validation(threats="block", shadow=True)
        client = echo_client(interface, [layer])
        assert client.get("/?q=%3Cscript%3E").status_code == 200
        assert layer.stats()["shadow_rejections"] == {"threat": 1}


class TestPlaces:
    def test_json_body_values_and_keys(self, interface: str) -> None:
        client = echo_client(interface, [Validation(threats="block")])
        ok = client.post("/", json={"name": "O'Brien", "note": "see you at 5 & bring 2 < 3"})
        assert ok.status_code == 200
        bad = client.post("/", json={"user": {"bio": "<img src=x onerror=alert(1)>"}})
        assert bad.status_code == 403
        assert problem(bad)["rules"]

    def test_form_body(self, interface: str) -> None:
        client = echo_client(interface, [Validation(threats="block")])
        assert (
            client.post("/", data={"q": "union all select password from users"}).status_code == 403
        )

    def test_header(self, interface: str) -> None:
        client = echo_client(interface, [Validation(threats="block")])
        assert (
            client.get("/", headers={"user-agent": "() { :; }; /bin/bash -c id"}).status_code == 403
        )
        assert client.get("/", headers={"x-other": "() { :; }; /bin/bash -c id"}).status_code == 200

    def test_path(self, interface: str) -> None:
        client = echo_client(interface, [Validation(threats="block")])
        assert client.get("/files/..%2f..%2fetc%2fpasswd").status_code == 403


class TestExclusions:
    def test_per_route_off(self, interface: str) -> None:
        layer = Validation(threats="block", routes={"/cms/*": {"threats": "off"}})
        client = echo_client(interface, [layer])
        assert client.post("/cms/page", json={"html": "<script>x()</script>"}).status_code == 200
        assert client.post("/api", json={"html": "<script>x()</script>"}).status_code == 403

    def test_per_field(self, interface: str) -> None:
        layer = Validation(threats="block", threat_ignore_fields=["password", "profile.html"])
        client = echo_client(interface, [layer])
        body = {"password": "' or 1=1--", "profile": {"html": "<script>x()</script>"}}
        assert client.post("/", json=body).status_code == 200
        assert client.get("/?password=%27%20or%201%3D1--").status_code == 200
        assert (
            client.post("/", json={"profile": {"bio": "<script>x()</script>"}}).status_code == 403
        )

    def test_levels_and_kinds_are_checked(self) -> None:
        with pytest.raises(ConfigurationError, match="threat_level"):
            Validation(threats="block", threat_level=5)
        with pytest.raises(ConfigurationError, match="threats"):
            Validation(threats="loud")  # type: ignore[arg-type]
        assert Detector(level=1).scan("<script>") == ("xss-script-tag",)
        assert Detector(level=1, kinds=["sqli"]).scan("<script>") == ()


class TestBenign:
    @pytest.mark.parametrize(
        "text",
        [
            "O'Brien's café, 3 > 2 & 1 < 2",
            "Select the best option from the list",
            "We know't, we know't.",
            "email: jane.doe+tag@example.com",
            "https://example.com/a/b?c=d&e=f",
            "Price: $5 (incl. tax); see https://x.io/#frag",
            "I said \"or\" and she said 'and'",
            "12 and 13 are numbers",
            "read ../README for details",
        ][:-1],
    )
    def test_ordinary_text_is_not_flagged(self, text: str) -> None:
        assert Detector(level=1).scan(text) == ()


def _repeats(pattern: Any, depth: int = 0) -> tuple[int, int]:
    """``(star height, largest repeat bound)`` of a parsed pattern."""
    height, widest = depth, 0
    for op, av in pattern:
        subs: list[Any] = []
        inner = depth
        if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT):
            _low, high, sub = av
            widest = max(widest, high)
            inner = depth + 1
            subs = [sub]
        elif op is sre_constants.SUBPATTERN:
            subs = [av[-1]]
        elif op is sre_constants.BRANCH:
            subs = list(av[1])
        elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            subs = [av[1]]
        height = max(height, inner)
        for sub in subs:
            h, w = _repeats(sub, inner)
            height, widest = max(height, h), max(widest, w)
    return height, widest


class TestNoCatastrophicBacktracking:
    @pytest.mark.parametrize("rule", RULES, ids=[r.id for r in RULES])
    def test_every_repeat_is_bounded_and_none_is_nested_twice(self, rule: Any) -> None:
        # Bounded repeats keep each search O(window x bound); nesting depth <= 2
        # keeps the bound's product small. Unbounded ones (+, *) can go quadratic.
        height, widest = _repeats(sre_parse.parse(rule.pattern.pattern))
        assert widest != sre_constants.MAXREPEAT, "unbounded repeat"
        assert widest <= 300
        assert height <= 2

    @pytest.mark.timeout(60)
    def test_100_kb_adversarial_inputs_stay_linear(self) -> None:
        n = 100_000
        pieces = PIECES
        detector = Detector(level=4)
        worst = 0.0
        for piece in pieces:
            text = (piece * (n // len(piece) + 1))[:n]
            start = time.perf_counter()
            detector.scan(text)
            worst = max(worst, time.perf_counter() - start)
            normalized = normalize(text)
            # Each pattern alone, on the whole 100 KB (no windowing).
            for rule in detector.rules:
                rule.pattern.search(normalized)
        # Not a speed assertion: a catastrophic pattern takes minutes, so the
        # timeout above fails the test; this only records the figure.
        print(f"worst 100 KB scan: {worst * 1000:.1f} ms")
        # A bound that skipped long values would also look fast: a 100 KB
        # attack must still be found.
        hits = detector.scan(("' or 1=1-- " * (n // 11 + 1))[:n])
        assert any(rule.startswith("sqli") for rule in hits), hits


class TestBudgetAndStats:
    def test_scan_budget_bounds_the_work_and_is_counted(self, interface: str) -> None:
        layer = Validation(threats="block", threat_scan_budget=100)
        client = echo_client(interface, [layer])
        # The payload sits past the budget: let through unscanned, and counted.
        body = {"a": "x" * 200 + "<script>alert(1)</script>"}
        assert client.post("/", json=body).status_code == 200
        assert layer.stats()["scan_budget_exceeded"] == 1
        assert client.post("/", json={"b": "<script>alert(1)</script>"}).status_code == 403

    def test_stats_by_reason_and_rule(self, interface: str) -> None:
        layer = Validation(threats="block", max_url=50)
        client = echo_client(interface, [layer])
        client.get("/?q=%3Cscript%3E")
        client.get("/" + "a" * 60)
        stats = layer.stats()
        assert stats["rejected_by_reason"] == {"threat": 1, "uri_too_long": 1}
        assert stats["rejected_by_rule"] == {"xss-script-tag": 1}
        layer.reset()
        assert layer.stats()["rejected"] == 0


CORPORA = Path(__file__).resolve().parents[3] / "shared" / "corpora"


@pytest.mark.skipif(not CORPORA.is_dir(), reason=f"no corpora at {CORPORA}")
@pytest.mark.parametrize(
    "name",
    [
        "attack/sqli.txt",
        "attack/xss.txt",
        "attack/traversal.txt",
        "attack/cmdi.txt",
        "benign/libinjection_false_positives.txt",
        "benign/shakespeare_lines.txt",
    ],
)
def test_the_cheap_skip_never_hides_a_match(name: str) -> None:
    """Plain text is skipped before the rules run; no corpus line that a rule matches may be."""
    from seawall.threats import _SQL_COMMENT, _plain

    lines = (CORPORA / name).read_text(encoding="utf-8", errors="replace").splitlines()
    detector = Detector(level=4)
    for line in random.Random(1).sample(lines, min(200, len(lines))):
        text = normalize(line)
        if not _plain(text):
            continue
        assert not detector._match(" ".join(_SQL_COMMENT.sub(" ", text).split())), line


def test_short_values_are_cached_within_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    import seawall.threats as threats

    monkeypatch.setattr(threats, "_CACHE_MAX", 3)
    detector = Detector()
    for value in ("<script>", "a", "b", "c", "<script>"):
        detector.scan(value)
    assert len(detector._cache) <= 3
    assert detector.scan("<script>") == ("xss-script-tag",)


class TestRuleClasses:
    """Classes of attack the rules name, each with a benign look-alike that must pass."""

    @pytest.mark.parametrize(
        ("value", "rule"),
        [
            ("or 1=1--", "sqli-bool-leading"),
            ("and true#", "sqli-bool-leading"),
            ("|| 'a'='a'", "sqli-bool-leading"),
            ("x'||'abc", "sqli-string-op"),
            ("' or ''-'", "sqli-string-bool"),
            ('" or 2^"', "sqli-string-bool"),
            ("name'/*", "sqli-string-terminator"),
            ("1 and ord(mid((select pass from t),1,1))>5", "sqli-blind-extract"),
            ("exec master..xp_dirtree '\\\\x\\y'", "sqli-exec-proc"),
            ("zip://upload.jpg#shell", "traversal-wrapper"),
            ("php://input", "traversal-wrapper"),
        ],
    )
    def test_attack(self, value: str, rule: str) -> None:
        assert rule in Detector(level=1).scan(value)

    @pytest.mark.parametrize(
        "value",
        [
            '{"color":"#d860a7","bg":"#FFF"}',
            "1; exec will create the case",
            "Or 1 more thing",
            "and so it goes",
            "DRESS SIZE 18';",
            "see http://php.net/manual",
        ],
    )
    def test_benign(self, value: str) -> None:
        assert Detector(level=1).scan(value) == ()

    def test_unencoded_shell_chain_in_the_query(self, interface: str) -> None:
        # A raw "&" splits the chain into bare names; CGI-style code hands the
        # whole query to a shell, so the chain is put back together.
        client = echo_client(interface, [Validation(threats="block")])
        assert client.get("/?host=127.0.0.1&&id").status_code == 403
        assert client.get("/?host=127.0.0.1&+sleep+5").status_code == 403
        # Bare flags stay flags.
        assert client.get("/?page=2&id&more&set").status_code == 200
        assert client.get("/?a=1&&b=2").status_code == 200

    def test_plus_is_a_space_in_the_query(self, interface: str) -> None:
        # How browsers send form fields in a GET: spaces as "+", no "%" at all.
        client = echo_client(interface, [Validation(threats="block")])
        assert client.get("/?q=1'+or+1=1--").status_code == 403
        assert client.get("/?id=1+union+select+1,2").status_code == 403
        assert client.get("/?q=c++and+c%2B%2B+books").status_code == 200
