"""The outbox: mail written with the change that causes it, sent later by a sender that may fail and retry.

``queue_message`` renders a message from its templates and adds it to the caller's
transaction: the message exists exactly when the change does. ``send_due`` (the sender
thread in every server process, or ``flask shop send-mail``) claims due rows one by one with
a conditional UPDATE, so two processes never send one message, and talks to the mail server
with no transaction open. A mail server that is down delays mail; it never blocks or undoes
the change that caused it.
"""
import json
import logging
import secrets
import smtplib
import socket
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid

from flask import current_app, render_template
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..models import OutboxMessage, OutboxStatus
from ..models.base import utcnow
from .transactions import transaction

logger = logging.getLogger(__name__)

# A claimed message not reported back within this (its sender died) becomes due again.
CLAIM_LEASE = timedelta(minutes=5)
RETRY_CAP = timedelta(hours=1)
BATCH = 20


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str   # "text/calendar; method=PUBLISH"
    content: str


@dataclass(frozen=True)
class ClaimedMessage:
    """A message claimed for sending: plain values, so sending needs no session and no transaction."""
    id: int
    token: str
    attempts: int
    recipient: str
    subject: str
    body_text: str
    body_html: str
    attachments: tuple


class PermanentFailure(Exception):
    """The mail server refused the message for good (a 5xx answer): retrying will not help."""


def queue_message(kind, recipient, subject, template, *, order_id=None, dedupe_key=None, attachments=(), **context):
    """Render ``mail/<template>.txt`` and ``.html`` and add the message to the caller's transaction.

    Returns the new :class:`OutboxMessage`, or None when ``dedupe_key`` was queued before (a
    savepoint keeps the caller's transaction as it was). Raises whatever rendering raises:
    callers on the money path use :func:`queue_safely`.
    """
    context.update(recipient=recipient, subject=subject)
    message = OutboxMessage(
        kind=kind.value, recipient=recipient, subject=subject[:255], order_id=order_id, dedupe_key=dedupe_key,
        body_text=render_template(f"mail/{template}.txt", **context),
        body_html=render_template(f"mail/{template}.html", **context),
        attachments=json.dumps([a.__dict__ for a in attachments]),
        status=OutboxStatus.WAITING.value, next_attempt_at=utcnow())
    try:
        with db.session.begin_nested():
            db.session.add(message)
    except IntegrityError:
        logger.info("mail %s to order %s: queued before (%s)", kind.value, order_id, dedupe_key)
        return None
    logger.info("mail %s queued for order %s (outbox %s)", kind.value, order_id, message.id)
    return message


def queue_safely(build, what):
    """Run ``build()`` (which queues a message) so that a failure to build it never undoes the caller's change.

    A message that cannot be built (a template error, links that cannot be made) is logged with
    the traceback and written to the outbox as ``failed``, where ``doctor`` shows it.
    """
    try:
        with db.session.begin_nested():
            return build()
    except Exception as exc:  # noqa: BLE001 (mail must never cost a payment; the outbox keeps the failure)
        logger.exception("mail %s could not be built", what)
        try:
            with db.session.begin_nested():
                db.session.add(OutboxMessage(
                    kind=what[:32], recipient="-", subject=f"(not built: {what})"[:255], body_text="", body_html="",
                    attachments="[]", status=OutboxStatus.FAILED.value, last_error=f"not built: {exc}"[:2000]))
        except Exception:  # noqa: BLE001
            logger.exception("mail %s: not even the failure could be recorded", what)
        return None


# ----- sending -----

def send_due(limit=BATCH, now=None):
    """Send up to ``limit`` due messages; returns ``{status: count}`` of what became of them.

    Claims first (each row by one conditional UPDATE, committed), then sends over one mail
    server connection with no transaction open, then records each result in its own short
    transaction.
    """
    now = now or utcnow()
    claimed = [message for message_id in _due_ids(now, limit) if (message := _claim(message_id, now))]
    if not claimed:
        return {}
    results = {}
    for _message, status in _deliver(claimed):
        results[status.value] = results.get(status.value, 0) + 1
    return results


