"""The ticket shop: ``create_app`` is the only way an application is made."""
import logging
import os

from flask import Flask, render_template
from flask_wtf.csrf import CSRFError

from .config import load_config
from .extensions import csrf, db, login_manager, migrate


def create_app(test_config=None):
    """Build the app from the environment (or ``test_config`` layered on top of it).

    Raises ``config.ConfigError`` for a missing or malformed setting. Starts nothing:
    the SQS poller and the sweeper are started by the server (``gunicorn.conf.py``,
    ``flask run``) or the ``flask shop poll`` command, never at import time.
    """
    app = Flask(__name__, instance_relative_config=True,
                template_folder="../templates", static_folder="../static")
    app.config.update(load_config(instance_path=app.instance_path))
    if test_config:
        app.config.update(test_config)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///"):
        os.makedirs(app.instance_path, exist_ok=True)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("botocore").setLevel(logging.WARNING)  # not "Found credentials…" on every start

    db.init_app(app)
    migrate.init_app(app, db, directory=os.path.join(os.path.dirname(app.root_path), "migrations"))
    login_manager.init_app(app)
    csrf.init_app(app)

    from . import (
        models,  # noqa: F401  (registers the tables with SQLAlchemy and Alembic)
        payments,
    )
    payments.init_app(app)

    from .account import bp as account_bp
    from .catalog import bp as catalog_bp
    from .checkout import bp as checkout_bp
    from .delivery.webhook import bp as webhook_bp
    from .ops import bp as ops_bp
    for bp in (catalog_bp, checkout_bp, account_bp, webhook_bp, ops_bp):
        app.register_blueprint(bp)
    if app.config["STRIPE"].sandbox:
        from .payments.sandbox import bp as sandbox_bp
        app.register_blueprint(sandbox_bp)

    from .templating import init_template_helpers
    init_template_helpers(app)

    from .cli import shop_cli
    app.cli.add_command(shop_cli)

    @app.errorhandler(404)
    def not_found(error):
        return render_template("errors/404.html"), 404

    @app.errorhandler(400)
    def bad_request(error):
        return render_template("errors/400.html", error=error.description), 400

    @app.errorhandler(CSRFError)
    def csrf_failed(error):
        return render_template("errors/400.html", error="Your form expired or was sent from elsewhere. "
                               "Please reload the page and try again."), 400

    @app.context_processor
    def shop_globals():
        return {"sandbox_payments": app.config["STRIPE"].sandbox}

    return app
