"""Units of work with a visible scope.

``with transaction():`` opens nothing new (SQLAlchemy begins on first use); it ends the
unit: commit when the block finishes, roll back when it raises. A read that must not keep
its snapshot or its connection across a slow call (a provider call) is a unit too, so the
call happens after the block, never inside it.
"""
from contextlib import contextmanager

from ..extensions import db


@contextmanager
def transaction():
    """Commit the session's work at the end of the block; roll it back if the block raises."""
    try:
        yield db.session
        db.session.commit()
    except BaseException:
        db.session.rollback()  # also when the commit itself failed: the session must be usable again
        raise
