from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seawall import ConfigurationError, ErrorCapture, Seawall, Timing
from seawall.config import load_config


def app(environ, start_response):  # a WSGI app
    start_response("200 OK", [])
    return [b""]


class TestSources:
    def test_dict(self) -> None:
        kw = load_config({"trusted_proxies": ["10.0.0.0/8"], "timing": {"slow": 2}}, env={})
        assert kw["trusted_proxies"] == ["10.0.0.0/8"]
        (timing,) = kw["layers"]
        assert isinstance(timing, Timing)
        assert timing.slow == 2.0

    def test_toml_file_and_pyproject(self, tmp_path: Path) -> None:
        f = tmp_path / "seawall.toml"
        f.write_text('[seawall]\norder = "as given"\n[seawall.timing]\nslow = 0.5\n')
        assert load_config(f, env={})["order"] == "as given"
        py = tmp_path / "pyproject.toml"
        py.write_text("[tool.seawall.error_capture]\ndebug = true\n")
        (layer,) = load_config(py, env={})["layers"]
        assert isinstance(layer, ErrorCapture)
        assert layer.debug is True

    def test_environment_overrides_file(self, tmp_path: Path) -> None:
        f = tmp_path / "s.toml"
        f.write_text("[timing]\nslow = 0.5\n")
        env = {
            "SEAWALL_TIMING__SLOW": "3",
            "SEAWALL_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.0.0/16",
            "SEAWALL_REQUIRE_REDIS": "1",
            "OTHER": "x",
        }
        kw = load_config(f, env=env)
        assert kw["layers"][0].slow == 3.0
        assert kw["trusted_proxies"] == ["10.0.0.0/8", "192.168.0.0/16"]

    def test_env_can_disable_a_layer(self) -> None:
        kw = load_config({"timing": {}, "error_capture": {}}, env={"SEAWALL_TIMING": "false"})
        assert [type(x) for x in kw["layers"]] == [ErrorCapture]

    def test_same_settings_three_ways(self, tmp_path: Path) -> None:
        f = tmp_path / "s.toml"
        f.write_text("[timing]\nslow = 0.25\nmax_routes = 10\n")
        from_dict = load_config({"timing": {"slow": 0.25, "max_routes": 10}}, env={})
        from_file = load_config(f, env={})
        from_env = load_config(
            None, env={"SEAWALL_TIMING__SLOW": "0.25", "SEAWALL_TIMING__MAX_ROUTES": "10"}
        )
        for kw in (from_dict, from_file, from_env):
            (t,) = kw["layers"]
            assert (t.slow, t.max_routes) == (0.25, 10)

    @given(
        text=st.one_of(
            st.integers().map(str),
            st.floats(allow_nan=False, allow_infinity=False).map(repr),
            st.dates().map(str),
            st.sampled_from(["1e3", "0x1F", "07:30:00", "inf", "1_000"]),
            st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True),
        )
    )
    def test_a_string_setting_takes_the_text_as_written(self, text: str) -> None:
        """SEAWALL_RATE_LIMIT__KEY_PREFIX=2024 is the prefix '2024', not a number refused."""
        env = {"SEAWALL_RATE_LIMIT__LIMIT": "5/minute", "SEAWALL_RATE_LIMIT__KEY_PREFIX": text}
        (layer,) = load_config(None, env=env)["layers"]
        assert layer.key_prefix == text
        assert load_config(None, env={"SEAWALL_REQUEST_ID_HEADER": text}) == {
            "request_id_header": text
        }

    def test_a_number_setting_still_takes_a_number(self) -> None:
        env = {"SEAWALL_TIMING__MAX_ROUTES": "10", "SEAWALL_TIMING__SLOW": "2"}
        (timing,) = load_config(None, env=env)["layers"]
        assert (timing.max_routes, timing.slow) == (10, 2.0)
        with pytest.raises(
            ConfigurationError, match="max_routes: expected a whole number, got '2026-12-07'"
        ):
            load_config(None, env={"SEAWALL_TIMING__MAX_ROUTES": "2026-12-07"})

    def test_from_config_builds_the_wall(self) -> None:
        wall = Seawall.from_config(app, {"timing": True}, env={})
        assert wall.interface == "wsgi"
        assert [type(x) for x in wall.layers] == [Timing]

    def test_no_layer_tables_gives_the_recommended_stack(self) -> None:
        from seawall import CircuitBreaker, Validation

        wall = Seawall.from_config(app, {}, env={})
        assert [type(x) for x in wall.layers] == [Timing, ErrorCapture, Validation, CircuitBreaker]


