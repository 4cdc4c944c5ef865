"""The organizer's back office and the door, under ``/console``: events, sales, orders, exports, check-in.

Routes parse input, call one service (``services/events``, ``console``, ``refunds``, ``checkin``,
``exports``) and render; every rule lives in the services, shared with the CLI.
"""
from flask import Blueprint

bp = Blueprint("console", __name__, url_prefix="/console")

from . import routes  # noqa: E402,F401  (registers the routes on bp)