def _due_ids(now, limit):
    with transaction():
        return db.session.execute(
            select(OutboxMessage.id).where(or_(
                and_(OutboxMessage.status == OutboxStatus.WAITING.value, OutboxMessage.next_attempt_at <= now),
                and_(OutboxMessage.status == OutboxStatus.SENDING.value, OutboxMessage.claimed_until < now)))
            .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id).limit(limit)).scalars().all()


def _claim(message_id, now):
    """Claim one message for this sender; None when another process took it first (the row count says)."""
    token = secrets.token_hex(16)
    with transaction():
        claimed = db.session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message_id, or_(
                and_(OutboxMessage.status == OutboxStatus.WAITING.value, OutboxMessage.next_attempt_at <= now),
                and_(OutboxMessage.status == OutboxStatus.SENDING.value, OutboxMessage.claimed_until < now)))
            .values(status=OutboxStatus.SENDING.value, claim_token=token, claimed_until=now + CLAIM_LEASE,
                    attempts=OutboxMessage.attempts + 1)
            .execution_options(synchronize_session=False)).rowcount
        if not claimed:
            return None
        row = db.session.execute(select(OutboxMessage).where(OutboxMessage.id == message_id)
                                 .execution_options(populate_existing=True)).scalar_one()
        return ClaimedMessage(id=row.id, token=token, attempts=row.attempts, recipient=row.recipient,
                              subject=row.subject, body_text=row.body_text, body_html=row.body_html,
                              attachments=tuple(Attachment(**a) for a in json.loads(row.attachments or "[]")))


def _deliver(claimed):
    """Yield ``(message, status)`` for each claimed message, after recording what became of it."""
    config = current_app.config
    if not config["MAIL_SERVER"]:
        for message in claimed:
            logger.info("mail (no MAIL_SERVER, logged only) outbox %s to %s: %s\n%s", message.id, message.recipient,
                        message.subject, message.body_text)
            yield message, _record(message, OutboxStatus.LOGGED)
        return
    try:
        connection = _connect(config)
    except (OSError, smtplib.SMTPException) as exc:
        for message in claimed:
            yield message, _record_failure(message, f"mail server unreachable: {exc}")
        return
    try:
        for message in claimed:
            yield message, _send_one(connection, message, config)
    finally:
        try:
            connection.quit()
        except (OSError, smtplib.SMTPException):
            connection.close()


def _send_one(connection, message, config):
    try:
        refused = connection.send_message(build_email(message, config["MAIL_DEFAULT_SENDER"]))
        if refused:
            raise PermanentFailure(f"recipient refused: {refused}")
    except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
        code = getattr(exc, "smtp_code", None) or _first_code(exc)
        if code and code >= 500:
            return _record_failure(message, f"refused by the mail server: {exc}", permanent=True)
        return _record_failure(message, f"deferred by the mail server: {exc}")
    except PermanentFailure as exc:
        return _record_failure(message, str(exc), permanent=True)
    except (OSError, smtplib.SMTPException) as exc:
        return _record_failure(message, f"sending failed: {exc}")
    logger.info("mail outbox %s sent to %s: %s", message.id, message.recipient, message.subject)
    return _record(message, OutboxStatus.SENT)


def _first_code(exc):
    recipients = getattr(exc, "recipients", None) or {}
    codes = [answer[0] for answer in recipients.values() if answer]
    return min(codes) if codes else None


def _connect(config):
    timeout = config["SHOP_MAIL_TIMEOUT"]
    if config["MAIL_USE_SSL"]:
        connection = smtplib.SMTP_SSL(config["MAIL_SERVER"], config["MAIL_PORT"], timeout=timeout)
    else:
        connection = smtplib.SMTP(config["MAIL_SERVER"], config["MAIL_PORT"], timeout=timeout)
    try:
        if config["MAIL_USE_TLS"]:
            connection.starttls()
        if config["MAIL_USERNAME"]:
            connection.login(config["MAIL_USERNAME"], config["MAIL_PASSWORD"])
    except (OSError, smtplib.SMTPException):
        connection.close()
        raise
    return connection


