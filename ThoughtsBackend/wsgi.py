"""The app as uWSGI serves it: its master imports this once, then forks the workers from it.

The settings are checked, then the schema made ready (as `python init_db.py` does), in
this one process, so a start pays for the imports once. A setting or a database that
cannot be used stops the start with one sentence: uWSGI exits with status 2 (a setting)
or 1 (the database).
"""

import gc
import sys

import init_db

from thoughts_backend import create_app
from thoughts_backend.config import ConfigError

try:
    application = create_app()
except ConfigError as error:
    print(f"wsgi: {error}", file=sys.stderr)
    sys.exit(2)
status = init_db.main()
if status:
    sys.exit(status)

# The workers share this process's memory until they write to it, and a garbage
# collection writes to every object it examines: keep what is loaded now out of the
# workers' collections, so those pages stay shared.
gc.freeze()
