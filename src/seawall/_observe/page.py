"""The dashboard's single self-contained HTML page: inline CSS and JS, no CDN, no build.

The script fetches ``<path>/stats.json`` every few seconds and renders it with
DOM methods and ``textContent`` only (never ``innerHTML``): stats carry
client keys and exception types, text an attacker may choose. The page's
Content-Security-Policy allows exactly this style and this script, by hash.
"""

from __future__ import annotations

import base64
import hashlib

__all__ = ["CSS", "SCRIPT", "csp", "page"]

CSS = """
:root{--bg:#0f1419;--card:#182029;--fg:#e6e6e6;--dim:#8b98a5;--ok:#2ea043;--warn:#d29922;
--bad:#f85149;--line:#2a3440;font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif}
body{margin:0;background:var(--bg);color:var(--fg)}
header{display:flex;gap:16px;align-items:baseline;padding:14px 20px;
border-bottom:1px solid var(--line)}
header h1{font-size:18px;margin:0}
#updated,#layers{color:var(--dim)}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:14px;
padding:14px 20px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 14px;
min-width:0;overflow-x:auto}
section h2{font-size:13px;text-transform:uppercase;letter-spacing:.06em;color:var(--dim);
margin:0 0 8px}
.tiles{display:flex;flex-wrap:wrap;gap:10px}
.tile{min-width:110px;padding:6px 10px;border:1px solid var(--line);border-radius:6px}
.tile b{display:block;font-size:22px}
.tile span{color:var(--dim);font-size:12px}
table{width:100%;border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:3px 6px;border-bottom:1px solid var(--line);white-space:nowrap;
overflow:hidden;text-overflow:ellipsis;max-width:220px}
th{color:var(--dim);font-weight:500}
td.n{text-align:right}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;font-size:12px}
.closed,.pass{background:rgba(46,160,67,.2);color:var(--ok)}
.half_open,.warn{background:rgba(210,153,34,.2);color:var(--warn)}
.open,.forced_open,.fail{background:rgba(248,81,73,.2);color:var(--bad)}
.empty{color:var(--dim);font-style:italic}
details{margin-top:6px}
pre{white-space:pre-wrap;word-break:break-all;color:var(--dim);font-size:12px;max-height:300px;overflow:auto}
#error{color:var(--bad)}
@media (min-width:900px){section.wide{grid-column:span 2}}
"""

