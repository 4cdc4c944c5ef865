"""What ``/healthz`` reports: the database answers, and whether payments are arriving."""
from sqlalchemy import func, select, text

from ..extensions import db
from ..models import DeliveryPath, TicketOrder
from ..models.base import utcnow
from ..models.orders import OrderStatus
from ..payments import gateway


def health_report():
    """A small JSON-able dict; raises the database error when the database does not answer."""
    db.session.execute(text("SELECT 1"))
    stuck = db.session.execute(
        select(func.count()).select_from(TicketOrder).where(
            TicketOrder.status == OrderStatus.PENDING.value, TicketOrder.hold_expires_at < utcnow()))
    paths = db.session.execute(select(DeliveryPath.name, DeliveryPath.last_delivered_at)).all()
    db.session.rollback()
    return {
        "status": "ok",
        "database": "ok",
        "payments": gateway().name,
        # Pending past their hold means no event settled them: a delivery path may be broken.
        "pending_past_hold": stuck.scalar_one(),
        "last_delivery": {name: at.isoformat() + "Z" for name, at in paths},
    }
