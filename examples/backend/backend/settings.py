"""The example backend: a Django service the shop calls to price carts and take payments."""

SECRET_KEY = "example-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []  # cxtrace needs no middleware entry
ROOT_URLCONF = "backend.urls"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
LOGGING_CONFIG = None
