"""``POST /webhooks/stripe``: the payment provider's direct webhook delivery."""
import logging

from flask import Blueprint, jsonify, request

from ..extensions import csrf
from ..payments import InvalidPayload, InvalidSignature, gateway
from ..services.event_log import RetryableError, receive_event

logger = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__)


@bp.post("/webhooks/stripe")
@csrf.exempt  # the provider signs the body instead; the signature is the check
def stripe_webhook():
    """2xx for handled, duplicate or ignored events; 400 for a bad signature or body; 503 when a retry can help.

    ``MAX_CONTENT_LENGTH`` refuses an oversized body (413) from its Content-Length before
    anything is read.
    """
    try:
        event = gateway().parse_webhook(request.get_data(), request.headers)
    except (InvalidSignature, InvalidPayload) as exc:
        logger.warning("webhook refused: %s", exc)
        return jsonify(error=str(exc)[:500]), 400
    try:
        outcome = receive_event(event, "webhook")
    except RetryableError:
        return jsonify(error="temporarily unable to process this event; please retry"), 503
    return jsonify(received=True, outcome=outcome.label, kind=outcome.kind.value, reason=outcome.reason.value), 200
