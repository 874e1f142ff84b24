"""Bring the database schema to the migrations' head (as `flask db upgrade` does); safe to run
on every start. wsgi.py runs this in uWSGI's master unless MIGRATE_ON_START is false."""

import os
import sys

import sqlalchemy as sa

from thoughts_backend.config import (
    ConfigError,
    database_url,
    gather_settings,
    postgresql_connect_args,
    transaction_pooler_setting,
)
from thoughts_backend.db import configure_sqlite
from thoughts_backend.schema import DatabaseIsNewer, upgrade_schema


def main() -> int:
    settings = gather_settings(os.environ)
    try:
        url = database_url(settings)
        transaction_pooler = transaction_pooler_setting(settings)
    except ConfigError as error:
        print(f"init_db: {error}", file=sys.stderr)
        return 2
    # The app's connect timeouts (what DATABASE_URL sets wins), so that a database that does
    # not answer fails this in seconds instead of holding uWSGI's master, at a start or a
    # reload, for ever. No statement timeout (0): a migration on a big table may take long.
    connect_args = (
        postgresql_connect_args(url, 0, transaction_pooler) if url.get_backend_name() == "postgresql" else {}
    )
    engine = sa.create_engine(url, connect_args=connect_args)
    configure_sqlite(engine, 5000)
    where = url.render_as_string(hide_password=True)
    try:
        upgrade_schema(engine)
    except sa.exc.OperationalError as error:
        print(f"init_db: cannot use the database at {where}: {error.orig}", file=sys.stderr)
        return 1
    except sa.exc.DBAPIError as error:
        # A migration the database refused (an object made by hand in its way, a missing
        # privilege): its transaction is rolled back, and the start stops with the reason.
        print(f"init_db: cannot migrate the database at {where}: {error.orig}", file=sys.stderr)
        return 1
    except DatabaseIsNewer as error:
        # A rollback to this release during or after a rolling update: expand-then-contract
        # (README) keeps a newer schema readable by the release before it.
        print(f"init_db: {error}; serving it without migrating", file=sys.stderr)
        return 0
    finally:
        engine.dispose()
    print(f"init_db: schema ready in {where}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
