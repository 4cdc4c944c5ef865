"""Fulfilment: where an order becomes paid (or processing, failed, expired, refunded).

Every inlet calls in here with its own name as ``path``: the webhook route and the
EventBridge poller with a Stripe event (``handle_stripe_event``), the success page with
a session id (``fulfil_checkout_session``), the cancel page, the sweeper and the refund
command with an order id (``reconcile_order``).

An event is only a trigger (pretix's habit): we re-read the Checkout Session from Stripe,
with its payment intent and latest charge, and move the order to what those say is true.
That makes processing idempotent and independent of the order events arrive in.
"""
import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from ..extensions import db
from ..models import DeliveryPath, StripeEvent, TicketOrder
from ..models.base import utcnow
from ..models.orders import OrderStatus
from ..payments import PaymentError, PaymentUnavailable, gateway
from .holds import hold_ended, hold_has_ended, release_ended_holds
from .orders import NoSeatsLeft, TransitionRefused, change_status, flag_for_attention, lock_order

logger = logging.getLogger(__name__)

SESSION_EVENTS = {
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
}
REFUND_EVENTS = {"charge.refunded", "charge.refund.updated"}
HANDLED_EVENTS = SESSION_EVENTS | REFUND_EVENTS
SOLD_OUT_REFUND_REASON = "sold out before payment arrived"


class RetryableError(Exception):
    """Processing failed for a reason a later delivery can fix (database or Stripe unreachable).

    The webhook answers 5xx so Stripe retries; the poller leaves the message on the queue.
    """


@dataclass(frozen=True)
class StripeTruth:
    """What Stripe's objects say about a checkout, read off one expanded session."""
    session_id: str
    order_id: int | None
    status: OrderStatus | None      # None: the session is still open, nothing to do
    payment_intent_id: str | None
    amount_total: int | None
    currency: str | None
    refunded_minor: int


def read_session(session):
    """Derive the order state Stripe's session (with intent and charge expanded) implies."""
    intent = session.get("payment_intent") if isinstance(session.get("payment_intent"), dict) else None
    charge = intent.get("latest_charge") if intent and isinstance(intent.get("latest_charge"), dict) else None
    refunded = int(charge.get("amount_refunded") or 0) if charge else 0
    if charge and charge.get("amount") and refunded >= charge["amount"]:
        status = OrderStatus.REFUNDED
    elif session.get("status") == "complete" and session.get("payment_status") in ("paid", "no_payment_required"):
        status = OrderStatus.PAID
    elif session.get("status") == "complete":
        # A delayed payment method: the intent says whether it is still on its way or failed.
        failed = intent is not None and intent.get("status") in ("requires_payment_method", "canceled")
        status = OrderStatus.FAILED if failed else OrderStatus.PROCESSING
    elif session.get("status") == "expired":
        status = OrderStatus.EXPIRED
    else:
        status = None
    raw_order_id = (session.get("metadata") or {}).get("order_id")
    try:
        order_id = int(raw_order_id) if raw_order_id is not None else None
    except (TypeError, ValueError):
        order_id = None
    return StripeTruth(
        session_id=session.get("id"), order_id=order_id, status=status,
        payment_intent_id=intent.get("id") if intent else session.get("payment_intent"),
        amount_total=session.get("amount_total"), currency=session.get("currency"), refunded_minor=refunded)


def handle_stripe_event(event, path):
    """Record a Stripe event once, then bring its order in line with Stripe; returns the outcome.

    A duplicate of an event already processed changes nothing. An event that is not ours,
    has no order, or is of a type we do not handle is recorded with the reason and
    acknowledged. Raises :class:`RetryableError` when a later delivery could succeed.
    """
    event_id, event_type = event.get("id"), event.get("type")
    try:
        note_delivery(path)
        if not _record_event(event, path):
            logger.info("event %s %s via %s: duplicate, already processed", event_id, event_type, path)
            return "duplicate"
        outcome, order_id = _process_event(event, path)
        db.session.execute(update(StripeEvent).where(StripeEvent.id == event_id)
                           .values(processed_at=utcnow(), outcome=outcome[:64], order_id=order_id, error=None))
        db.session.commit()
    except (RetryableError, DBAPIError, PaymentUnavailable) as exc:
        db.session.rollback()
        _note_error(event_id, exc)
        logger.warning("event %s %s via %s: will be retried: %s", event_id, event_type, path, exc)
        raise exc if isinstance(exc, RetryableError) else RetryableError(str(exc)) from exc
    logger.info("event %s %s via %s: order %s %s", event_id, event_type, path, order_id, outcome)
    return outcome


