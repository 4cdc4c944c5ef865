"""The door: every answer, the race between two devices, a refunded ticket, undo, and the JSON API's contract."""
import threading

import pytest

from shop.extensions import db
from shop.models import Admission, AuditEntry
from shop.services.audit import Actor
from shop.services.checkin import ScanResult, check_in, checkin_counts, normalize_code, undo_check_in
from shop.services.refunds import refund_order


@pytest.fixture
def door(staff):
    return staff.login("door")


@pytest.fixture
def ticket_at_the_door(make, place_order, pay):
    """A paid order with two tickets for an event; returns (event_id, order)."""
    ticket = make.ticket(make.event(title="Door Night"), name="Floor")
    return ticket.event_id, pay(place_order(ticket, quantity=2))


def scan(client, event_id, code):
    return client.post(f"/console/events/{event_id}/checkin", json={"code": code})


def test_a_valid_ticket_is_checked_in_once(form_client, door, ticket_at_the_door, reload):
    event_id, order = ticket_at_the_door
    code = order.admissions[0].code

    first = scan(form_client, event_id, code)
    second = scan(form_client, event_id, code)

    assert first.status_code == 200
    body = first.get_json()
    assert (body["result"], body["ticket_type"], body["code"]) == ("ok", "Floor", code)
    assert (body["checked_in"], body["expected"]) == (1, 2)
    assert second.status_code == 409
    again = second.get_json()
    assert again["result"] == "already_checked_in" and again["checked_in_by"] == door.email
    assert again["checked_in_at"] == body["checked_in_at"]
    assert "Already checked in at" in again["message"] and door.email in again["message"]
    assert reload(order.admissions[0]).checked_in_by == door.id


def test_a_refunded_ticket_answers_void(form_client, door, ticket_at_the_door):
    event_id, order = ticket_at_the_door
    refund_order(order.id, "cancelled")

    response = scan(form_client, event_id, order.admissions[1].code)

    assert response.status_code == 409 and response.get_json()["result"] == "void"
    assert "Do not admit" in response.get_json()["message"]
    assert checkin_counts(event_id) == (0, 0)


def test_a_ticket_for_another_event_and_an_unknown_code(form_client, door, ticket_at_the_door, make):
    _, order = ticket_at_the_door
    elsewhere = make.event(title="Other Night")

    wrong = scan(form_client, elsewhere.id, order.admissions[0].code)
    unknown = scan(form_client, elsewhere.id, "0000000000000000")

    assert wrong.status_code == 409 and wrong.get_json()["result"] == "wrong_event"
    assert wrong.get_json()["other_event"] == "Door Night"
    assert unknown.status_code == 404 and unknown.get_json()["result"] == "unknown"
    assert db.session.query(Admission).filter(Admission.checked_in_at.isnot(None)).count() == 0


def test_a_scanned_ticket_url_or_a_lower_case_code_works(ticket_at_the_door):
    _, order = ticket_at_the_door
    code = order.admissions[0].code
    assert normalize_code(f"https://tickets.example.com/tickets/{code}") == code
    assert normalize_code(f"  {code.lower()}\n") == code
    assert normalize_code("x" * 600) == ""


def test_twenty_devices_scanning_one_ticket_at_once_admit_it_once(app, ticket_at_the_door, make):
    event_id, order = ticket_at_the_door
    code = order.admissions[0].code
    staff_ids = [make.user(email=f"door{n}@example.com", role="door").id for n in range(20)]
    start = threading.Barrier(20)
    answers = []

    def device(user_id):
        with app.app_context():
            start.wait()
            answers.append(check_in(event_id, code, Actor(user_id, f"door{user_id}")).result)
            db.session.remove()

    threads = [threading.Thread(target=device, args=(uid,)) for uid in staff_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(answers) == sorted([ScanResult.OK] + [ScanResult.ALREADY_CHECKED_IN] * 19)
    assert checkin_counts(event_id) == (1, 2)


def test_undo_is_audited_and_lets_the_ticket_in_again(form_client, door, ticket_at_the_door):
    event_id, order = ticket_at_the_door
    code = order.admissions[0].code
    scan(form_client, event_id, code)

    undone = form_client.post(f"/console/events/{event_id}/checkin/undo", json={"code": code})
    undone_again = form_client.post(f"/console/events/{event_id}/checkin/undo", json={"code": code})
    rescanned = scan(form_client, event_id, code)

    assert undone.status_code == 200 and undone.get_json() == {"undone": True, "checked_in": 0, "expected": 2}
    assert undone_again.status_code == 409 and undone_again.get_json()["undone"] is False
    assert rescanned.get_json()["result"] == "ok"
    undo = db.session.query(AuditEntry).filter_by(action="checkin.undo").one()
    assert (undo.actor_label, undo.target_id, undo.after) == (door.email, str(order.id), '{"checked_in_at": null}')


def test_the_page_works_without_script_and_answers_in_big_letters(form_client, door, ticket_at_the_door):
    event_id, order = ticket_at_the_door

    page = form_client.post(f"/console/events/{event_id}/checkin", data={"code": order.admissions[0].code})

    html = page.get_data(as_text=True)
    assert page.status_code == 200 and 'class="answer answer-ok"' in html and ">OK<" in html
    assert "Valid: checked in. Floor" in html and "1</span> checked in of" in html


def test_the_counts_endpoint(form_client, door, ticket_at_the_door):
    event_id, order = ticket_at_the_door
    scan(form_client, event_id, order.admissions[0].code)

    assert form_client.get(f"/console/events/{event_id}/checkin/counts").get_json() == {"checked_in": 1,
                                                                                       "expected": 2}


def test_bad_json_is_a_clear_400(form_client, door, ticket_at_the_door):
    event_id, _ = ticket_at_the_door
    for body in ({}, {"code": 12}, {"code": "  "}, ["code"]):
        response = form_client.post(f"/console/events/{event_id}/checkin", json=body)
        assert response.status_code == 400 and "code" in response.get_json()["error"]


def test_undo_of_a_ticket_of_another_event_does_nothing(ticket_at_the_door, make):
    event_id, order = ticket_at_the_door
    actor = Actor(None, "cli")
    check_in(event_id, order.admissions[0].code, actor)

    assert not undo_check_in(make.event().id, order.admissions[0].code, actor)
    assert checkin_counts(event_id) == (1, 2)
