"""Django views and URLconf for the adapter tests (sync and async)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog
from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
from django.http import Http404, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path, re_path
from django.views import View

from seawall import request_id
from seawall.django import exempt, limit
from seawall.exceptions import RateLimited, ValidationFailed


def item(request, id):
    return JsonResponse({"id": id, "rid": request_id()})


async def aitem(request, id):
    await asyncio.sleep(0)
    return JsonResponse({"id": id, "rid": request_id()})


def boom(request):
    raise RuntimeError("boom with secret hunter2")


def rx_boom(request, pk):
    raise RuntimeError("a re_path route failing")


def rx_page(request, slug):
    return HttpResponse(b"page " + slug.encode())


async def aboom(request):
    raise RuntimeError("async boom with secret hunter2")


def missing(request):
    raise Http404("nothing here")


def denied(request):
    raise PermissionDenied


def suspicious(request):
    raise SuspiciousOperation("odd")


def bad_request(request):
    raise BadRequest("bad")


def logged(request):
    structlog.get_logger("app").info("in.view", view="sync")
    return HttpResponse(b"logged")


async def alogged(request):
    await asyncio.sleep(0)
    structlog.get_logger("app").info("in.view", view="async")
    return HttpResponse(b"logged")


def rejected(request):
    raise RateLimited("slow down", retry_after=7)


def invalid(request, payload):
    raise ValidationFailed("The body does not match the schema.", status=422)


def echo(request):
    return HttpResponse(request.body, content_type="application/octet-stream")


def stream(request):
    return StreamingHttpResponse(iter([b"a", b"b", b"c"]))


def stream_id(request):
    def chunks():
        yield b"id="
        yield (request_id() or "none").encode()

    return StreamingHttpResponse(chunks())


async def slow(request):
    await asyncio.sleep(float(request.GET.get("s", "0.2")))
    return HttpResponse(b"late")


@exempt
def free(request):
    return HttpResponse(b"free")


@limit("2/minute", count_when="failure", key="header:X-User")
def login(request):
    return HttpResponse(b"no", status=401) if "fail" in request.GET else HttpResponse(b"ok")


@limit("2/minute", count_when="failure", key="header:X-User")
async def alogin(request):
    await asyncio.sleep(0)
    return HttpResponse(b"no", status=401) if "fail" in request.GET else HttpResponse(b"ok")


def own_id(request):
    return HttpResponse(b"ok", headers={"X-Request-ID": "from-the-app"})


#: What /scripted and /ascripted do: set by tests/contrib/test_conformance_django.py.
SCRIPTED: Callable[[Any], Any] | None = None


def scripted(request):
    assert SCRIPTED is not None
    return SCRIPTED(request)


async def ascripted(request):
    assert SCRIPTED is not None
    await asyncio.sleep(0)
    return SCRIPTED(request)


class ItemView(View):
    def get(self, request, id):
        return JsonResponse({"id": id, "cbv": True})


urlpatterns = [
    path("items/<int:id>", item),
    path("aitems/<int:id>", aitem),
    path("boom", boom),
    path("aboom", aboom),
    path("missing", missing),
    path("denied", denied),
    path("suspicious", suspicious),
    path("rejected", rejected),
    path("stream-id", stream_id),
    re_path(r"^rx/(?P<pk>[0-9]+)/$", rx_boom),
    re_path(r"^rxpages/(?P<slug>[\w-]+)/$", rx_page),
    path("invalid/<str:payload>", invalid),
    path("bad", bad_request),
    path("logged", logged),
    path("alogged", alogged),
    path("echo", echo),
    path("stream", stream),
    path("slow", slow),
    path("free", free),
    path("cbv/<int:id>", ItemView.as_view()),
    path("login", login),
    path("alogin", alogin),
    path("own-id", own_id),
    path("scripted", scripted),
    path("ascripted", ascripted),
]
