"""Observability internals: resource sampling, health checks, the metrics registry.

Nothing here runs on the request path except reads of values the background
sampler already computed; the I/O of health checks runs inside effects
(``run()``/``arun()``) the drivers execute.
"""
