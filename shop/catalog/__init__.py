"""Browsing: the list of upcoming events and each event's page."""
from flask import Blueprint

bp = Blueprint("catalog", __name__)

from . import routes  # noqa: E402,F401  (registers the routes on bp)
