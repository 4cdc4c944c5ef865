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


class EmailForm(FlaskForm):
    """One address: where to send a password-reset link."""
    email = EmailField("Email", validators=[InputRequired("Enter your email address."), Length(max=255),
                                            Email("Enter a valid email address.", check_deliverability=False)])


class NewPasswordForm(FlaskForm):
    password = PasswordField("New password", validators=[InputRequired(),
                                                         Length(min=8, max=200, message="Use at least 8 characters.")])
    confirm = PasswordField("Repeat the new password",
                            validators=[EqualTo("password", message="The passwords differ.")])
