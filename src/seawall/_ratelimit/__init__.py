"""Private machinery of :class:`~seawall.RateLimit`: rules, the memory store, Lua scripts.

Nothing here is public API; :mod:`seawall.storage` and
:mod:`seawall.layers.ratelimit` re-export what users may touch.
"""
