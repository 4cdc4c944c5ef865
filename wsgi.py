"""The WSGI entry point: ``gunicorn wsgi:app`` and ``flask --app wsgi …``."""
import sys

from shop import create_app
from shop.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    # One clear line instead of a traceback: the operator fixes the setting and starts again.
    sys.exit(f"shop: configuration error: {exc}")
