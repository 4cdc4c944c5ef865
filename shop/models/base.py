"""Column helpers shared by the models."""
from datetime import datetime, timezone


def utcnow():
    """Naive UTC now: MariaDB DATETIME has no time zone, so every stored time is UTC by convention."""
    return datetime.now(timezone.utc).replace(tzinfo=None)
