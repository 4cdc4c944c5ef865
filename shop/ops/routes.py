import hmac
import logging

from flask import current_app, jsonify, request
from sqlalchemy.exc import SQLAlchemyError

from . import bp
from .health import database_answers, health_report

logger = logging.getLogger(__name__)


def _detail_allowed():
    """The detailed report is for whoever holds SHOP_HEALTH_TOKEN (``Authorization: Bearer <token>``)."""
    token = current_app.config["SHOP_HEALTH_TOKEN"]
    scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(sent.strip().encode(), token.encode())


@bp.get("/healthz")
def healthz():
    """200 ``{"status": "ok"}`` when the database answers, else 503 ``{"status": "unavailable"}``.

    With the health token: today's report (payments, orders pending past their hold, last deliveries).
    Never an error's text: it would name the database's host and user.
    """
    detailed = _detail_allowed()
    try:
        report = health_report() if detailed else database_answers()
    except SQLAlchemyError as exc:
        logger.warning("health check: database not answering: %s", getattr(exc, "orig", None) or exc)
        return jsonify({"status": "unavailable", "database": "not answering"} if detailed
                       else {"status": "unavailable"}), 503
    return jsonify(report), 200
