"""Operations: the health check."""
from flask import Blueprint

bp = Blueprint("ops", __name__)

from . import routes  # noqa: F401
