"""Developer tasks: `nox -s tests lint mypy docs bench examples`."""

from __future__ import annotations

import re
from pathlib import Path

import nox

nox.options.error_on_external_run = True
nox.options.default_venv_backend = "venv"

ROOT = Path(__file__).parent
PYPROJECT = (ROOT / "pyproject.toml").read_text()
# The supported Pythons, read from one place: the pyproject classifiers.
PYTHONS = re.findall(r'"Programming Language :: Python :: (3\.\d+)"', PYPROJECT)


@nox.session(python=PYTHONS)
@nox.parametrize("extras", ["test", "redis,test", "flask,test", "django,test", "fastapi,test", "all,test"])
def tests(session: nox.Session, extras: str) -> None:
    """Run the suite against one set of extras (pass a wheel path to test a build)."""
    wheel = next((a for a in session.posargs if a.endswith(".whl")), None)
    target = f"{wheel}[{extras}]" if wheel else f".[{extras}]"
    session.install(target if wheel else "-e", *([] if wheel else [target]))
    args = [a for a in session.posargs if not a.endswith(".whl")]
    session.run("python", "-m", "pytest", *args)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff format --check and ruff check, on the package and on its tests, benches and examples."""
    session.install("ruff")
    paths = ("src", "tests", "bench", "examples")
    session.run("ruff", "format", "--check", *paths)
    session.run("ruff", "check", *paths)


@nox.session
def mypy(session: nox.Session) -> None:
    """mypy --strict on src/."""
    session.install("-e", ".[all]", "mypy", "types-psutil")
    session.run("mypy", "--strict", "src/seawall")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation with MkDocs; warnings are errors."""
    session.install("mkdocs")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")


@nox.session
def bench(session: nox.Session) -> None:
    """Run every benchmark in bench/ (prints medians and ratios)."""
    session.install("-e", ".[bench,test]")
    for script in sorted((ROOT / "bench").glob("bench_*.py")):
        session.run("python", str(script), *session.posargs)


@nox.session
def examples(session: nox.Session) -> None:
    """Smoke-test every example under a real server (uvicorn, gunicorn)."""
    session.install("-e", ".[all,test]")
    session.run("python", "-m", "pytest", "-m", "server", "tests/contrib", *session.posargs)
