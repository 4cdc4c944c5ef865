"""Local times: stored times are naive UTC; people read them in the event's own time zone.

``zoneinfo`` with the ``tzdata`` package (a requirement), so the zone rules are the same on
every machine, with or without the system's ``/usr/share/zoneinfo``.
"""
from datetime import timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = ZoneInfo("UTC")


@lru_cache(maxsize=256)
def zone(name):
    """The ``ZoneInfo`` called ``name``; UTC for an empty or unknown name (a row from before zones existed)."""
    try:
        return ZoneInfo(name) if name else UTC
    except (ValueError, ZoneInfoNotFoundError):
        return UTC


def to_local(value, tz_name):
    """A stored naive-UTC ``datetime`` as an aware one in the zone ``tz_name``; None stays None."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc).astimezone(zone(tz_name))


def to_utc(value, tz_name):
    """A time as entered (naive: local to ``tz_name``; aware: as it says) → naive UTC, as stored.

    A naive time that a clock change skips or repeats is read as the clock shows it first (``fold=0``).
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone(tz_name))
    return value.astimezone(timezone.utc).replace(tzinfo=None)


def local_label(value, tz_name, with_weekday=True):
    """``Sat 01 Mar 2027, 20:30 CET``: the time in its zone, with the zone's abbreviation for that date."""
    local = to_local(value, tz_name)
    if local is None:
        return ""
    return local.strftime("%a %d %b %Y, %H:%M %Z" if with_weekday else "%d %b %Y %H:%M %Z")

