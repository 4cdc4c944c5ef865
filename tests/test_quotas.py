"""Capacity shared across ticket types: quotas held, sold and released with their types, edited within limits."""
from decimal import Decimal

import pytest
from sqlalchemy import select

from shop.extensions import db
from shop.models import AuditEntry, Quota, TicketOrder
from shop.services.events import CatalogError, add_ticket_type, create_quota, update_quota
from shop.services.fulfilment import reconcile_order


@pytest.fixture
def floor(make):
    """Standing (capacity 8) and early bird (capacity 8) sharing "floor: 10"."""
    event = make.event()
    standing = make.ticket(event, name="Standing", capacity=8)
    early = make.ticket(event, name="Early bird", price="15.00", capacity=8)
    quota = create_quota(event.id, name="floor", capacity=10, ticket_ids=[standing.id, early.id])
    return event, standing, early, quota


def order_json(client, event, items, email="fan@example.com"):
    return client.post(f"/events/{event.id}/checkout", json={
        "items": [{"ticket_id": t.id, "quantity": q} for t, q in items], "email": email})


def test_a_hold_must_fit_the_shared_quota_too(ctx, client, floor, reload):
    event, standing, early, quota = floor
    assert order_json(client, event, [(standing, 4), (early, 3)], email="a@example.com").status_code == 201
    assert (reload(quota).held_quantity, reload(standing).remaining, reload(early).remaining) == (7, 3, 3)
    refused = order_json(client, event, [(standing, 2), (early, 2)], email="b@example.com")
    assert refused.status_code == 409 and "Only 3 tickets of “floor” left" in refused.get_json()["error"]
    assert (reload(standing).held_quantity, reload(early).held_quantity, reload(quota).held_quantity) == (4, 3, 7)
    assert order_json(client, event, [(early, 3)], email="c@example.com").status_code == 201
    assert reload(quota).remaining == 0 and reload(standing).remaining == 0


def test_the_event_page_shows_the_smallest_remaining_limit(ctx, client, floor, place_order):
    event, standing, early, _ = floor
    place_order(early, quantity=5)
    page = client.get(f"/events/{event.id}").get_data(as_text=True)
    assert page.count("5 left") == 1 and "3 left" in page  # standing: 8 own, but only 5 on the floor; early: 3


def test_quota_moves_with_payment_expiry_and_refund(ctx, client, stripe_server, webhook, pay, floor, reload):
    event, standing, early, quota = floor
    paid = db.session.get(TicketOrder, order_json(client, event, [(standing, 2), (early, 1)]).get_json()["order_id"])
    lapsed = db.session.get(TicketOrder, order_json(client, event, [(early, 4)], email="x@example.com")
                            .get_json()["order_id"])
    pay(paid)
    assert webhook.post(stripe_server.expire(lapsed.checkout_ref)).status_code == 200
    assert (reload(quota).sold_quantity, reload(quota).held_quantity) == (3, 0)
    stripe_server.refund(reload(paid).payment_ref)
    reconcile_order(paid.id, "cli")
    assert (reload(quota).sold_quantity, reload(quota).held_quantity) == (0, 0)


def test_a_quota_starts_from_what_its_types_sold_and_held(ctx, make, place_order):
    event = make.event()
    a, b = make.ticket(event, name="A"), make.ticket(event, name="B")
    place_order(a, quantity=2)
    place_order(b, quantity=3, email="other@example.com")
    with pytest.raises(CatalogError, match="below the 5 seat"):
        create_quota(event.id, name="hall", capacity=4)
    quota = create_quota(event.id, name="hall", capacity=5)  # every type: an event-wide capacity
    assert (quota.held_quantity, [t.id for t in quota.ticket_types]) == (5, [a.id, b.id])


def test_a_capacity_below_sold_plus_held_is_refused_and_edits_are_audited(ctx, floor, place_order, reload):
    _, standing, _, quota = floor
    place_order(standing, quantity=4)
    with pytest.raises(CatalogError, match="below the 4 seat"):
        update_quota(quota.id, capacity=3)
    update_quota(quota.id, capacity=4, name="pit")
    assert (reload(quota).capacity, reload(quota).name) == (4, "pit")
    actions = db.session.execute(select(AuditEntry.action).where(AuditEntry.target_type == "quota")).scalars().all()
    assert actions == ["quota.create", "quota.edit"]


def test_quotas_from_the_command_line(app, ctx, make):
    event = make.event()
    a, b = make.ticket(event, name="A"), make.ticket(event, name="B")
    runner = app.test_cli_runner()
    added = runner.invoke(args=["shop", "add-quota", str(event.id), "--name", "floor", "--capacity", "300",
                                "--ticket", str(a.id), "--ticket", str(b.id)])
    assert added.exit_code == 0 and "floor, 300 seats" in added.output, added.output
    quota_id = db.session.execute(select(Quota.id)).scalar_one()
    edited = runner.invoke(args=["shop", "edit-quota", str(quota_id), "--capacity", "250"])
    assert edited.exit_code == 0 and "250 seats" in edited.output
    foreign = make.ticket(name="Elsewhere")
    refused = runner.invoke(args=["shop", "add-quota", str(event.id), "--name", "x", "--capacity", "3",
                                  "--ticket", str(foreign.id)])
    assert refused.exit_code != 0 and "one or more ticket types of this event" in refused.output


def test_quotas_in_the_console(ctx, form_client, staff, make, reload):
    staff.login("admin")
    event = make.event()
    a, b = make.ticket(event, name="Standing"), make.ticket(event, name="Early bird")
    created = form_client.post(f"/console/events/{event.id}/quotas/new",
                               data={"name": "floor", "capacity": "300", "ticket_ids": [str(a.id), str(b.id)]})
    assert created.status_code == 302, created.get_data(as_text=True)
    quota = db.session.execute(select(Quota)).scalar_one()
    page = form_client.get(f"/console/events/{event.id}").get_data(as_text=True)
    assert "floor" in page and "300 seats over Standing, Early bird" in page
    edited = form_client.post(f"/console/quotas/{quota.id}/edit", data={"name": "floor", "capacity": "-1"})
    assert edited.status_code == 400
    assert form_client.post(f"/console/quotas/{quota.id}/edit",
                            data={"name": "floor", "capacity": "250"}).status_code == 302
    assert reload(quota).capacity == 250
    door = staff.login("door")
    assert door and form_client.get(f"/console/quotas/{quota.id}/edit").status_code in (302, 403, 404)


def test_a_ticket_type_added_later_counts_against_the_event_wide_capacity(ctx, client, make, reload):
    event = make.event()
    early = make.ticket(event, name="Early", capacity=10)
    hall = create_quota(event.id, name="hall", capacity=3)  # every type: the event-wide capacity
    floor = create_quota(event.id, name="floor", capacity=5, ticket_ids=[early.id])
    late = add_ticket_type(event.id, name="Late", price=Decimal("20.00"), capacity=10)

    assert hall.event_wide and not floor.event_wide
    assert [t.id for t in reload(hall).ticket_types] == [early.id, late.id]
    assert [t.id for t in reload(floor).ticket_types] == [early.id]  # a named quota keeps its types
    assert order_json(client, event, [(early, 2)]).status_code == 201
    refused = order_json(client, event, [(late, 2)], email="late@example.com")
    assert refused.status_code == 409 and reload(hall).held_quantity == 2
    assert order_json(client, event, [(late, 1)], email="late@example.com").status_code == 201
    assert reload(hall).held_quantity == 3
