from flask_wtf import FlaskForm
from wtforms import EmailField, IntegerField, StringField
from wtforms.validators import Email, InputRequired, Length, NumberRange, Optional


class CheckoutForm(FlaskForm):
    """The per-ticket-type buy form. CSRF is checked by the route (JSON callers have none)."""

    class Meta:
        csrf = False

    quantity = IntegerField("Quantity", validators=[InputRequired("Say how many tickets you want."),
                                                    NumberRange(min=1, message="Choose at least one ticket.")])
    email = EmailField("Email", validators=[InputRequired("Enter your email address."), Length(max=255),
                                            Email("Enter a valid email address.", check_deliverability=False)])
    discount_code = StringField("Discount code", validators=[Optional(), Length(max=64)])


class OrderForm(FlaskForm):
    """The event page's one-order form: the email and code; the quantities come as ``qty-<ticket_id>`` fields."""

    class Meta:
        csrf = False

    email = EmailField("Email", validators=[InputRequired("Enter your email address."), Length(max=255),
                                            Email("Enter a valid email address.", check_deliverability=False)])
    discount_code = StringField("Discount code", validators=[Optional(), Length(max=64)])
