"""What ``/healthz`` reports: the database answers, and whether payments are arriving."""
from sqlalchemy import select, text

from ..extensions import db
from ..models import DeliveryPath
from ..payments import gateway
from ..services.holds import pending_past_hold
from ..services.transactions import transaction


def database_answers():
    """``{"status": "ok"}`` once the database answered a trivial query; raises the database error otherwise."""
    with transaction():
        db.session.execute(text("SELECT 1"))
    return {"status": "ok"}


def health_report():
    """A small JSON-able dict; raises the database error when the database does not answer."""
    with transaction():
        db.session.execute(text("SELECT 1"))
        stuck, _ = pending_past_hold()
        paths = db.session.execute(select(DeliveryPath.name, DeliveryPath.last_delivered_at)).all()
    return {
        "status": "ok",
        "database": "ok",
        "payments": gateway().name,
        # Pending past their hold means no event settled them: a delivery path may be broken.
        "pending_past_hold": stuck,
        "last_delivery": {name: at.isoformat() + "Z" for name, at in paths},
    }
