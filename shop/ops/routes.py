from flask import jsonify
from sqlalchemy.exc import DBAPIError

from . import bp
from .health import health_report


@bp.get("/healthz")
def healthz():
    try:
        report = health_report()
    except DBAPIError as exc:
        return jsonify(status="unavailable", database=f"not answering: {exc.orig or exc}"[:300]), 503
    return jsonify(report), 200