def build_email(message, sender):
    """The MIME message: text and HTML alternatives, plus attachments."""
    email = EmailMessage()
    email["Subject"] = message.subject
    email["From"] = sender
    email["To"] = message.recipient
    email["Message-ID"] = make_msgid(idstring=f"outbox-{message.id}", domain=_sender_domain(sender))
    email.set_content(message.body_text)
    email.add_alternative(message.body_html, subtype="html")
    for attachment in message.attachments:
        maintype, subtype = attachment.content_type.split(";")[0].strip().split("/")
        email.add_attachment(attachment.content.encode(), maintype=maintype, subtype=subtype,
                             filename=attachment.filename)
    return email


def _sender_domain(sender):
    domain = sender.rsplit("@", 1)[-1].strip(" >")
    return domain or socket.getfqdn()


def _record(message, status):
    """Record a final answer for a message this sender still holds."""
    with transaction():
        db.session.execute(
            update(OutboxMessage).where(OutboxMessage.id == message.id, OutboxMessage.claim_token == message.token)
            .values(status=status.value, sent_at=utcnow(), claim_token=None, claimed_until=None, last_error=None)
            .execution_options(synchronize_session=False))
    return status


def _record_failure(message, error, permanent=False):
    """Retry later (each wait twice the last, at most an hour), or give up after the last attempt."""
    config = current_app.config
    give_up = permanent or message.attempts >= config["SHOP_MAIL_MAX_ATTEMPTS"]
    delay = min(timedelta(seconds=config["SHOP_MAIL_RETRY_SECONDS"] * 2 ** (message.attempts - 1)), RETRY_CAP)
    status = OutboxStatus.FAILED if give_up else OutboxStatus.WAITING
    with transaction():
        db.session.execute(
            update(OutboxMessage).where(OutboxMessage.id == message.id, OutboxMessage.claim_token == message.token)
            .values(status=status.value, next_attempt_at=utcnow() + delay, claim_token=None, claimed_until=None,
                    last_error=error[:2000])
            .execution_options(synchronize_session=False))
    if give_up:
        logger.error("mail outbox %s to %s failed after %s attempt(s): %s", message.id, message.recipient,
                     message.attempts, error)
    else:
        logger.warning("mail outbox %s: attempt %s failed (%s); next in %s s", message.id, message.attempts, error,
                       int(delay.total_seconds()))
    return status


# ----- what operators and the back office read -----

def outbox_counts():
    """``{"waiting": n, "failed": n}``: messages not sent yet (claimed ones count as waiting), and given up on.

    For a dashboard: one query on the (status, next_attempt_at) index.
    """
    with transaction():
        rows = dict(db.session.execute(
            select(OutboxMessage.status, func.count()).where(OutboxMessage.status.in_(
                (OutboxStatus.WAITING.value, OutboxStatus.SENDING.value, OutboxStatus.FAILED.value)))
            .group_by(OutboxMessage.status)).all())
    return {"waiting": rows.get(OutboxStatus.WAITING.value, 0) + rows.get(OutboxStatus.SENDING.value, 0),
            "failed": rows.get(OutboxStatus.FAILED.value, 0)}


def undelivered(limit=100, include_waiting=True):
    """Messages given up on (and, with ``include_waiting``, those still waiting), newest first."""
    statuses = [OutboxStatus.FAILED.value]
    if include_waiting:
        statuses += [OutboxStatus.WAITING.value, OutboxStatus.SENDING.value]
    with transaction():
        return db.session.execute(select(OutboxMessage).where(OutboxMessage.status.in_(statuses))
                                  .order_by(OutboxMessage.created_at.desc(), OutboxMessage.id.desc())
                                  .limit(limit)).scalars().all()


def retry_message(message_id):
    """Make a failed message due again now, with a fresh count of attempts; False if it is not failed."""
    with transaction():
        return db.session.execute(
            update(OutboxMessage).where(OutboxMessage.id == message_id,
                                        OutboxMessage.status == OutboxStatus.FAILED.value,
                                        OutboxMessage.recipient != "-")
            .values(status=OutboxStatus.WAITING.value, attempts=0, next_attempt_at=utcnow())
            .execution_options(synchronize_session=False)).rowcount == 1
