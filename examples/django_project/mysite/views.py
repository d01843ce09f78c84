"""Views of the example project: sync, async and class-based."""

from __future__ import annotations

import asyncio

from django.http import Http404, HttpRequest, JsonResponse
from django.views import View

from seawall import request_id
from seawall.django import exempt, limit, validate


def index(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"hello": "world", "request_id": request_id()})


async def item(request: HttpRequest, item_id: int) -> JsonResponse:
    await asyncio.sleep(0)
    if item_id == 0:
        raise Http404("no such item")
    return JsonResponse({"id": item_id})


def boom(request: HttpRequest) -> JsonResponse:
    raise RuntimeError("something broke")


@limit("5/minute")
async def login(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"token": "not-a-real-token"})


@validate({"type": "object", "required": ["name"]}, sanitize=["name"], into="item")
def create_item(request: HttpRequest, item: dict) -> JsonResponse:
    return JsonResponse({"created": item["name"]}, status=201)


@exempt
def status(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


class Report(View):
    def get(self, request: HttpRequest) -> JsonResponse:
        return JsonResponse({"report": "ready"})
