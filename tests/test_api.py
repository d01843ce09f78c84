"""The public API: every name in __all__ resolves and is documented."""

from __future__ import annotations

import importlib
import inspect

import pytest

import seawall


@pytest.mark.parametrize("name", sorted(seawall.__all__))
def test_public_name_resolves_and_has_a_docstring(name: str) -> None:
    try:
        obj = getattr(seawall, name)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"seawall.{name} does not resolve: {exc}")
    if name.startswith("__") or name == "CONTINUE":
        return
    assert inspect.getdoc(obj), f"seawall.{name} has no docstring"


def test_import_seawall_needs_no_framework() -> None:
    import subprocess
    import sys

    code = (
        "import sys, seawall; seawall.Seawall; "
        "frameworks = ('flask', 'django', 'starlette', 'fastapi', 'redis'); "
        "bad = [m for m in frameworks if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_typing_module_exports() -> None:
    mod = importlib.import_module("seawall.typing")
    for name in mod.__all__:
        assert hasattr(mod, name)


def test_the_version_is_the_installed_distributions() -> None:
    """``seawall.__version__`` is written by hand: it must follow pyproject's."""
    from importlib.metadata import version

    assert seawall.__version__ == version("seawall")
