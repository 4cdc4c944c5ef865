"""The shop's tables, one module per aggregate. Importing this package registers them all.

A payment provider's own tables live with it (``shop/payments/sandbox/models.py``).
"""
from .audit import AuditEntry
from .catalog import AttendeeNames, DiscountCode, Event, EventStatus, Quota, SaleState, TicketType
from .orders import Admission, AdmissionState, OrderHistory, OrderItem, OrderStatus, RefundRequest, TicketOrder
from .outbox import MessageKind, OutboxMessage, OutboxStatus
from .payment_events import DeliveryPath, Outcome, OutcomeKind, OutcomeReason, PaymentEvent
from .users import ApiToken, StaffRole, User

__all__ = [
    "Admission", "AdmissionState", "ApiToken", "AttendeeNames", "AuditEntry", "DeliveryPath", "DiscountCode", "Event",
    "EventStatus", "MessageKind", "OrderHistory", "OrderItem", "OrderStatus", "Outcome", "OutcomeKind", "OutcomeReason",
    "OutboxMessage", "OutboxStatus", "PaymentEvent", "Quota", "RefundRequest", "SaleState", "StaffRole", "TicketOrder",
    "TicketType", "User",
]
