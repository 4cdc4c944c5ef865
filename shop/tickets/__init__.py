"""Tickets in their holders' hands: a page per ticket, its calendar file, and the guest's order look-up."""
from flask import Blueprint

bp = Blueprint("tickets", __name__)

from . import routes  # noqa: E402,F401  (registers the routes on bp)
