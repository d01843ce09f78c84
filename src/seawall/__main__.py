"""``python -m seawall``: the ``seawall`` command, where the script is not on ``PATH``."""

from seawall.cli import main

raise SystemExit(main())