def _record_event(event, path):
    """Insert the event row; False when it exists and was processed (a duplicate delivery).

    The primary key decides, not a look-up first: two deliveries racing both try the
    insert and exactly one wins. A row without ``processed_at`` is an earlier attempt
    that failed, so the event is processed again (the state machine makes that safe).
    """
    try:
        db.session.execute(insert(StripeEvent).values(
            id=event["id"], type=event["type"][:100], delivered_by=path, received_at=utcnow(), payload=json.dumps(event)))
        db.session.commit()
        return True
    except IntegrityError:
        db.session.rollback()
    existing = db.session.get(StripeEvent, event["id"], populate_existing=True)
    return existing is not None and existing.processed_at is None


def _note_error(event_id, exc):
    try:
        db.session.execute(update(StripeEvent).where(StripeEvent.id == event_id).values(error=str(exc)[:2000]))
        db.session.commit()
    except DBAPIError:
        db.session.rollback()  # the database itself is what failed; the log line has it


def note_delivery(path):
    """Remember when ``path`` last delivered something (``doctor`` shows it).

    Bookkeeping only: losing a race for the first insert, or any database error here, must
    not cost the event; recording the event itself comes next and fails loudly if it must.
    """
    now = utcnow()
    try:
        updated = db.session.execute(update(DeliveryPath).where(DeliveryPath.name == path).values(
            last_delivered_at=now, deliveries=DeliveryPath.deliveries + 1)).rowcount
        if not updated:
            db.session.add(DeliveryPath(name=path, last_delivered_at=now, deliveries=1))
        db.session.commit()
    except DBAPIError as exc:
        db.session.rollback()
        logger.debug("delivery of %s not noted: %s", path, exc)


def _process_event(event, path):
    event_type = event["type"]
    obj = event["data"]["object"]
    if event_type not in HANDLED_EVENTS:
        return f"ignored: {event_type} is not handled", None
    if event_type in SESSION_EVENTS:
        session_id = obj.get("id")
        if not isinstance(session_id, str) or not session_id:
            return "ignored: the event's object has no session id", None
    else:
        session_id = _session_for_charge(obj)
        if session_id is None:
            return "ignored: refund of a payment that is not an order of ours", None
    session = _session_at_stripe(session_id)
    if session is None:
        return f"ignored: Stripe does not know {session_id}", None
    return _reconcile(session, path, cause=f"{event_type} {event['id']} via {path}")


def _session_at_stripe(session_id):
    """The session as Stripe has it now, or None when Stripe refuses to show it (unknown, not ours).

    Raises PaymentUnavailable when Stripe cannot be reached: a later attempt can succeed.
    """
    try:
        return gateway().retrieve_session(session_id)
    except PaymentUnavailable:
        raise
    except PaymentError as exc:
        logger.warning("Stripe refused to show session %s: %s", session_id, exc)
        return None


def _session_for_charge(charge):
    """The Checkout Session behind a charge: through the order that holds its intent, else the intent's metadata."""
    intent_id = charge.get("payment_intent")
    if not isinstance(intent_id, str) or not intent_id:
        return None
    order = db.session.execute(select(TicketOrder).where(TicketOrder.stripe_payment_intent_id == intent_id)).unique().scalar_one_or_none()
    if order is None:
        try:
            intent = gateway().retrieve_payment_intent(intent_id)
        except PaymentUnavailable:
            raise
        except PaymentError:
            return None  # Stripe knows no such payment: not one of our orders
        order_id = (intent.get("metadata") or {}).get("order_id")
        order = db.session.get(TicketOrder, int(order_id)) if order_id and str(order_id).isdigit() else None
    db.session.rollback()  # end the read so the row lock later sees fresh data
    return order.stripe_checkout_session_id if order else None


def fulfil_checkout_session(session_id, path):
    """Bring the order behind Checkout Session ``session_id`` in line with Stripe; returns the order or None.

    The success page calls this, so a buyer who returns before any event sees the truth at once.
    """
    session = _session_at_stripe(session_id)
    if session is None:
        return None
    note_delivery(path)
    outcome, order_id = _reconcile(session, path, cause=f"session {session_id} via {path}")
    logger.info("session %s via %s: order %s %s", session_id, path, order_id, outcome)
    return db.session.get(TicketOrder, order_id) if order_id else None


