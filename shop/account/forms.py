from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, ValidationError
from wtforms.validators import Email, EqualTo, InputRequired, Length


class RegisterForm(FlaskForm):
    email = EmailField("Email", validators=[InputRequired(), Length(max=255), Email(check_deliverability=False)])
    password = PasswordField("Password", validators=[InputRequired(),
                                                     Length(min=8, max=200, message="Use at least 8 characters.")])
    confirm = PasswordField("Repeat the password", validators=[EqualTo("password", message="The passwords differ.")])

    def validate_email(self, field):
        # Stored lower-cased, which lengthens some letters ("İ" becomes two characters): the column holds 255.
        if len(field.data.strip().lower()) > 255:
            raise ValidationError("That email is too long.")


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[InputRequired(), Length(max=255)])
    password = PasswordField("Password", validators=[InputRequired(), Length(max=200)])
