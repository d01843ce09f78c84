"""The slot pools behind :class:`~seawall.layers.ConcurrencyLimit`.

- :mod:`seawall._concurrency.local`: in-process slots, with a FIFO wait queue.
- :mod:`seawall._concurrency.shared`: slots shared by every worker through Redis.
"""

from __future__ import annotations
