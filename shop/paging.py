"""The ``?page=`` of a paginated page: LIMIT/OFFSET over an indexed order, so a page costs the same on a
small database and a large one."""
from flask import request

# Deep offsets still walk the index from the start; nobody pages this far through events or orders.
MAX_PAGE = 1000
BAD_PAGE = f"The page must be a whole number from 1 to {MAX_PAGE}."


def page_number():
    """The request's page (1 when absent), or None when it is not a whole number from 1 to MAX_PAGE."""
    raw = request.args.get("page", "1")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        return None
    return int(raw)
