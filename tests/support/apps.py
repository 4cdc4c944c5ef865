"""Test databases on MariaDB, and shop apps built from an environment as a process would build them.

``TEST_DATABASE_URL`` names the server (default: the local MariaDB as root); the tests create
their own databases on it, and only the migrations build their schema.
"""
import os

import pymysql
import sqlalchemy as sa
from flask_migrate import upgrade

from shop import create_app
from shop.extensions import db

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "mysql+pymysql://root@127.0.0.1:3306/shop_test")


def database_url(name):
    """The URL of a secondary database on the test server, named after ``TEST_DATABASE_URL``'s own
    (``shop_test`` → ``shop_test__sandbox``), so runs with different ``TEST_DATABASE_URL`` never collide."""
    base = sa.make_url(TEST_DATABASE_URL)
    return base.set(database=f"{base.database}__{name}").render_as_string(hide_password=False)


def create_database(url):
    """Drop and create the database ``url`` names (utf8mb4), connecting to the server without one."""
    parts = sa.make_url(url)
    conn = pymysql.connect(host=parts.host or "127.0.0.1", port=parts.port or 3306, user=parts.username or "root",
                           password=parts.password or "", unix_socket=parts.query.get("unix_socket"))
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{parts.database}`")
        cur.execute(f"CREATE DATABASE `{parts.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    conn.close()


def app_from_environment(env, test_config=None):
    """``create_app`` as a process started with ``env`` (on top of the current environment) would run it."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return create_app(test_config)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def app_on_new_database(env, test_config=None):
    """An app on a freshly created database (``env["DATABASE_URL"]``) whose schema the migrations built."""
    create_database(env["DATABASE_URL"])
    app = app_from_environment(env, test_config)
    with app.app_context():
        upgrade()
    return app


def empty_tables(app):
    """Delete every row of ``app``'s database."""
    with app.app_context():
        db.session.remove()
        with db.engine.begin() as conn:
            conn.execute(sa.text("SET FOREIGN_KEY_CHECKS = 0"))
            for table in reversed(db.metadata.sorted_tables):
                conn.execute(table.delete())
            conn.execute(sa.text("SET FOREIGN_KEY_CHECKS = 1"))