class TestErrorsNameTheKey:
    @pytest.mark.parametrize(
        ("settings", "message"),
        [
            pytest.param({"timng": {}}, "unknown setting 'timng'", id="unknown top-level"),
            pytest.param(
                {"timing": {"slw": 1}}, "unknown setting 'timing.slw'", id="unknown layer key"
            ),
            pytest.param(
                {"timing": {"slow": "fast"}}, "timing.slow: expected a number", id="ill-typed"
            ),
            pytest.param(
                {"timing": {"server_timing": "yes"}},
                "timing.server_timing: expected true or false",
                id="bool",
            ),
            pytest.param(
                {"order": "random"}, "order: expected 'canonical' or 'as given'", id="literal"
            ),
            pytest.param({"trusted_proxies": ["300.0.0.0/8"]}, "trusted_proxies", id="bad cidr"),
            pytest.param({"timing": {"slow": -1}}, "timing: slow", id="out of range"),
        ],
    )
    def test_message(self, settings: dict, message: str) -> None:
        with pytest.raises(ConfigurationError, match=message.replace("(", r"\(")):
            Seawall.from_config(app, settings, env={})

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigurationError, match="does not exist"):
            load_config(tmp_path / "nope.toml", env={})

    def test_bad_toml(self, tmp_path: Path) -> None:
        f = tmp_path / "bad.toml"
        f.write_text("[timing\n")
        with pytest.raises(ConfigurationError, match="not valid TOML"):
            load_config(f, env={})

    def test_a_misspelt_variable_is_named(self) -> None:
        with pytest.raises(ConfigurationError, match="environment variable SEAWALL_TIMNG"):
            load_config({"timing": {}}, env={"SEAWALL_TIMNG": "1"})

    def test_a_misspelt_pyproject_table_is_named(self, tmp_path: Path) -> None:
        f = tmp_path / "pyproject.toml"
        f.write_text('[tool.seawal.rate_limit]\nlimit = "5/minute"\n')
        with pytest.raises(ConfigurationError, match=r"\[tool\.seawal\] is not read"):
            load_config(f, env={})
        f.write_text("[tool.black]\nline-length = 100\n")
        load_config(f, env={})  # no seawall table at all: the defaults, no error

    def test_callable_from_import_string(self) -> None:
        kw = load_config({"error_capture": {"sinks": []}}, env={})
        assert isinstance(kw["layers"][0], ErrorCapture)


def plan_limit(request: object) -> str:
    """A per-plan limit named by an import string in the settings below."""
    return "2/minute"


class TestImportStrings:
    """A setting that takes a callable or text reads an import string as the callable."""

    def _statuses(self, wall: Seawall, n: int, **headers: str) -> list[int]:
        from werkzeug.test import Client

        client = Client(wall)
        return [client.get("/", headers=headers).status_code for _ in range(n)]

    def test_a_callable_limit_from_settings(self) -> None:
        wall = Seawall.from_config(app, {"rate_limit": {"limit": f"{__name__}:plan_limit"}}, env={})
        assert self._statuses(wall, 3) == [200, 200, 429]

    def test_header_keys_are_text_not_modules(self) -> None:
        # "header:X-API-Key" and "header:Authorization" look like import strings.
        from seawall import RequestView

        env = {"SEAWALL_CONCURRENCY__KEY": "header:X-API-Key"}
        for settings, environ, header in (
            ({"key": "header:X-API-Key"}, {}, "X-API-Key"),
            ({"key": "header:Authorization"}, {}, "Authorization"),
            ({}, env, "X-API-Key"),
        ):
            table = {"max_in_flight": 1, "per_key": 1, **settings}
            kw = load_config({"concurrency": table}, env=environ)
            scope = {"type": "http", "method": "GET", "path": "/", "client": ("1.2.3.4", 1)}
            scope["headers"] = [(header.lower().encode(), b"tenant-7")]
            view = RequestView.from_asgi(scope)
            assert kw["layers"][0]._key(view) == "h:tenant-7"

    def test_a_missing_name_in_an_existing_module_names_the_key(self) -> None:
        with pytest.raises(ConfigurationError, match=r"rate_limit\.limit: cannot import"):
            load_config({"rate_limit": {"limit": f"{__name__}:no_such_limit"}}, env={})


