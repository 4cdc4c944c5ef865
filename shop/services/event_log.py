"""The event log: every provider event stored once by its id, then acted on (dj-stripe's ``Event.process``).

The primary key decides duplicates, not a look-up first: two deliveries racing both try
the insert and exactly one wins. A row without ``processed_at`` is an earlier attempt that
failed, so the event is processed again (the state machine makes that safe). The event is
a trigger to re-read the checkout from the provider, never the truth itself.
"""
import json
import logging

from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from ..extensions import db
from ..models import Outcome, OutcomeKind, OutcomeReason, PaymentEvent, TicketOrder
from ..models.base import utcnow
from ..payments import PaymentNotFound, PaymentUnavailable, gateway
from .fulfilment import apply_payment_state, note_delivery
from .transactions import transaction

logger = logging.getLogger(__name__)

DUPLICATE = Outcome(OutcomeKind.DUPLICATE, OutcomeReason.DUPLICATE)


class RetryableError(Exception):
    """Processing failed for a reason a later delivery can fix (database or provider unreachable).

    The webhook answers 503 so the provider retries; the poller leaves the message on the queue.
    """


def receive_event(event, path):
    """Record a provider event once, then bring its order in line with the provider; returns the Outcome.

    A duplicate of an event already processed changes nothing. An event that is not ours,
    has no order, or is of a type we do not act on is recorded with the reason and
    acknowledged. Raises :class:`RetryableError` when a later delivery could succeed.
    """
    try:
        note_delivery(path)
        if not _record(event, path):
            logger.info("event %s %s via %s: duplicate, already processed", event.id, event.type, path)
            return DUPLICATE
        outcome, order_id = _act_on(event, path)
        _store_outcome(event.id, path, outcome, order_id)
    except (DBAPIError, PaymentUnavailable) as exc:
        db.session.rollback()  # whatever unit failed, the session must be usable for the error note
        _note_error(event.id, exc)
        logger.warning("event %s %s via %s: will be retried: %s", event.id, event.type, path, exc)
        raise RetryableError(str(exc)) from exc
    logger.info("event %s %s via %s: order %s %s", event.id, event.type, path, order_id, outcome)
    return outcome


def _record(event, path):
    """Insert the event row; False when it exists and was processed (a duplicate delivery)."""
    try:
        with transaction():
            db.session.execute(insert(PaymentEvent).values(
                id=event.id, type=event.type, delivered_by=path, received_at=utcnow(),
                payload=json.dumps(event.payload)))
        return True
    except IntegrityError:
        pass
    with transaction():
        processed_at = db.session.execute(
            select(PaymentEvent.processed_at).where(PaymentEvent.id == event.id)).scalar_one_or_none()
    return processed_at is None


def _act_on(event, path):
    """Re-read what the event names and apply it; returns ``(Outcome, order_id)``."""
    if event.ignored:
        handled = event.type in gateway().handled_event_types
        reason = OutcomeReason.NO_REFERENCE if handled else OutcomeReason.NOT_HANDLED
        return Outcome(OutcomeKind.IGNORED, reason, detail=event.ignored), None
    checkout_ref = event.checkout_ref or _checkout_of_payment(event.payment_ref)
    if checkout_ref is None:
        return Outcome(OutcomeKind.IGNORED, OutcomeReason.NOT_OURS, detail="a payment of no order of ours"), None
    try:
        state = gateway().read_checkout(checkout_ref)
    except PaymentNotFound:
        # Only the provider's "no such object" means not ours; a refused key or an outage raises.
        return Outcome(OutcomeKind.IGNORED, OutcomeReason.NOT_OURS, detail="the provider has no such checkout"), None
    return apply_payment_state(state, path, cause=f"{event.type} {event.id} via {path}")


def _checkout_of_payment(payment_ref):
    """The checkout behind a payment: through the order that holds it, else the order id the payment carries."""
    with transaction():
        checkout_ref = db.session.execute(
            select(TicketOrder.checkout_ref).where(TicketOrder.payment_ref == payment_ref)).scalar()
    if checkout_ref is not None:
        return checkout_ref
    try:
        order_id = gateway().order_id_for_payment(payment_ref)
    except PaymentNotFound:
        return None
    if order_id is None:
        return None
    with transaction():
        return db.session.execute(select(TicketOrder.checkout_ref).where(TicketOrder.id == order_id)).scalar()


def _store_outcome(event_id, path, outcome, order_id):
    """Write the outcome once: the first delivery to finish, unless a later one is the one that applied it.

    Two deliveries of one event may both process it (the first failed half-way, or they
    raced); the one whose processing changed the order is the one the row keeps.
    """
    stmt = update(PaymentEvent).where(PaymentEvent.id == event_id)
    if outcome.kind is OutcomeKind.APPLIED:
        stmt = stmt.where(or_(PaymentEvent.processed_at.is_(None), PaymentEvent.outcome_kind.is_(None),
                              PaymentEvent.outcome_kind != OutcomeKind.APPLIED.value))
    else:
        stmt = stmt.where(PaymentEvent.processed_at.is_(None))
    with transaction():
        db.session.execute(stmt.values(
            processed_at=utcnow(), processed_by=path, order_id=order_id, error=None, outcome=outcome.label[:64],
            outcome_kind=outcome.kind.value, outcome_reason=outcome.reason.value,
            outcome_status=outcome.status.value if outcome.status else None))


def _note_error(event_id, exc):
    try:
        with transaction():
            db.session.execute(update(PaymentEvent).where(PaymentEvent.id == event_id).values(error=str(exc)[:2000]))
    except DBAPIError:
        pass  # the database itself is what failed; the log line has it
