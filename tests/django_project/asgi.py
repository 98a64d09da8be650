"""ASGI entry point of the test project, for servers started as their own process.

cxtrace run -- uvicorn --app-dir tests django_project.asgi:application
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_project.settings")
application = get_asgi_application()
