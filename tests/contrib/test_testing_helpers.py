"""seawall.testing.override: disabling or tightening layers in an app's own tests."""

from __future__ import annotations

import unittest
from typing import Any

import pytest
from fastapi import FastAPI
from flask import Flask
from starlette.testclient import TestClient

from seawall.fastapi import SeawallMiddleware
from seawall.flask import Seawall
from seawall.layers import Timing
from seawall.testing import override, reset
from tests.contrib.layers import Deny


def flask_app() -> Flask:
    app = Flask(__name__)
    Seawall(app, layers=[Timing(), Deny()])
    app.get("/")(lambda: "hi")
    return app


def status(app: Flask, **headers: str) -> int:
    return app.test_client().get("/", headers=headers, buffered=True).status_code


class TestOverride:
    @pytest.mark.parametrize("spec", ["deny", "Deny", Deny], ids=["name", "class name", "class"])
    def test_disable_then_restore(self, spec: Any) -> None:
        """A disabled layer is gone inside the block and back after it."""
        app = flask_app()
        assert status(app, **{"x-deny": "1"}) == 429
        with override(app, disable=[spec]) as wall:
            assert status(app, **{"x-deny": "1"}) == 200
            assert [type(layer) for layer in wall.layers] == [Timing]
        assert status(app, **{"x-deny": "1"}) == 429

    def test_disable_by_config_key(self) -> None:
        """Config keys name layers too ("timing")."""
        app = flask_app()
        with override(app, disable=["timing"]):
            assert "Server-Timing" not in app.test_client().get("/", buffered=True).headers
        assert "Server-Timing" in app.test_client().get("/", buffered=True).headers

    def test_replace_tightens(self) -> None:
        """replace= swaps a layer for a stricter one."""
        app = flask_app()
        with override(app, replace={"deny": Deny(header="x-other")}):
            assert status(app, **{"x-deny": "1"}) == 200
            assert status(app, **{"x-other": "1"}) == 429

    def test_unknown_name_is_an_error(self) -> None:
        """A typo must not leave a limit silently in place."""
        with (
            pytest.raises(ValueError, match="rate_limitt"),
            override(flask_app(), disable=["rate_limitt"]),
        ):
            pass

    def test_as_decorator(self) -> None:
        """override(...) decorates a test function."""
        app = flask_app()

        @override(app, disable=["deny"])
        def check() -> int:
            return status(app, **{"x-deny": "1"})

        assert check() == 200
        assert status(app, **{"x-deny": "1"}) == 429

    def test_fastapi_before_first_request(self) -> None:
        """A FastAPI app can be overridden before it served anything."""
        app = FastAPI()
        app.add_middleware(SeawallMiddleware, layers=[Deny()])
        app.get("/")(lambda: {"ok": True})
        with override(app, disable=["deny"]):
            assert TestClient(app).get("/", headers={"x-deny": "1"}).status_code == 200
        assert TestClient(app).get("/", headers={"x-deny": "1"}).status_code == 429

    def test_reset_between_tests(self) -> None:
        """reset(app) clears every layer's state."""
        app = flask_app()
        status(app)
        wall = app.extensions["seawall"]._wall
        assert wall.stats()["deny"]["seen"] == 1
        reset(app)
        assert wall.stats()["deny"]["seen"] == 0


class UnittestStyle(unittest.TestCase):
    """The unittest recipe from docs: enterContext in setUp."""

    def setUp(self) -> None:
        self.app = flask_app()
        self.enterContext(override(self.app, disable=["deny"]))

    def test_limits_are_off(self) -> None:
        assert status(self.app, **{"x-deny": "1"}) == 200


def test_unittest_recipe_restores() -> None:
    """After the unittest case ends, the layer is back."""
    result = unittest.TestResult()
    case = UnittestStyle("test_limits_are_off")
    case.run(result)
    assert result.wasSuccessful(), result.failures + result.errors
    assert status(case.app, **{"x-deny": "1"}) == 429
