"""The shop's tables, one module per aggregate. Importing this package registers them all.

A payment provider's own tables live with it (``shop/payments/sandbox/models.py``).
"""
from .catalog import DiscountCode, Event, TicketType
from .orders import Admission, AdmissionState, OrderStatus, TicketOrder
from .outbox import MessageKind, OutboxMessage, OutboxStatus
from .payment_events import DeliveryPath, Outcome, OutcomeKind, OutcomeReason, PaymentEvent
from .users import User

__all__ = [
    "Admission", "AdmissionState", "DeliveryPath", "DiscountCode", "Event", "MessageKind", "OrderStatus", "Outcome",
    "OutcomeKind", "OutcomeReason", "OutboxMessage", "OutboxStatus", "PaymentEvent", "TicketOrder", "TicketType",
    "User",
]