def reconcile_order(order_id, path, *, cancelled=False, refund_unseatable=True):
    """Re-read an order's session from Stripe and apply it; returns the outcome.

    ``cancelled`` records an expiry as the buyer's cancel. Used by the cancel page, the
    sweeper and the refund command.
    """
    session_id = db.session.execute(
        select(TicketOrder.stripe_checkout_session_id).where(TicketOrder.id == order_id)).scalar_one_or_none()
    db.session.rollback()  # no transaction stays open across the Stripe call
    if session_id is None:
        return "ignored: no such order or no checkout session"
    session = _session_at_stripe(session_id)
    if session is None:
        return f"ignored: Stripe refused to show {session_id}"
    outcome, _ = _reconcile(session, path, cause=f"{path} re-read session {session_id}", cancelled=cancelled,
                            refund_unseatable=refund_unseatable)
    return outcome


def _reconcile(session, path, cause, cancelled=False, refund_unseatable=True):
    """Apply Stripe's truth to the order under its row lock; returns ``(outcome, order_id)``.

    A payment for seats that are gone is refunded after the lock is released, unless
    ``refund_unseatable`` is off (the re-read after our own refund must not refund again).
    """
    truth = read_session(session)
    if truth.order_id is None:
        return "ignored: no order_id in the session's metadata", None
    refund_due = False
    order = lock_order(truth.order_id)
    if order is None:
        db.session.rollback()
        return f"ignored: order {truth.order_id} does not exist", truth.order_id
    try:
        mismatch = _mismatch(order, truth)
        if mismatch:
            flag_for_attention(order, f"not marked paid: {mismatch}")
            outcome = f"refused: {mismatch}"
        else:
            outcome, refund_due = _apply(order, truth, cause, cancelled)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    if refund_due and refund_unseatable:
        outcome = _refund_unseatable(order.id, truth, path)
    return outcome, order.id


def _mismatch(order, truth):
    """Why Stripe's session cannot be this order's payment, or None."""
    if order.stripe_checkout_session_id and order.stripe_checkout_session_id != truth.session_id:
        return f"session {truth.session_id} is not the order's session {order.stripe_checkout_session_id}"
    if truth.status in (OrderStatus.PAID, OrderStatus.PROCESSING, OrderStatus.REFUNDED):
        if truth.amount_total != order.amount_minor:
            return f"amount {truth.amount_total} does not match the order's {order.amount_minor}"
        if (truth.currency or "").lower() != order.currency.lower():
            return f"currency {truth.currency} does not match the order's {order.currency}"
    return None


def _apply(order, truth, cause, cancelled):
    """Move the locked order towards ``truth``; returns ``(outcome, refund_due)``."""
    if order.stripe_checkout_session_id is None:
        order.stripe_checkout_session_id = truth.session_id
    if truth.payment_intent_id and not order.stripe_payment_intent_id:
        order.stripe_payment_intent_id = truth.payment_intent_id
    target = truth.status
    if target is None:
        return "unchanged: checkout still open", False
    if target is OrderStatus.EXPIRED:
        if cancelled and order.state in (OrderStatus.PENDING, OrderStatus.EXPIRED):
            target = OrderStatus.CANCELLED
        elif order.state is not OrderStatus.PENDING:
            return f"unchanged: already {order.status}", False
    if truth.refunded_minor or target is OrderStatus.REFUNDED:
        order.refunded_amount = Decimal(truth.refunded_minor) / 100
    if order.state is target:
        if target is OrderStatus.PAID and truth.refunded_minor:
            return "partially refunded", False
        return f"unchanged: already {order.status}", False
    try:
        change_status(order, target, cause)
    except NoSeatsLeft:
        if target is OrderStatus.PROCESSING:
            # A delayed payment is still on its way and cannot be refunded yet; when it succeeds the
            # order moves to paid, finds no seats, and is refunded then.
            flag_for_attention(order, "delayed payment under way for seats that were released and resold")
            return "unchanged: no seats to hold for the delayed payment", False
        flag_for_attention(order, SOLD_OUT_REFUND_REASON)
        return "refund due: sold out", True
    except TransitionRefused as exc:
        # A stale view never moves an order backwards (paid stays paid when an old expiry arrives)…
        if order.state in (OrderStatus.REFUNDED, OrderStatus.FAILED) and target in (OrderStatus.PAID, OrderStatus.PROCESSING):
            # …but Stripe showing money taken for an order we count as refunded or failed (a refund
            # that failed afterwards, say) needs a person: the buyer may hold void tickets.
            flag_for_attention(order, f"Stripe says {target.value} but the order is {order.status}")
        logger.info("%s; left as %s", exc, order.status)
        return f"unchanged: {order.status}", False
    return target.value, False


