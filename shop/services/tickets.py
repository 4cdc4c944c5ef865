"""Admission tickets as an attendee shows them: a code and its QR image."""
from functools import lru_cache

import segno
from markupsafe import Markup


@lru_cache(maxsize=1024)
def qr_svg(code):
    """An inline SVG QR code for an admission code (segno: pure Python, no image libraries)."""
    return Markup(segno.make(code, micro=False).svg_inline(scale=3, border=2))
