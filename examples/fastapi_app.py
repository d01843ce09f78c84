"""FastAPI under seawall: ``uvicorn --app-dir examples fastapi_app:app``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel

from seawall import request_id
from seawall.fastapi import SeawallMiddleware, document, exempt, limit, validate

app = FastAPI(title="seawall example")
app.add_middleware(
    SeawallMiddleware,
    timing={"slow": 0.5},
    error_capture=True,
    health={"resources": False},
    metrics=True,
    load_shedding={"cpu_threshold": None, "memory_threshold": 99.0},
    concurrency={"max_in_flight": 64},
    rate_limit={"limit": "100/minute"},
    validation={"max_body": "1 MB"},
    circuit_breaker={"per": "route", "failure_rate_threshold": 0.5},
    timeout={"seconds": 10.0},
)


@app.get("/")
async def index() -> dict[str, str | None]:
    return {"hello": "world", "request_id": request_id()}


@app.get("/items/{item_id}")
def item(item_id: int) -> dict[str, int]:
    if item_id == 0:
        raise HTTPException(404)
    return {"id": item_id}


@app.get("/boom")
async def boom() -> None:
    raise RuntimeError("something broke")


class Item(BaseModel):
    name: str


@app.post("/login", dependencies=[Depends(limit("5/minute"))])
async def login() -> dict[str, str]:
    return {"token": "not-a-real-token"}


@app.post("/items", status_code=201)
async def create_item(
    item: Annotated[Item, Depends(validate(Item, sanitize=["name"]))],
) -> dict[str, str]:
    return {"created": item.name}


@app.get("/status")
@exempt
async def status() -> dict[str, bool]:
    return {"ok": True}


document(app)  # the problem responses in /docs
