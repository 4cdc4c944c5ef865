"""Error answers: an HTML page for browsers, ``{"error": "…"}`` for JSON clients, the webhook and ``/healthz``.

Every page extends ``errors/_layout.html``, which builds no URL, reads no user and no CSRF token:
an error page must render when the Host header was refused (no URL can be built from it) and
when the database is down (the current user cannot be loaded). A database outage is a 503
("try again in a moment"), never a bare 500.
"""
import logging

import pymysql
import sqlalchemy.exc
from flask import jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, SecurityError

from .extensions import db
from .services.accounts import HashingBusy

logger = logging.getLogger(__name__)

JSON_PATHS = ("/webhooks/", "/healthz")
RETRY_AFTER_SECONDS = "5"

# Connection lost, refused or timed out, lock wait timeout, pool exhausted: a later attempt can succeed.
DATABASE_OUTAGES = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError,
                    pymysql.err.OperationalError, pymysql.err.InterfaceError)

MESSAGES = {
    400: "We could not use that request. Please go back and try again.",
    401: "Please log in first.",
    403: "You may not see this page.",
    404: "There is nothing here.",
    405: "This page does not take that kind of request.",
    413: "That request is too large.",
    429: "Too many attempts in a short time. Please wait a moment and try again.",
    500: "Something went wrong on our side. Please try again; if it keeps happening, tell us.",
    503: "The shop cannot answer just now. Please try again in a moment.",
}
TEMPLATES = {status: f"errors/{status}.html" for status in MESSAGES}


def wants_json():
    """JSON for JSON bodies, clients that prefer it, and the machine endpoints (webhooks, health check)."""
    if request.is_json or request.path.startswith(JSON_PATHS):
        return True
    return request.accept_mimetypes.best_match(("text/html", "application/json")) == "application/json"


def error_response(status, message=None, headers=None):
    """The answer for ``status``: its page, or ``{"error": message}``; ``message`` defaults to the status's own."""
    message = message or MESSAGES.get(status) or "That did not work."
    if wants_json():
        response = jsonify(error=message)
    else:
        response = render_template(TEMPLATES.get(status, "errors/error.html"), status=status, message=message)
    return response, status, headers or {}


def _http_error(error):
    if error.code is None or error.code < 400 or error.response is not None:
        return error  # not an error, or one that brings its own response (abort(response), a limit's on_breach)
    # Keep what the exception says about what to do next (Allow on a 405, Retry-After on a 429 or 503).
    headers = {name: value for name, value in error.get_headers() if name in ("Allow", "Retry-After")}
    return error_response(error.code, _public_message(error), headers)


def _public_message(error):
    """What an abort(…, "description") says, unless werkzeug's generic text (ours reads better) or the refused Host."""
    if isinstance(error, SecurityError):
        return "This site is not served under that name."  # never echo the forged Host back
    generic = type(error).description
    if error.description and error.description != generic and error.code != 429:
        return error.description
    return None


def _csrf_failed(error):
    return error_response(400, "Your form expired or was sent from elsewhere. Please reload the page and try again.")


def _database_unavailable(error):
    # The reason goes to the log only: a database error names hosts and users.
    logger.warning("database unavailable during %s %s: %s", request.method, request.path,
                   getattr(error, "orig", None) or error)
    try:
        db.session.rollback()
    except Exception:  # the connection is gone; dropping the session below is all that is left
        logger.debug("rollback after a database outage failed", exc_info=True)
    db.session.remove()
    return error_response(503, "The shop cannot reach its database just now. Please try again in a moment.",
                          {"Retry-After": RETRY_AFTER_SECONDS})


def _hashing_busy(error):
    logger.warning("password hashing busy: %s %s refused with 503", request.method, request.path)
    return error_response(503, "The shop is busy just now. Please try again in a moment.",
                          {"Retry-After": RETRY_AFTER_SECONDS})


def _internal_error(error):
    original = getattr(error, "original_exception", None)
    if isinstance(original, DATABASE_OUTAGES):
        return _database_unavailable(original)
    return error_response(500)


def init_app(app):
    """Register the handlers (microblog's ``app/errors/handlers.py`` habit)."""
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(CSRFError, _csrf_failed)
    app.register_error_handler(500, _internal_error)
    app.register_error_handler(HashingBusy, _hashing_busy)
    for outage in DATABASE_OUTAGES:
        app.register_error_handler(outage, _database_unavailable)
