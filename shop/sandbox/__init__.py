"""The sandbox's hosted-checkout page, registered only when no Stripe key is set."""
from flask import Blueprint

bp = Blueprint("sandbox", __name__, url_prefix="/sandbox")

from . import routes  # noqa: E402,F401