class TestInterface:
    def test_detection_and_override(self) -> None:
        async def asgi(scope, receive, send):
            pass

        assert Seawall(asgi, layers=[]).interface == "asgi"
        assert Seawall(app, layers=[]).interface == "wsgi"
        assert Seawall(app, layers=[], interface="asgi").interface == "asgi"
        with pytest.raises(ConfigurationError):
            Seawall(app, layers=[], interface="cgi")  # type: ignore[arg-type]


class TestAliases:
    def test_rate_limit_default_is_the_limit(self) -> None:
        from seawall import RateLimit

        wall = Seawall.from_config(app, {"rate_limit": {"default": "7/minute"}}, env={})
        (layer,) = [x for x in wall.layers if isinstance(x, RateLimit)]
        assert "7 per 1 minute" in repr(layer)

    def test_both_spellings_at_once_are_refused(self) -> None:
        with pytest.raises(ConfigurationError, match=r"rate_limit\.limit or rate_limit\.default"):
            Seawall.from_config(
                app, {"rate_limit": {"default": "7/minute", "limit": "8/minute"}}, env={}
            )


class TestSourcesMeet:
    """A setting given partly in one source and partly in another keeps both parts.

    Each failed before its fix: a shorthand in one source and a table in
    another lost the shorthand; the ``default`` alias in settings clashed
    with the ``LIMIT`` variable meant to override it; ``from_config``'s
    keyword overrides were neither merged nor checked; keys outside a
    ``[seawall]`` table were dropped without a word.
    """

    def test_a_shorthand_and_a_table_merge(self) -> None:
        env = {"SEAWALL_TIMEOUT__RULES": '{ "/slow" = 30 }'}
        for source in ({"timeout": 2}, {}):
            more = {} if source else {"SEAWALL_TIMEOUT": "2"}
            (layer,) = load_config(source, env={**env, **more})["layers"]
            assert layer.seconds == 2.0
            assert [(rule[0], rule[-1]) for rule in layer.rules] == [("/slow", 30.0)]
        (limit,) = load_config(
            {"rate_limit": "100/minute"}, env={"SEAWALL_RATE_LIMIT__STRATEGY": "moving-window"}
        )["layers"]
        assert limit.strategy == "moving-window"
        assert "100 per 1 minute" in repr(limit)

    def test_a_table_and_a_later_shorthand_merge(self) -> None:
        (layer,) = load_config({"timeout": {"rules": {"/slow": 30}}}, env={"SEAWALL_TIMEOUT": "2"})[
            "layers"
        ]
        assert layer.seconds == 2.0
        assert [(rule[0], rule[-1]) for rule in layer.rules] == [("/slow", 30.0)]
        assert load_config({"timing": {"slow": 0.5}}, env={"SEAWALL_TIMING": "false"}) == {
            "layers": []
        }

    def test_the_default_alias_is_overridden_by_the_limit_variable(self) -> None:
        (limit,) = load_config(
            {"rate_limit": {"default": "100/minute"}},
            env={"SEAWALL_RATE_LIMIT__LIMIT": "50/minute"},
        )["layers"]
        assert "50 per 1 minute" in repr(limit)
        with pytest.raises(ConfigurationError, match="not both"):
            load_config({"rate_limit": {"default": "1/second", "limit": "2/second"}}, env={})

    def test_from_config_overrides_are_settings(self) -> None:
        def app(environ: object, start_response: object) -> list[bytes]:  # pragma: no cover
            return []

        wall = Seawall.from_config(app, {"timing": True}, env={}, timing={"slow": 0.5})
        (timing,) = wall.layers
        assert isinstance(timing, Timing)
        assert timing.slow == 0.5
        with pytest.raises(ConfigurationError, match="trusted_hops"):
            Seawall.from_config(app, {}, env={}, trusted_hops="x")
        given = ErrorCapture()
        assert Seawall.from_config(app, {"timing": True}, env={}, layers=[given]).layers == (given,)

    def test_seawall_keys_outside_the_seawall_table_are_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "app.toml"
        path.write_text(
            'trusted_proxies = ["10.0.0.0/8"]\n[database]\nurl = "x"\n[seawall.timing]\nslow = 2\n'
        )
        with pytest.raises(ConfigurationError, match=r"trusted_proxies outside the \[seawall\]"):
            load_config(path, env={})
        # Another program's tables beside it are its own business.
        path.write_text('[database]\nurl = "x"\n[seawall.timing]\nslow = 2\n')
        (timing,) = load_config(path, env={})["layers"]
        assert timing.slow == 2
