"""The sans-IO core of seawall.

Invariant (keep it true, every layer relies on it): nothing in ``_core/`` or
``layers/`` awaits, sleeps, does I/O or knows ASGI from WSGI; time is injected.
A layer that needs I/O yields an *effect* and receives its result; the
drivers (``_run.py``, ``asgi.py``, ``wsgi.py``) run it.
"""
