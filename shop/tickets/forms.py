from flask_wtf import FlaskForm
from wtforms import EmailField
from wtforms.validators import Email, InputRequired, Length


class LookupForm(FlaskForm):
    email = EmailField("Email you bought with", validators=[
        InputRequired("Enter your email address."), Length(max=255),
        Email("Enter a valid email address.", check_deliverability=False)])