SCRIPT = """
"use strict";
(function () {
  var root = document.documentElement;
  var url = root.dataset.stats, every = Number(root.dataset.refresh) * 1000;

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }
  function fmt(v) {
    if (v === null || v === undefined) return "-";
    if (typeof v === "number") return Number.isInteger(v) ? v.toLocaleString("en") : v.toFixed(2);
    return String(v);
  }
  function table(id, heads, rows, empty) {
    var box = document.getElementById(id);
    box.replaceChildren();
    if (!rows.length) { box.appendChild(el("p", empty, "empty")); return; }
    var t = el("table"), tr = el("tr");
    heads.forEach(function (h) { tr.appendChild(el("th", h)); });
    t.appendChild(tr);
    rows.forEach(function (row) {
      var r = el("tr");
      row.forEach(function (cell) {
        if (cell instanceof Node) { var td = el("td"); td.appendChild(cell); r.appendChild(td); }
        else r.appendChild(el("td", fmt(cell), typeof cell === "number" ? "n" : ""));
      });
      t.appendChild(r);
    });
    box.appendChild(t);
  }
  function tiles(id, items) {
    var box = document.getElementById(id);
    box.replaceChildren();
    items.forEach(function (it) {
      var d = el("div", null, "tile");
      d.appendChild(el("b", fmt(it[1])));
      d.appendChild(el("span", it[0]));
      box.appendChild(d);
    });
  }
  function badge(state) {
    var s = String(state).toLowerCase().replace(/[- ]/g, "_");
    var b = el("span", s.replace("_", "-"), "badge " + s);
    b.dataset.state = s;
    return b;
  }
  function each(obj, fn) { Object.keys(obj || {}).forEach(function (k) { fn(k, obj[k]); }); }
  function pairs(v) {
    if (Array.isArray(v)) return v.map(function (x) {
      if (typeof x !== "object" || !x) return [x, null];
      return [x.key !== undefined ? x.key : x.name, x.count !== undefined ? x.count : x.hits];
    });
    var out = [];
    each(v, function (k, n) {
      if (typeof n === "object" && n) n = n.count !== undefined ? n.count : n.limited;
      out.push([k, n]);
    });
    out.sort(function (a, b) { return (b[1] || 0) - (a[1] || 0); });
    return out;
  }

  function render(data) {
    var layers = data.layers || {}, s = data.summary || {};
    document.getElementById("layers").textContent = (data.wall.layers || []).join(" \\u2192 ");
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    tiles("tiles", [["requests", s.requests], ["in flight", data.wall.in_flight],
      ["rejected", s.rejected_total], ["shed", s.shed_total], ["errors", s.errors],
      ["draining", data.wall.draining ? "yes" : "no"]]);

    var breakers = [];
    (s.breakers || []).forEach(function (b) {
      breakers.push([b.name, badge(b.state), b.failure_rate, b.calls, b.retry_after]);
    });
    table("breakers", ["breaker", "state", "failure rate", "calls", "retry in (s)"], breakers,
      "no circuit breaker");

    var limited = [];
    each(layers, function (name, st) {
      if (!st || typeof st !== "object") return;
      (Array.isArray(st.top_limited) ? st.top_limited : pairs(st.top_keys || [])).slice(0, 10)
        .forEach(function (p) {
          if (Array.isArray(p)) limited.push([name, "key", p[0], p[1]]);
          else if (p && typeof p === "object")
            limited.push([name, p.rule ? "key (" + p.rule + ")" : "key", p.key, p.count]);
        });
      // Only rate-limit rules count refusals ({allowed, limited}); other layers'
      // "rules" (Timeout's seconds per pattern) are settings, not counts.
      var rules = [];
      each(st.rules, function (rule, r) {
        if (r && typeof r === "object" && typeof r.limited === "number") rules.push([rule, r]);
      });
      rules.sort(function (a, b) { return b[1].limited - a[1].limited; });
      rules.slice(0, 10).forEach(function (p) {
        limited.push([name, "rule", p[0], p[1].limited]);
      });
    });
    table("limits", ["layer", "kind", "key / rule", "limited"], limited, "nothing limited yet");

    var groups = [];
    each(layers, function (name, st) {
      if (st && Array.isArray(st.groups)) st.groups.slice(0, 15).forEach(function (g) {
        groups.push([g.type, g.location, g.count, g.last_minute]);
      });
    });
    table("errors", ["type", "where", "count", "last min"], groups, "no errors captured");

    var routes = [];
    each(layers, function (name, st) {
      if (st && st.routes && typeof st.routes === "object" && !Array.isArray(st.routes))
        each(st.routes, function (route, r) {
          if (r && typeof r === "object" && "p50_ms" in r)
            routes.push([route, r.count, r.p50_ms, r.p95_ms, r.p99_ms, r.max_ms, r.errors]);
        });
    });
    routes.sort(function (a, b) { return b[1] - a[1]; });
    table("routes", ["route", "count", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors"],
      routes.slice(0, 30), "no requests timed yet (add Timing)");

    var shed = [];
    each(s.shed || {}, function (reason, n) { shed.push(["shed: " + reason, n]); });
    each(s.rejected || {}, function (layer, n) { shed.push(["rejected by " + layer, n]); });
    if (s.limit !== undefined && s.limit !== null) shed.push(["concurrency limit", s.limit]);
    table("load", ["what", "count"], shed, "nothing shed or rejected");

    var raw = document.getElementById("raw");
    raw.replaceChildren();
    each(layers, function (name, st) {
      var d = el("details"); d.appendChild(el("summary", name));
      d.appendChild(el("pre", JSON.stringify(st, null, 2)));
      raw.appendChild(d);
    });
    document.getElementById("error").textContent = "";
    root.dataset.loaded = "1";
  }

  function tick() {
    var opts = {credentials: "same-origin", cache: "no-store",
                headers: {"Accept": "application/json"}};
    fetch(url, opts)
      .then(function (r) {
        if (!r.ok) throw new Error("stats: HTTP " + r.status);
        return r.json();
      })
      .then(render)
      .catch(function (e) {
        document.getElementById("error").textContent = String(e.message || e);
      })
      .finally(function () { setTimeout(tick, every); });
  }
  tick();
})();
"""

_BODY = """<!doctype html>
<html lang="en" data-stats="{stats}" data-refresh="{refresh}">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="referrer" content="no-referrer"><title>seawall dashboard</title>
<link rel="icon" href="data:,">
<style>{css}</style></head>
<body>
<header><h1>seawall</h1><span id="layers"></span><span id="updated">loading&hellip;</span>
<span id="error"></span></header>
<main>
<section><h2>Overview</h2><div id="tiles" class="tiles"></div></section>
<section><h2>Circuit breakers</h2><div id="breakers"></div></section>
<section><h2>Shed and rejected</h2><div id="load"></div></section>
<section><h2>Top limited keys and rules</h2><div id="limits"></div></section>
<section><h2>Error groups</h2><div id="errors"></div></section>
<section class="wide"><h2>Latency per route</h2><div id="routes"></div></section>
<section><h2>Every layer's stats</h2><div id="raw"></div></section>
</main>
<script>{script}</script>
</body></html>
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def csp() -> str:
    """A Content-Security-Policy allowing only the inline style and script above."""
    return (
        f"default-src 'none'; style-src {_sha256(CSS)}; script-src {_sha256(SCRIPT)}; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


def page(stats_url: str, refresh: float) -> bytes:
    """The HTML page, fetching *stats_url* every *refresh* seconds."""
    from html import escape

    return _BODY.format(
        stats=escape(stats_url, quote=True), refresh=f"{refresh:g}", css=CSS, script=SCRIPT
    ).encode()
