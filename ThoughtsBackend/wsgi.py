"""The app as uWSGI serves it: its master imports this, then forks the workers from it.

Under uWSGI, the settings are checked, then the schema brought to the migrations' head (as
`python init_db.py` and `flask db upgrade` do; not with MIGRATE_ON_START=false, for a
deployment that migrates in a step of its own), in this one process, so a start pays for
the imports once. At a first start, a
setting or a database that cannot be used stops it with one sentence: uWSGI exits with
status 2 (a setting) or 1 (the database). A reload (`r` on the master FIFO) imports this
again: with the database away then, the service goes on, answering 503 until it is back.
Any other importer (`flask create-token` with FLASK_APP=wsgi, a test) gets the app only.
"""

import gc
import sys

# No garbage collection while the app loads: the imports make some hundred thousand
# objects, nearly all kept, and the collections they set off would examine them again and
# again for almost nothing (a tenth of the start, measured: docs/performance.md). Turned
# back on below, once gc.freeze() has set what is loaded aside.
gc.disable()

from thoughts_backend.app import create_app  # noqa: E402 (after gc.disable, on purpose)
from thoughts_backend.config import ConfigError  # noqa: E402

try:
    import uwsgi  # only there inside uWSGI
except ImportError:
    uwsgi = None

try:
    application = create_app()
except ConfigError as error:
    print(f"wsgi: {error}", file=sys.stderr)
    sys.exit(2)

if uwsgi is not None and application.config["MIGRATE_ON_START"]:
    import init_db

    status = init_db.main()
    if status and not uwsgi.is_a_reload:
        sys.exit(status)
    if status:
        print("wsgi: reloaded without the database: answering 503 until it is back", file=sys.stderr)

# The workers share this process's memory until they write to it, and a garbage
# collection writes to every object it examines: keep what is loaded now out of the
# workers' collections, so those pages stay shared.
gc.freeze()
gc.enable()
