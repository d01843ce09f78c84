"""The ``seawall`` command.

- ``seawall demo``: serve a small app behind every layer on 127.0.0.1, drive a
  scripted burst of traffic at it, print what each layer did, exit 0.
- ``seawall demo --serve``: the same app, kept up for a person to try.
- ``seawall check CONFIG``: load a settings file (and ``SEAWALL_*`` variables),
  print the resulting stack in order, exit 1 with the error if invalid.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        msg = f"{port} is not a port (0-65535)"
        raise argparse.ArgumentTypeError(msg)
    return port


def _check(path: str) -> int:
    from seawall._app import Seawall
    from seawall.exceptions import ConfigurationError

    def app(environ: object, start_response: object) -> list[bytes]:  # pragma: no cover
        return []

    try:
        wall = Seawall.from_config(app, path, interface="wsgi")
    except ConfigurationError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 1
    except (OSError, UnicodeDecodeError) as exc:
        # A directory, an unreadable or non-UTF-8 file: say so, not a traceback.
        print(f"invalid: cannot read {path!r} ({exc})", file=sys.stderr)
        return 1
    print(f"{path}: ok. Layers, outermost first:")
    for position, name, text in wall.describe():
        print(f"  {position + 1}. {name:<14} {text}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``seawall`` command."""
    parser = argparse.ArgumentParser(prog="seawall", description=__doc__.split("\n\n")[0])
    from seawall import __version__

    parser.add_argument("--version", action="version", version=f"seawall {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the scripted demo (in-memory, no Redis needed)")
    demo.add_argument("--serve", action="store_true", help="keep the demo app up")
    demo.add_argument("--port", type=_port, default=0, help="port (default: a free one)")
    demo.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    check = sub.add_parser("check", help="validate a settings file and print the stack")
    check.add_argument("config", help="a TOML file (a [seawall] table or pyproject.toml)")
    args = parser.parse_args(argv)
    if args.command == "check":
        return _check(args.config)
    from seawall._demo import run_demo

    try:
        return run_demo(serve=args.serve, host=args.host, port=args.port)
    except OSError as exc:
        # The port is taken, the host is not an address of this machine...
        print(f"seawall demo: cannot serve on {args.host}:{args.port} ({exc})", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
