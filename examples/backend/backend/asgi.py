"""ASGI entry point: ``uvicorn backend.asgi:application`` from examples/backend."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

import cxtrace

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings")
application = get_asgi_application()
# After or before: Django's handlers are patched. The name comes from OTEL_SERVICE_NAME
# when set; under `cxtrace run` this interpreter is instrumented already.
cxtrace.instrument(service_name=os.environ.get("OTEL_SERVICE_NAME") or "backend")
