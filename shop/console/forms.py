"""The console's forms (Flask-WTF, CSRF on every post). Times are typed as ISO 8601, as the CLI takes them:
with an offset (``2027-03-01T19:30+01:00``), or without one, meaning the event's local time."""
from datetime import datetime

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DecimalField,
    HiddenField,
    IntegerField,
    RadioField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length, NumberRange, Optional
from wtforms.widgets import CheckboxInput, ListWidget


class LocalDateTimeField(StringField):
    """An ISO 8601 date and time as typed (``data``: a datetime or None): without an offset it is local to
    the event's zone. The route turns it into stored time (naive UTC) with ``shop.timezones.to_utc``, and
    fills it with local time (``to_local``) when it shows a stored one."""

    def _value(self):
        if self.raw_data:
            return self.raw_data[0]
        return self.data.strftime("%Y-%m-%dT%H:%M") if self.data else ""

    def process_formdata(self, valuelist):
        text = (valuelist[0] if valuelist else "").strip()
        self.data = None
        if text:
            try:
                self.data = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"{text!r} is not an ISO 8601 date and time, e.g. 2027-03-01T19:30 or "
                                 "2027-03-01T19:30+01:00") from None


class EventForm(FlaskForm):
    title = StringField("Title", validators=[InputRequired(), Length(max=200)])
    venue = StringField("Venue", validators=[InputRequired(), Length(max=200)])
    starts_at = LocalDateTimeField("Starts at (ISO 8601, local time unless an offset is given)",
                                   validators=[InputRequired("Say when the event starts.")])
    timezone = StringField("Time zone (IANA, e.g. Europe/Berlin; empty: the shop's)",
                           validators=[Optional(), Length(max=64)])
    description = TextAreaField("Description", validators=[Optional(), Length(max=10000)])
    attendee_names = SelectField("Names on tickets", default="none", choices=[
        SelectChoice("none", "No names"), SelectChoice("optional", "Names optional"),
        SelectChoice("required", "A name required on every ticket")])


class TicketTypeForm(FlaskForm):
    name = StringField("Name", validators=[InputRequired(), Length(max=120)])
    price = DecimalField("Price", places=2, validators=[InputRequired("Give a price, e.g. 20.00."),
                                                        NumberRange(min=0)])
    capacity = IntegerField("Capacity", validators=[InputRequired("Give the number of seats."),
                                                    NumberRange(min=0, max=1_000_000)])
    on_sale_from = LocalDateTimeField("On sale from (the event's local time; empty: now)")
    on_sale_until = LocalDateTimeField("On sale until (the event's local time; empty: until the event starts)")
    hidden = BooleanField("Hidden from the public")


class QuotaForm(FlaskForm):
    """A limit shared by ticket types; which types it spans is chosen when it is made and fixed after."""
    name = StringField("Name", validators=[InputRequired(), Length(max=120)])
    capacity = IntegerField("Capacity", validators=[InputRequired("Give the number of seats."),
                                                    NumberRange(min=0, max=1_000_000)])
    ticket_ids = SelectMultipleField("Ticket types it spans (none: all of them, an event-wide capacity)", coerce=int,
                                     choices=[], widget=ListWidget(prefix_label=False), option_widget=CheckboxInput())


class DiscountForm(FlaskForm):
    code = StringField("Code", validators=[InputRequired(), Length(max=64)])
    kind = RadioField("Kind", choices=[SelectChoice("percent", "Percent off"),
                                                 SelectChoice("amount", "Amount off")], default="percent")
    value = StringField("Percent or amount off", validators=[InputRequired(), Length(max=20)])
    max_uses = IntegerField("Most uses (empty: no limit)", validators=[Optional(), NumberRange(min=1)])
    event_id = SelectField("For event", coerce=int, default=0)
    valid_from = LocalDateTimeField("Valid from (the shop's time zone; empty: now)")
    valid_until = LocalDateTimeField("Valid until (the shop's time zone; empty: always)")


class RefundForm(FlaskForm):
    amount = StringField("Amount (empty: everything not yet refunded)", validators=[Optional(), Length(max=20)])
    reason = StringField("Reason", validators=[Optional(), Length(max=200)])
    # Made when the page is drawn: a double click sends the same key twice and refunds once.
    request_key = HiddenField(validators=[InputRequired(), Length(min=8, max=64)])
    void_tickets = SelectMultipleField("Void these tickets too", coerce=int, choices=[],
                                       widget=ListWidget(prefix_label=False), option_widget=CheckboxInput())


class ConfirmForm(FlaskForm):
    """A button that changes something: only the CSRF token travels."""


class ResolveForm(FlaskForm):
    note = StringField("What was done", validators=[InputRequired("Say what was done."), Length(max=400)])


class CheckinForm(FlaskForm):
    code = StringField("Ticket code", validators=[InputRequired("Type or scan a code."), Length(max=512)])
