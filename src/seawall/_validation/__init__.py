"""Internals of the :class:`~seawall.Validation` layer.

- :mod:`.routes`: route rules (``"POST /users"``, ``"/api/*"``) and their precedence.
- :mod:`.policy`: the effective limits of a request (global settings plus every
  matching rule), composed once per route and cached.
- :mod:`.jsonbody`: parsing a JSON body under depth, key, array and string limits.
- :mod:`.schema`: JSON Schema, pydantic and callable validators behind one interface.
- :mod:`.fields`: dotted field paths (``"author.name"``, ``"tags.*"``) for
  sanitization and exclusions.
"""
