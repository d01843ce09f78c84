"""Flask under seawall: ``gunicorn --chdir examples flask_app:app``.

Or ``python examples/flask_app.py`` for Flask's development server.
"""

from __future__ import annotations

from flask import Flask, abort, request

from seawall.flask import Seawall

app = Flask(__name__)
app.config["SEAWALL"] = {
    "timing": {"slow": 0.5},
    "error_capture": True,
    "health": {"resources": False},
    "metrics": True,
    "load_shedding": {"cpu_threshold": None, "memory_threshold": 99.0},
    "concurrency": {"max_in_flight": 64},
    "rate_limit": {"limit": "100/minute"},
    "validation": {"max_body": "1 MB"},
    "circuit_breaker": {"per": "route", "failure_rate_threshold": 0.5},
    "timeout": {"seconds": 10.0},
}
guard = Seawall(app)


@app.get("/")
def index():
    return {"hello": "world", "request_id": request.environ.get("seawall.request_id")}


@app.get("/items/<int:item_id>")
def item(item_id: int):
    if item_id == 0:
        abort(404)
    return {"id": item_id}


@app.get("/boom")
def boom():
    raise RuntimeError("something broke")


@app.post("/login")
@guard.limit("5/minute")
def login():
    return {"token": "not-a-real-token"}


@app.post("/items")
@guard.validate({"type": "object", "required": ["name"]}, sanitize=["name"], into="item")
def create_item(item: dict):
    return {"created": item["name"]}, 201


@app.get("/status")
@guard.exempt
def status():
    return {"layers": [name for name in guard.wall.stack.names]}


if __name__ == "__main__":
    app.run(port=8000)
