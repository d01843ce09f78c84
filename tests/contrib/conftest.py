"""Fixtures for the framework adapters: Django settings, a rejecting test layer."""

from __future__ import annotations

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="seawall-tests",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF="tests.contrib.django_views",
        MIDDLEWARE=["seawall.django.SeawallMiddleware"],
        INSTALLED_APPS=[],
        USE_TZ=True,
        SEAWALL={"timing": True, "error_capture": True},
        LOGGING_CONFIG=None,
    )
    django.setup()
