"""Stripe, the production payment provider: the only package that imports ``stripe``."""
from .provider import StripeProvider

__all__ = ["StripeProvider"]
