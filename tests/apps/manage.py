"""``manage.py`` for the test Django project (tests/django_project).

cxtrace run -- python tests/apps/manage.py runserver --noreload 127.0.0.1:8000
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# tests/, where the django_project package lives.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
