"""Buying: the checkout form's target, and the pages Stripe sends the buyer back to."""
from flask import Blueprint

bp = Blueprint("checkout", __name__)

from . import routes  # noqa: E402,F401  (registers the routes on bp)
