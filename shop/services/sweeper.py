"""The sweeper: settles the orders no news has settled, by asking the provider.

A payment whose event never reached us is found here, paid, and logged loudly: a
delivery path is broken. A hold that ended is released only once the provider confirms
its checkout can no longer be paid (closed now, or read closed): the database's word
alone never frees seats a buyer may just have paid for.
"""
import logging
from datetime import timedelta

from sqlalchemy import or_, select, update

from ..extensions import db
from ..models import Outcome, OutcomeKind, OutcomeReason, TicketOrder
from ..models.base import utcnow
from ..models.orders import OrderStatus
from ..payments import PaymentUnavailable, gateway
from .fulfilment import reconcile_order
from .holds import hold_ended, hold_has_ended
from .orders import change_status, lock_order
from .transactions import transaction

logger = logging.getLogger(__name__)

UNSETTLED = (OrderStatus.PENDING.value, OrderStatus.PROCESSING.value)


def sweep(path="sweeper", limit=50, stale_after=timedelta(minutes=5), recheck_every=timedelta(minutes=10)):
    """Settle up to ``limit`` unsettled orders; returns ``{outcome label: count}``.

    Candidates are pending or processing orders whose hold ended or that are older than
    ``stale_after``, each asked about at most every ``recheck_every``. Every server process
    runs a sweeper; an order is claimed by a conditional UPDATE of ``checked_at`` first, so
    only one of them asks the provider about it. Raises PaymentUnavailable when the
    provider cannot answer: the next sweep tries again.
    """
    now = utcnow()
    not_recently = or_(TicketOrder.checked_at.is_(None), TicketOrder.checked_at < now - recheck_every)
    with transaction():
        candidates = db.session.execute(
            select(TicketOrder.id).where(TicketOrder.status.in_(UNSETTLED),
                                         or_(hold_has_ended(now), TicketOrder.created_at < now - stale_after),
                                         not_recently)
            .order_by(TicketOrder.created_at).limit(limit)).scalars().all()
    counts = {}
    for order_id in candidates:
        with transaction():
            claimed = db.session.execute(update(TicketOrder).where(TicketOrder.id == order_id, not_recently)
                                         .values(checked_at=now)).rowcount
        if not claimed:
            continue  # another process's sweeper took it
        label = _settle_one(order_id, path).label
        counts[label] = counts.get(label, 0) + 1
    return counts


def unsettled_older_than(age, now=None):
    """Ids of every pending or processing order created more than ``age`` ago, oldest first."""
    cutoff = (now or utcnow()) - age
    with transaction():
        return db.session.execute(
            select(TicketOrder.id).where(TicketOrder.status.in_(UNSETTLED), TicketOrder.created_at <= cutoff)
            .order_by(TicketOrder.created_at, TicketOrder.id)).scalars().all()


def resettle(order_ids, path="cli"):
    """Ask the provider now about each order (however recently it was asked), yielding ``(order_id, Outcome)``.

    For healing after an outage (``flask shop sweep --older-than``) instead of waiting for the
    sweeper's schedule. Each order is marked as just checked, so the server's sweepers skip it
    meanwhile; the state machine makes a sweeper asking at the same time harmless anyway.
    PaymentUnavailable stops the run: the provider is down for every order alike.
    """
    for order_id in order_ids:
        with transaction():
            db.session.execute(update(TicketOrder).where(TicketOrder.id == order_id).values(checked_at=utcnow()))
        yield order_id, _settle_one(order_id, path)


def _settle_one(order_id, path):
    """Settle one claimed order; a bug in one order is logged and never stops the others."""
    try:
        return settle_order(order_id, path)
    except PaymentUnavailable:
        raise  # the provider is down for every order alike: stop, the next sweep tries again
    except Exception:  # noqa: BLE001 (one odd order must not stop the others being settled)
        db.session.rollback()
        logger.exception("sweeper: order %s could not be settled", order_id)
        return Outcome(OutcomeKind.UNCHANGED, OutcomeReason.STALE, detail="error")


def settle_order(order_id, path):
    """Ask the provider about one order and apply the answer; closes its checkout first if its hold ended."""
    with transaction():
        order = db.session.get(TicketOrder, order_id)
        checkout_ref, ended = order.checkout_ref, hold_ended(order)
    if checkout_ref is None:
        if ended:
            return _release_without_checkout(order_id, path)
        return Outcome(OutcomeKind.UNCHANGED, OutcomeReason.STILL_OPEN)
    if ended:
        gateway().close_checkout(checkout_ref)
    outcome = reconcile_order(order_id, path)
    if outcome.kind is OutcomeKind.APPLIED and outcome.status is OrderStatus.PAID:
        logger.error("order %s was paid but no event reached us; the sweeper marked it paid. "
                     "Check the delivery paths: flask --app wsgi shop doctor", order_id)
    return outcome


def _release_without_checkout(order_id, path):
    """The checkout was never opened (the process died between the hold and the provider's answer).

    Nothing can be paid without a checkout reference we never handed out; should one still
    pay, the payment carries the order's token and arrives as a late payment.
    """
    with transaction():
        order = lock_order(order_id)
        if order.state is not OrderStatus.PENDING or order.checkout_ref is not None or not hold_ended(order):
            return Outcome(OutcomeKind.UNCHANGED, OutcomeReason.ALREADY, order.state)
        change_status(order, OrderStatus.EXPIRED, "hold ended and no checkout was ever opened", source=path)
    return Outcome(OutcomeKind.APPLIED, OutcomeReason.RELEASED, OrderStatus.EXPIRED)
