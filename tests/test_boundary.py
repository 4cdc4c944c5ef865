"""The payment provider boundary, checked on the source: Stripe is known only under ``shop/payments/``."""
import re
from pathlib import Path

SHOP = Path(__file__).resolve().parent.parent / "shop"
TEMPLATES = SHOP.parent / "templates"
PAYMENTS = SHOP / "payments"

# Stripe's object and field names, status strings, event types and id prefixes, and minor units.
STRIPE_WORDS = re.compile(
    r"payment_intent|latest_charge|amount_total|amount_subtotal|amount_refunded|payment_status|"
    r"no_payment_required|requires_payment_method|checkout\.session|charge\.refund|"
    r"[\"'](?:cs|pi|ch|evt|re)_|_minor\b|minor_unit|\bcents\b")
# Dividing or multiplying by 100 is a minor-unit conversion, unless it is a percentage.
HUNDREDS = re.compile(r"[/*] ?100\b")
# The order table's columns keep the names the system this replaces gave them.
LEGACY_COLUMNS = re.compile(r"stripe_(?:checkout_session|payment_intent)_id")


def leaks(line):
    line = LEGACY_COLUMNS.sub("", line)
    return bool(STRIPE_WORDS.search(line) or (HUNDREDS.search(line) and "percent" not in line))


def sources(root, *patterns):
    return [path for pattern in patterns for path in sorted(root.rglob(pattern))]


def test_only_the_stripe_provider_imports_stripe():
    importers = [path.relative_to(SHOP.parent) for path in sources(SHOP, "*.py")
                 if re.search(r"^\s*(import stripe\b|from stripe\b)", path.read_text(), re.M)]
    assert importers and all(path.parts[:3] == ("shop", "payments", "stripe") for path in importers), importers


def test_no_module_outside_payments_knows_stripes_field_names_statuses_or_minor_units():
    found = []
    for path in sources(SHOP, "*.py") + sources(TEMPLATES, "*.html"):
        if PAYMENTS in path.parents:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if leaks(line):
                found.append(f"{path.relative_to(SHOP.parent)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_pattern_catches_what_it_is_meant_to():
    caught = ['session.get("payment_status")', "amount_minor", 'if ref.startswith("cs_")', "total / 100",
             'event["type"] == "checkout.session.completed"', 'intent["latest_charge"]']
    fine = ["unit_price * Decimal(self.percent_off) / 100", 'db.Column("stripe_payment_intent_id")', "payment_ref"]
    assert all(map(leaks, caught)) and not any(map(leaks, fine))
