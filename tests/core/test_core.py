from __future__ import annotations

import json

import pytest

from seawall import (
    CONTINUE,
    CircuitOpen,
    ConfigurationError,
    RateLimited,
    Rejected,
    Respond,
    StorageError,
    ValidationFailed,
)
from seawall._core.histogram import LogHistogram, SlidingCounter
from seawall._core.problem import problem_type_uri
from seawall._core.request import RequestIds, RequestView
from seawall._core.stack import Stack
from seawall._run import run_flow, run_request
from seawall.testing import ManualClock


def view(path: str = "/") -> RequestView:
    return RequestView.from_asgi({"type": "http", "path": path, "headers": []})


class Effect:
    def __init__(self, value: object = None, error: Exception | None = None) -> None:
        self.value, self.error = value, error

    def run(self) -> object:
        if self.error:
            raise self.error
        return self.value

    async def arun(self) -> object:
        return self.run()


class TestProblems:
    def test_iana_types_get_the_registry_uri(self) -> None:
        assert problem_type_uri("quota-exceeded").endswith("#quota-exceeded")
        assert problem_type_uri("body-too-large") == "urn:seawall:problem:body-too-large"
        assert problem_type_uri("about:blank") == "about:blank"

    def test_rejection_renders_problem_json(self) -> None:
        exc = RateLimited("slow down", retry_after=2.2, policy="default")
        r = Respond.from_rejection(exc, instance="/x", request_id="rid")
        doc = json.loads(r.body)
        assert r.status == 429
        assert r.content_type == "application/problem+json"
        assert doc["status"] == 429
        assert doc["policy"] == "default"
        assert doc["request_id"] == "rid"
        assert ("Retry-After", "3") in r.headers  # rounded up: never retry early

    def test_extensions_never_override_standard_members(self) -> None:
        from seawall._core.problem import problem_body

        doc = json.loads(problem_body(400, "x", "T", "d", extensions={"status": 999, "type": "e"}))
        assert doc["status"] == 400
        assert doc["type"] == "urn:seawall:problem:x"

    def test_rejected_is_abstract(self) -> None:
        with pytest.raises(TypeError):
            Rejected("x")
        assert CircuitOpen().status == 503
        assert ValidationFailed(status=413).status == 413


class TestFlows:
    def test_effect_result_is_sent_back(self) -> None:
        def flow():
            got = yield Effect(41)
            return Respond(200 + got)

        assert run_flow(flow()).status == 241

    def test_storage_error_is_thrown_into_the_flow(self) -> None:
        def flow():
            try:
                yield Effect(error=StorageError("down"))
            except StorageError:
                return CONTINUE
            return Respond(500)  # pragma: no cover

        assert run_flow(flow()) is CONTINUE


class FailingLayer:
    name = "failing"

    def on_request(self, request: RequestView) -> None:
        raise ZeroDivisionError


class Refuser:
    name = "refuser"
    order = 500

    def on_request(self, request: RequestView) -> Respond:
        raise RateLimited("no")


class Recorder:
    def __init__(self, name: str, order: int) -> None:
        self.name, self.order, self.seen = name, order, []

    def on_request(self, request: RequestView) -> None:
        self.seen.append("request")

    def on_complete(self, request, outcome) -> None:
        self.seen.append("complete")


class TestStack:
    def test_canonical_order_and_as_given(self) -> None:
        a, b = Recorder("inner", 800), Recorder("outer", 100)
        assert Stack([a, b]).names == ("outer", "inner")
        assert Stack([a, b], order="as given").names == ("inner", "outer")

    def test_failing_layer_fails_open(self, logs) -> None:
        respond, depth = run_request(Stack([FailingLayer()]), view())
        assert respond is None
        assert depth == 1
        assert logs[0]["event"] == "seawall.layer.failed"
        assert logs[0]["layer"] == "failing"

    @pytest.mark.layer_failures
    def test_failing_layer_raises_when_asked(self) -> None:
        with pytest.raises(ZeroDivisionError):
            run_request(Stack([FailingLayer()], on_layer_error="raise"), view())

    def test_rejection_stops_at_its_depth(self) -> None:
        outer, inner = Recorder("outer", 100), Recorder("inner", 800)
        stack = Stack([inner, Refuser(), outer])
        respond, depth = run_request(stack, view())
        assert respond is not None
        assert respond.status == 429
        assert stack.names[depth] == "refuser"
        assert outer.seen == ["request"]
        assert inner.seen == []

    def test_class_instead_of_instance_is_refused(self) -> None:
        with pytest.raises(ConfigurationError, match="instance"):
            Stack([Recorder])


class TestHelpers:
    def test_request_ids(self) -> None:
        ids = RequestIds()
        assert ids.accept("abc-123") == "abc-123"
        fresh = {ids.accept(None) for _ in range(100)}
        assert len(fresh) == 100
        for hostile in ["", "a" * 129, "x\r\nSet-Cookie: a=b", "<script>"]:
            assert ids.accept(hostile) != hostile

    def test_histogram_percentiles_are_close(self) -> None:
        h = LogHistogram()
        for i in range(1, 1001):
            h.record(i / 1000.0)  # 1 ms .. 1 s
        assert h.count == 1000
        for q in (50, 95, 99):
            assert h.percentile(q) == pytest.approx(q / 100.0, rel=0.07)
        assert h.max == 1.0

    def test_sliding_counter_forgets_old_events(self) -> None:
        clock = ManualClock()
        c = SlidingCounter(10.0, 10, clock)
        c.add(5)
        clock.advance(5)
        c.add(1)
        assert c.total() == 6
        clock.advance(5.5)
        assert c.total() == 1
        clock.advance(100)
        assert c.total() == 0


class TestHistogramBuckets:
    """The bisected buckets are the log-linear ones: 8 per power of two."""

    def test_each_value_lands_in_its_power_of_two_eighth(self) -> None:
        import math
        import random

        rng = random.Random(7)
        last = LogHistogram._SIZE - 1
        for _ in range(20_000):
            value = math.exp(rng.uniform(math.log(1e-7), math.log(5000.0)))
            mantissa, exp = math.frexp(value)
            want = (exp - LogHistogram._MIN_EXP) * 8 + int(mantissa * 16.0) - 8
            h = LogHistogram()
            h.record(value)
            assert h._counts.index(1) == min(max(want, 0), last)

    def test_zero_and_tiny_durations_go_to_the_first_bucket(self) -> None:
        h = LogHistogram()
        h.record(0.0)
        h.record(1e-9)
        assert h._counts[0] == 2
        assert h.percentile(99) < 1e-5
