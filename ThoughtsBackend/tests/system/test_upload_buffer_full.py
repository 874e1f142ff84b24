"""The fastrouter's files for large bodies (TMPDIR) on a filesystem that fills: the upload
being written is closed, the rest of the service goes on, and the space comes back.

uwsgi.ini's fastrouter writes a body over fastrouter-post-buffering (128 KiB) to a deleted
file in TMPDIR as it arrives. Given a size-limited TMPDIR (docs/reliability.md: docker run
--tmpfs, Kubernetes' in-memory emptyDir), that size bounds the disk all uploads can use.
"""

import json
import shutil

import pytest

from ..support import wait_for
from ..uwsgi_process import ServedApp
from .faults import (
    tmpfs,
)
from .uploads import MiB, post, thought_of_size

pytestmark = pytest.mark.faults


def test_a_full_buffer_directory_fails_only_the_upload_being_written(tmp_path, public_key_file, make_token):
    token = make_token("uploader")
    with tmpfs(tmp_path / "bodies", "16m") as bodies:
        env = {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "PUBLIC_KEY_FILE": str(public_key_file),
            "TMPDIR": str(bodies),
        }
        with ServedApp(env) as app:
            # Fits: buffered, then answered.
            assert post(app, token, thought_of_size(8 * MiB))[0] == 413
            # Does not fit in 16 MiB: closed while being written, without an answer.
            assert isinstance(post(app, token, thought_of_size(32 * MiB)), str)
            assert "fr_recv_uwsgi_vars()/write()" in app.output
            # Small bodies are held in memory; large ones fit again once the file is gone.
            assert post(app, token, json.dumps({"text": "still here"}).encode())[0] == 201
            assert post(app, token, thought_of_size(8 * MiB))[0] == 413
            wait_for(lambda: shutil.disk_usage(bodies).used == 0, 5, "the buffered bodies' space freed")
