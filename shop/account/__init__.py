"""Accounts: register, log in and out, the buyer's profile and order pages."""
from flask import Blueprint

bp = Blueprint("account", __name__)

from . import routes  # noqa: F401
