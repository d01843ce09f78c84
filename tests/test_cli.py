from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def test_demo_runs_and_reports_every_layer() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "seawall.cli", "demo"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "what seawall did" in out.stdout
    assert "internal-error" in out.stdout  # the exception became a problem response
    assert "What each layer saw" in out.stdout
    assert "1 slow" in out.stdout
    # Every other layer shows its work too.
    for seen in (
        "quota-exceeded",
        "body-too-large",
        "malformed-json",
        "abnormal-usage-detected",
        "temporary-reduced-capacity",
        "answered by Health",
        "answered by Metrics",
    ):
        assert seen in out.stdout, seen
    # count_when: good logins pass uncounted; the failures' refusals end in a 10-minute ban.
    assert len(re.findall(r"logins that succeed are not counted +200 ", out.stdout)) == 4
    assert re.search(r"banned now: even the right password +429 .*retry after 600 s", out.stdout)


def test_check_prints_the_stack(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text("[seawall.error_capture]\n[seawall.timing]\nslow = 1.0\n")
    out = subprocess.run(
        [sys.executable, "-m", "seawall.cli", "check", str(f)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "1. timing" in lines[1]
    assert "2. errors" in lines[2]


def test_check_names_a_bad_key(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text("[seawall.timing]\nslw = 1.0\n")
    out = subprocess.run(
        [sys.executable, "-m", "seawall.cli", "check", str(f)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "timing.slw" in out.stderr


def test_check_and_demo_say_what_went_wrong_without_a_traceback(
    tmp_path: Path, capsys: object
) -> None:
    """A directory, a bad port, a taken port: one line and exit code 1 (2 for usage)."""
    import socket

    import pytest

    from seawall.cli import main

    assert main(["check", str(tmp_path)]) == 1
    binary = tmp_path / "latin1.toml"
    binary.write_bytes(b"[seawall]\ntiming = \xff\n")
    assert main(["check", str(binary)]) == 1
    with pytest.raises(SystemExit) as usage:
        main(["demo", "--port", "99999"])
    assert usage.value.code == 2
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert "Traceback" not in err
    assert "cannot read" in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # In a process of its own: the demo sets up logging for its output.
        demo = subprocess.run(
            [sys.executable, "-m", "seawall.cli", "demo", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert demo.returncode == 1
    assert "cannot serve" in demo.stderr
    assert "Traceback" not in demo.stderr


def test_python_dash_m_seawall_is_the_command_and_says_its_version() -> None:
    import seawall

    out = subprocess.run(
        [sys.executable, "-m", "seawall", "--version"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"seawall {seawall.__version__}"
    usage = subprocess.run([sys.executable, "-m", "seawall"], capture_output=True, text=True)
    assert usage.returncode == 2
    assert "demo" in usage.stderr
    assert "check" in usage.stderr
