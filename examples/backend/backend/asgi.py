"""ASGI entry point: ``uvicorn backend.asgi:application`` from examples/backend."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

import cxtrace

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
application = get_asgi_application()
cxtrace.instrument(service_name="backend")  # after or before: Django's handlers are patched
