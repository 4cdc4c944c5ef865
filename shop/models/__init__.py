"""The shop's tables, one module per aggregate. Importing this package registers them all."""
from .catalog import DiscountCode, Event, TicketType
from .orders import Admission, OrderStatus, TicketOrder
from .sandbox import SandboxObject
from .stripe_events import DeliveryPath, StripeEvent
from .users import User

__all__ = [
    "Admission", "DeliveryPath", "DiscountCode", "Event", "OrderStatus", "SandboxObject",
    "StripeEvent", "TicketOrder", "TicketType", "User",
]
