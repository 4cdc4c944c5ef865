"""Flask extensions, created unbound here and bound to the app in ``create_app``."""
from flask import current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect

db = SQLAlchemy()
migrate = Migrate()
login_manager = LoginManager()
login_manager.login_view = "account.login"
login_manager.login_message = "Please log in to see that page."
csrf = CSRFProtect()
# Keyed by the client's address: request.remote_addr, which shop.security.TrustedProxies has already
# taken from X-Forwarded-For when our own proxy sent the request. Limits are named settings
# (SHOP_LIMIT_*), applied with shop.security.rate_limit; storage and on/off are RATELIMIT_* settings.
limiter = Limiter(key_func=get_remote_address)


@limiter.request_filter
def _limits_switched_off():
    # One Limiter serves every app of the process and Flask-Limiter keeps "enabled" on the instance,
    # so each app's own RATELIMIT_ENABLED is honoured here (tests build apps with and without limits).
    return not current_app.config.get("RATELIMIT_ENABLED", True)