def _refund_unseatable(order_id, truth, path):
    """Refund a payment that arrived for seats no longer available, then record what Stripe confirms.

    Stripe refusing the refund leaves the order flagged for the organizer; Stripe being
    unreachable raises PaymentUnavailable, so the event is delivered again and the refund
    retried (its idempotency key makes that one refund).
    """
    logger.warning("order %s: refunding %s, %s", order_id, truth.payment_intent_id, SOLD_OUT_REFUND_REASON)
    try:
        gateway().refund(payment_intent_id=truth.payment_intent_id, order_id=order_id, reason=SOLD_OUT_REFUND_REASON)
    except PaymentUnavailable:
        raise
    except PaymentError as exc:
        order = lock_order(order_id)
        flag_for_attention(order, f"{SOLD_OUT_REFUND_REASON}; the automatic refund failed: {exc}")
        db.session.commit()
        return "refund failed: flagged for attention"
    return reconcile_order(order_id, path, refund_unseatable=False)


def refund_order(order_id, reason, path="console"):
    """Refund a paid order in full through Stripe and record it once Stripe confirms; returns the outcome.

    The idempotency key is per order, so running it twice refunds once.
    """
    order = db.session.get(TicketOrder, order_id)
    if order is None:
        raise PaymentError(f"order {order_id} does not exist")
    if order.state is not OrderStatus.PAID or not order.stripe_payment_intent_id:
        raise PaymentError(f"order {order_id} is {order.status}; only paid orders can be refunded")
    intent_id = order.stripe_payment_intent_id
    db.session.rollback()
    gateway().refund(payment_intent_id=intent_id, order_id=order_id, reason=reason)
    return reconcile_order(order_id, path, refund_unseatable=False)


def sweep(path="sweeper", limit=50, stale_after=timedelta(minutes=5), recheck_every=timedelta(minutes=10)):
    """Settle the orders no event has settled; returns ``{outcome: count}``.

    Candidates are pending or processing orders whose hold ended or that are older than
    ``stale_after``, each re-read from Stripe at most every ``recheck_every``. A payment
    whose event never reached us is found here, paid, and logged loudly: a delivery path is
    broken. Every server process runs a sweeper; an order is claimed by a conditional
    UPDATE of ``checked_at`` first, so only one of them asks Stripe about it.
    """
    now = utcnow()
    not_recently = or_(TicketOrder.checked_at.is_(None), TicketOrder.checked_at < now - recheck_every)
    candidates = db.session.execute(
        select(TicketOrder.id).where(
            TicketOrder.status.in_([OrderStatus.PENDING.value, OrderStatus.PROCESSING.value]),
            or_(hold_has_ended(now), TicketOrder.created_at < now - stale_after), not_recently)
        .order_by(TicketOrder.created_at).limit(limit)).scalars().all()
    counts = {}
    for order_id in candidates:
        claimed = db.session.execute(update(TicketOrder).where(TicketOrder.id == order_id, not_recently)
                                     .values(checked_at=now)).rowcount
        db.session.commit()
        if not claimed:
            continue  # another process's sweeper took it
        try:
            outcome = _sweep_one(order_id, path)
        except PaymentUnavailable:
            raise  # Stripe is down: the next sweep tries again
        except Exception:  # noqa: BLE001 (one odd order must not stop the others being settled)
            db.session.rollback()
            logger.exception("sweeper: order %s could not be settled", order_id)
            outcome = "error"
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def _sweep_one(order_id, path):
    order = db.session.get(TicketOrder, order_id)
    session_id, ended = order.stripe_checkout_session_id, hold_ended(order)
    db.session.rollback()
    if session_id is None:
        # The checkout never got a session (the process died in between): nothing to ask Stripe.
        return "released" if ended and release_ended_holds(ticket_id=order.ticket_id) else "unchanged"
    if ended:
        gateway().expire_session(session_id)
    outcome = reconcile_order(order_id, path)
    if outcome == OrderStatus.PAID.value:
        logger.error("order %s was paid but no event reached us; the sweeper marked it paid. "
                     "Check the delivery paths: flask --app wsgi shop doctor", order_id)
    return outcome
