"""Operations: the health check route, `doctor`, `aws-setup`, and the background threads (poller, sweeper)."""
from flask import Blueprint

bp = Blueprint("ops", __name__)

from . import routes  # noqa: E402,F401  (registers the routes on bp)
