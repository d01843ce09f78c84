"""Settings of the example Django project protected by seawall."""

from __future__ import annotations

DEBUG = False
SECRET_KEY = "example-only-not-secret"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"
INSTALLED_APPS: list[str] = []
USE_TZ = True

MIDDLEWARE = [
    # First, so its timing covers the other middleware and it sees every request.
    "seawall.django.SeawallMiddleware",
    "django.middleware.common.CommonMiddleware",
]

# The same schema as seawall.config.load_config (and SEAWALL_* variables override it).
SEAWALL = {
    "timing": {"slow": 0.5},
    "error_capture": True,
    "health": {"resources": False},
    "metrics": True,
    "load_shedding": {"cpu_threshold": None, "memory_threshold": 99.0},
    "concurrency": {"max_in_flight": 64},
    "rate_limit": {"limit": "100/minute"},
    "validation": {"max_body": "1 MB"},
    "circuit_breaker": {"per": "route", "failure_rate_threshold": 0.5},
    "timeout": {"seconds": 10.0},
}
