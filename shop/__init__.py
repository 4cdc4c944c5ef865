"""The ticket shop: ``create_app`` is the only way an application is made."""
import logging
import os

from flask import Flask

from .config import load_config
from .extensions import csrf, db, limiter, login_manager, migrate


def create_app(test_config=None):
    """Build the app from the environment (or ``test_config`` layered on top of it).

    Raises ``config.ConfigError`` for a missing or malformed setting. Starts nothing:
    the SQS poller, the sweeper and the mail sender are started by the server (``gunicorn.conf.py``,
    ``flask run``) or the ``flask shop poll`` command, never at import time.
    """
    app = Flask(__name__, instance_relative_config=True,
                template_folder="../templates", static_folder="../static")
    app.config.update(load_config(instance_path=app.instance_path))
    if test_config:
        app.config.update(test_config)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///"):
        os.makedirs(app.instance_path, exist_ok=True)
    init_logging()

    db.init_app(app)
    from .ops.greenlets import database_outside_the_loop
    with app.app_context():
        database_outside_the_loop(db.engine)
    migrate.init_app(app, db, directory=os.path.join(os.path.dirname(app.root_path), "migrations"))
    login_manager.init_app(app)
    csrf.init_app(app)
    limiter.init_app(app)

    from . import errors, models, security  # noqa: F401  (models registers the tables with SQLAlchemy and Alembic)
    from .services import accounts
    security.init_app(app)
    errors.init_app(app)
    accounts.init_app(app)
    from . import payments
    payments.init_app(app)

    from .account import bp as account_bp
    from .catalog import bp as catalog_bp
    from .checkout import bp as checkout_bp
    from .console import bp as console_bp
    from .delivery.webhook import bp as webhook_bp
    from .ops import bp as ops_bp
    from .tickets import bp as tickets_bp
    for bp in (catalog_bp, checkout_bp, account_bp, tickets_bp, console_bp, webhook_bp, ops_bp):
        app.register_blueprint(bp)
    if app.config["STRIPE"].sandbox:
        from .payments.sandbox import bp as sandbox_bp
        app.register_blueprint(sandbox_bp)

    from .templating import init_template_helpers
    init_template_helpers(app)

    from .cli import shop_cli
    app.cli.add_command(shop_cli)

    @app.context_processor
    def shop_globals():
        return {"sandbox_payments": app.config["STRIPE"].sandbox}

    return app


def init_logging():
    """INFO to stderr unless the server configured logging already; libraries that log secrets or noise kept quiet."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("botocore").setLevel(logging.WARNING)  # not "Found credentials…" on every start
    # The stripe library logs every API request at INFO (URLs with ids, and more with debug on): warnings only.
    logging.getLogger("stripe").setLevel(logging.WARNING)
