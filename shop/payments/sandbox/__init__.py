"""Sandbox payments: the embedded default's stand-in for a hosted payment page.

It runs only when chosen (``SHOP_PAYMENTS=sandbox``) or in the embedded default (SQLite and
no Stripe key). Its table and its pay page live here with it; its "Pay" button asks
fulfilment to re-read the checkout, exactly as an event from a real provider does.
"""
from flask import Blueprint

from .provider import SandboxProvider

bp = Blueprint("sandbox", __name__, url_prefix="/sandbox")

from . import routes  # noqa: E402,F401  (registers the routes on bp)

__all__ = ["SandboxProvider", "bp"]
