"""The door: checking admission tickets in, undoing a check-in, and voiding a ticket.

A check-in is one conditional UPDATE (``checked_in_at IS NULL AND void = 0``) whose affected-row
count decides: two devices scanning the same ticket at the same moment cannot both be told
"valid", and a ticket refunded a moment earlier (its order leaving ``paid`` voids it) is not let
in. Reads before it only tell which answer to give when it does not apply.
"""
import enum
import logging
import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, false, func, select, update
from sqlalchemy.orm import joinedload

from ..extensions import db
from ..models import Admission, TicketOrder
from ..models.base import utcnow
from .audit import record
from .transactions import transaction

logger = logging.getLogger(__name__)

# A scanned QR code may hold a ticket page's URL rather than the bare code: the code is its last part.
CODE_IN_TEXT = re.compile(r"([A-Za-z0-9_-]{4,64})/?$")
LONGEST_SCAN = 512


class ScanResult(str, enum.Enum):
    """The door's answer, also the check-in API's ``result``."""
    OK = "ok"
    ALREADY_CHECKED_IN = "already_checked_in"
    VOID = "void"
    WRONG_EVENT = "wrong_event"
    UNKNOWN = "unknown"

    @property
    def http_status(self):
        return {ScanResult.OK: 200, ScanResult.UNKNOWN: 404}.get(self, 409)


@dataclass(frozen=True)
class Scan:
    """What the door is told about one code."""
    result: ScanResult
    code: str
    ticket_type: str | None = None
    order_id: int | None = None
    checked_in_at: datetime | None = None
    checked_in_by: str | None = None
    other_event: str | None = None
    attendee_name: str | None = None

    def as_json(self):
        return {"result": self.result.value, "code": self.code, "ticket_type": self.ticket_type,
                "order_id": self.order_id, "attendee_name": self.attendee_name,
                "checked_in_at": self.checked_in_at.isoformat() + "Z" if self.checked_in_at else None,
                "checked_in_by": self.checked_in_by, "other_event": self.other_event}


def normalize_code(text):
    """The admission code in what was typed or scanned (a bare code or a ticket URL), or ""."""
    text = (text or "").strip()
    if len(text) > LONGEST_SCAN:
        return ""
    match = CODE_IN_TEXT.search(text)
    return match.group(1).upper() if match else ""


def _admission(code):
    return db.session.execute(
        select(Admission).where(Admission.code == code)
        .options(joinedload(Admission.order).joinedload(TicketOrder.ticket), joinedload(Admission.order)
                 .joinedload(TicketOrder.event), joinedload(Admission.checked_in_by_user))
        .execution_options(populate_existing=True)).unique().scalar_one_or_none()


def check_in(event_id, text, actor):
    """Check the ticket in ``text`` in at event ``event_id``; returns the :class:`Scan`."""
    code = normalize_code(text)
    with transaction():
        admission = _admission(code) if code else None
        if admission is None:
            return Scan(ScanResult.UNKNOWN, code)
        order = admission.order
        if order.event_id != event_id:
            return Scan(ScanResult.WRONG_EVENT, code, admission.ticket_name, order.id, other_event=order.event.title)
        now = utcnow().replace(microsecond=0)
        admitted = db.session.execute(
            update(Admission)
            .where(Admission.id == admission.id, Admission.checked_in_at.is_(None), Admission.void == false())
            .values(checked_in_at=now, checked_in_by=actor.user_id)
            .execution_options(synchronize_session=False)).rowcount == 1
        if admitted:
            record(actor, "checkin", "order", order.id, note=f"ticket {code} checked in")
            scan = Scan(ScanResult.OK, code, admission.ticket_name, order.id, now, actor.label,
                        attendee_name=admission.attendee_name)
    if admitted:
        logger.info("event %s: ticket %s (order %s) checked in by %s", event_id, code, order.id, actor.label)
        return scan
    return _why_not(code, event_id)


def _why_not(code, event_id):
    """The answer for a ticket the UPDATE did not admit, read after it: void, or in already (when, by whom)."""
    with transaction():
        admission = _admission(code)
        order = admission.order
        if admission.void:
            return Scan(ScanResult.VOID, code, admission.ticket_name, order.id)
        by = admission.checked_in_by_user.email if admission.checked_in_by_user else None
        logger.info("event %s: ticket %s was already checked in at %s", event_id, code, admission.checked_in_at)
        return Scan(ScanResult.ALREADY_CHECKED_IN, code, admission.ticket_name, order.id, admission.checked_in_at, by)


def undo_check_in(event_id, text, actor):
    """Undo a ticket's check-in at ``event_id`` (audited); True when it was checked in and now is not."""
    code = normalize_code(text)
    with transaction():
        admission = _admission(code) if code else None
        if admission is None or admission.order.event_id != event_id:
            return False
        undone = db.session.execute(
            update(Admission).where(Admission.id == admission.id, Admission.checked_in_at.isnot(None))
            .values(checked_in_at=None, checked_in_by=None).execution_options(synchronize_session=False)).rowcount
        if undone:
            record(actor, "checkin.undo", "order", admission.order_id,
                   before={"checked_in_at": admission.checked_in_at.isoformat(timespec="seconds")},
                   after={"checked_in_at": None}, note=f"ticket {code} check-in undone")
    if undone:
        logger.info("event %s: check-in of ticket %s undone by %s", event_id, code, actor.label)
    return bool(undone)


def void_admission(order_id, admission_id, actor, reason=""):
    """Void one ticket of an order (it answers "void" at the door from now on); True if it was valid.

    The seat stays sold: the order and its payment are unchanged (refund separately).
    """
    with transaction():
        voided = db.session.execute(
            update(Admission).where(Admission.id == admission_id, Admission.order_id == order_id,
                                    Admission.void == false())
            .values(void=True).execution_options(synchronize_session=False)).rowcount
        if voided:
            code = db.session.execute(select(Admission.code).where(Admission.id == admission_id)).scalar_one()
            record(actor, "admission.void", "order", order_id, before={"void": False}, after={"void": True},
                   note=f"ticket {code} voided" + (f": {reason}" if reason else ""))
    return bool(voided)


def checkin_counts(event_id):
    """``(checked in, expected)``: valid tickets of the event at the door, and how many of them are in."""
    with transaction():
        expected, checked_in = db.session.execute(
            select(func.count(Admission.id), func.count(Admission.checked_in_at))
            .join(TicketOrder, and_(TicketOrder.id == Admission.order_id, TicketOrder.event_id == event_id))
            .where(Admission.void == false())).one()
    return checked_in, expected
