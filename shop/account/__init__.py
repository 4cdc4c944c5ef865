"""Accounts: register, log in and out, the buyer's profile and order pages."""
from flask import Blueprint

bp = Blueprint("account", __name__)

from . import routes  # noqa: E402,F401  (registers the routes on bp)
