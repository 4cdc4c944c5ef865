"""The WSGI entry point: ``gunicorn wsgi:app`` and ``flask --app wsgi …``."""
import sys

from shop import create_app
from shop.config import ConfigError
from shop.ops.background import start_for_dev_server

# gunicorn's "worker failed to boot" status: the master stops instead of forking new workers that
# would fail the same way forever (any other status, and it keeps respawning them).
WORKER_BOOT_ERROR = 3

try:
    app = create_app()
except ConfigError as exc:
    # One clear line instead of a traceback: the operator fixes the setting and starts again.
    print(f"shop: configuration error: {exc}", file=sys.stderr)
    sys.exit(WORKER_BOOT_ERROR)

# Under `flask run` this process serves the app, so it runs the SQS poller, the sweeper and the
# mail sender too; under gunicorn, gunicorn.conf.py starts them in each worker, and every other
# command starts none (see start_for_dev_server).
start_for_dev_server(app)
