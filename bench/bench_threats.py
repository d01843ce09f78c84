"""Threat detection quality: detection and false-positive rates over the corpora.

Run: .venv/bin/python bench/bench_threats.py [--full] [--level N] [--sample N]

Each corpus line (../shared/corpora, see its README) is put in one place of a
request, raw and URL-encoded, and the request goes through
``Validation(threats="block")``'s real parsing and decoding (the layer's
hook is driven in-process, body effects answered inline). A line counts as
detected when the answer is the 403 ``abnormal-usage-detected``.

Places: ``query`` (``?q=<line>``), ``json`` (``{"q": "<line>"}``), ``form``
(``q=<line>`` form-encoded) and ``header`` (``User-Agent: <line>``). "raw"
puts the line as is (query: unencoded in the query string; form: encoded
once, as browsers do); "urlenc" URL-encodes it once more (in the query with
``+`` for spaces, as browsers encode a GET form).

By default each file is sampled (``--sample`` lines, seeded): the full
corpora take several minutes on two cores; ``--full`` runs every line.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from seawall import Respond, Validation
from seawall._core.decisions import ReadBody
from seawall._core.request import RequestView

ROOT = Path(__file__).resolve().parents[1]
CORPORA = next(
    (p for p in (ROOT.parent / "shared" / "corpora", ROOT / "shared" / "corpora") if p.is_dir()),
    ROOT.parent / "shared" / "corpora",
)
ATTACKS = {
    "sqli": "attack/sqli.txt",
    "xss": "attack/xss.txt",
    "traversal": "attack/traversal.txt",
    "cmdi": "attack/cmdi.txt",
}
BENIGN = {
    "libinjection-fp": "benign/libinjection_false_positives.txt",
    "shakespeare": "benign/shakespeare_lines.txt",
}


def arg(name: str, default: int) -> int:
    if name in sys.argv:
        return int(sys.argv[sys.argv.index(name) + 1])
    return default


FULL = "--full" in sys.argv
LEVEL = arg("--level", 1)
SAMPLE = arg("--sample", 3000)


def lines(relative: str) -> list[str]:
    path = CORPORA / relative
    out = []
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if raw.strip() and not raw.startswith("# "):
            out.append(raw)
    if not FULL and len(out) > SAMPLE:
        out = random.Random(5).sample(out, SAMPLE)
    return out


def run(layer: Validation, view: RequestView, body: bytes | None) -> Any:
    decision = layer.on_request(view)
    if decision is None or isinstance(decision, Respond):
        return decision
    effect = next(decision)
    try:
        while True:
            if isinstance(effect, ReadBody):
                effect = decision.send(body)
            else:
                effect = decision.send(None)
    except StopIteration as stop:
        return stop.value


def header_safe(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ").encode("latin-1", "replace").decode("latin-1")


def make(place: str, encoded: bool, line: str) -> tuple[RequestView, bytes | None]:
    value = quote(line, safe="") if encoded else line
    headers: list[tuple[bytes, bytes]] = [(b"host", b"bench")]
    query = ""
    body: bytes | None = None
    if place == "query":
        # Encoded the way browsers send form fields in a GET: spaces as "+".
        query = "q=" + (quote_plus(line, safe="") if encoded else line.replace("#", "%23"))
    elif place == "json":
        body = json.dumps({"q": value}).encode()
        headers.append((b"content-type", b"application/json"))
    elif place == "form":
        body = ("q=" + quote_plus(value)).encode()
        headers.append((b"content-type", b"application/x-www-form-urlencoded"))
    else:
        headers.append((b"user-agent", header_safe(value).encode("latin-1")))
    if body is not None:
        headers.append((b"content-length", str(len(body)).encode()))
    view = RequestView(method="POST", path="/", query_string=query, headers=headers, request_id="b")
    return view, body


def rate(
    layer: Validation, corpus: list[str], place: str, encoded: bool
) -> tuple[float, float, int]:
    flagged = 0
    other = 0
    for line in corpus:
        view, body = make(place, encoded, line)
        answer = run(layer, view, body)
        if isinstance(answer, Respond):
            if answer.status == 403:
                flagged += 1
            else:
                other += 1
    return flagged / len(corpus), other / len(corpus), len(corpus)


def main() -> None:
    import structlog

    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())  # silence the layer's logs
    layer = Validation(
        threats="block",
        threat_level=LEVEL,
        max_url=None,
        max_header_bytes=None,
        max_query_params=None,
        max_body=None,
        json=False,
    )
    places = ["query", "json", "form", "header"]
    print(
        f"corpora: {CORPORA}  level {LEVEL}  "
        f"{'every line' if FULL else f'up to {SAMPLE} sampled lines per file'}"
    )
    header = f"{'corpus':18s} {'lines':>6s} " + " ".join(
        f"{p + '/' + e:>12s}" for p in places for e in ("raw", "urlenc")
    )
    print(
        "\ndetection (attack corpora) / false positives (benign): share of lines refused with 403"
    )
    print(header)
    t0 = time.perf_counter()
    other_notes = []
    for group in (ATTACKS, BENIGN):
        for name, rel in group.items():
            corpus = lines(rel)
            cells = []
            for place in places:
                for encoded in (False, True):
                    flagged, other, _ = rate(layer, corpus, place, encoded)
                    cells.append(f"{flagged * 100:11.2f}%")
                    if other:
                        where = f"{place}/{'urlenc' if encoded else 'raw'}"
                        other_notes.append(f"{name} {where}: {other * 100:.2f}% refused otherwise")
            print(f"{name:18s} {len(corpus):6d} " + " ".join(cells))
    for note in other_notes:
        print("note:", note)
    print(f"\n(took {time.perf_counter() - t0:.0f} s)")
    # What the default level misses, by kind: a few examples for docs/threats.md.
    detector = layer.policy_for("POST", "/").detector
    assert detector is not None
    print("\nexamples of missed attack lines (raw value), first 5 per kind:")
    for name, rel in ATTACKS.items():
        missed = [line for line in lines(rel) if not detector.scan(line)]
        print(f"  {name}: {len(missed)} missed")
        for line in missed[:5]:
            print("    ", repr(line[:90]))


if __name__ == "__main__":
    main()
