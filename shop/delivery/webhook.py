"""``POST /webhooks/stripe``: Stripe's direct webhook delivery."""
import logging

from flask import Blueprint, jsonify, request

from ..extensions import csrf
from ..payments import InvalidPayload, InvalidSignature, gateway
from ..services.fulfilment import RetryableError, handle_stripe_event

logger = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__)


@bp.post("/webhooks/stripe")
@csrf.exempt  # Stripe signs the body instead; the signature is the check
def stripe_webhook():
    """2xx for handled, duplicate or ignored events; 400 for a bad signature or body; 503 when a retry can help."""
    try:
        event = gateway().parse_webhook(request.get_data(), request.headers.get("Stripe-Signature"))
    except (InvalidSignature, InvalidPayload) as exc:
        logger.warning("webhook refused: %s", exc)
        return jsonify(error=str(exc)), 400
    try:
        outcome = handle_stripe_event(event, "webhook")
    except RetryableError as exc:
        return jsonify(error=f"temporarily unable to process, retry: {exc}"[:500]), 503
    return jsonify(received=True, outcome=outcome), 200
