"""Debian's PgBouncer, started by a test (never as the system service) in transaction mode.

    with PgBouncer.create("127.0.0.1", 5432, pool_size=2) as bouncer:
        url = bouncer.url_for(postgresql_url)   # the same database and user, through PgBouncer
        bouncer.stop()                          # every client connection closed (SIGTERM)
        bouncer.start()                         # and back, same port

It forwards every database name to the PostgreSQL at host:port (a `*` entry), as the
client's user, without a password (the test servers trust loopback). `pool_size` server
connections per database and user, however many clients: a pool smaller than the service's
workers makes them share, transaction by transaction, as many pods share one PgBouncer.
It refuses to run as root, so under root it runs as the `postgres` system user.
"""

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import sqlalchemy as sa

from .postgres_instance import unprivileged_user
from .support import cannot_run, postgresql_required, wait_for
from .uwsgi_process import free_port

START_TIMEOUT_SECONDS = 30

CONFIG = """\
[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
pidfile = {directory}/pgbouncer.pid
auth_type = trust
auth_file = {directory}/users.txt
pool_mode = transaction
default_pool_size = {pool_size}
reserve_pool_size = 0
max_client_conn = 500
; No startup parameter is ignored: one it does not know (`options`) is refused, as by default.
ignore_startup_parameters =
"""


def pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )


class PgBouncer:
    def __init__(self, binary: str, directory: Path, run_as: str | None):
        self.binary = binary
        self.directory = directory
        self.run_as = run_as
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.log_file = directory / "pgbouncer.log"

    @classmethod
    @contextlib.contextmanager
    def create(cls, server_host: str, server_port: int, pool_size: int = 2):
        binary = pgbouncer_binary()
        if binary is None:
            cannot_run(
                "pgbouncer is not installed (Debian: apt-get install pgbouncer)",
                required=postgresql_required(),
            )
        run_as = unprivileged_user("PgBouncer")
        directory = Path(tempfile.mkdtemp(prefix="thoughts-pgbouncer-"))
        bouncer = cls(binary, directory, run_as)
        (directory / "pgbouncer.ini").write_text(
            CONFIG.format(
                host=server_host,
                port=server_port,
                listen_port=bouncer.port,
                directory=directory,
                pool_size=pool_size,
            )
        )
        # auth_type trust still needs each user listed.
        (directory / "users.txt").write_text('"postgres" ""\n"root" ""\n')
        if run_as:
            for path in (directory, *directory.iterdir()):
                shutil.chown(path, run_as)
        try:
            bouncer.start()
            yield bouncer
        finally:
            bouncer.stop()
            shutil.rmtree(directory, ignore_errors=True)

    def url_for(self, url: str) -> str:
        """`url` (a PostgreSQL URL) with PgBouncer's address instead of the server's."""
        return sa.make_url(url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def start(self) -> None:
        """Start in the foreground (a child of the test) and wait until it accepts connections."""
        log = self.log_file.open("ab")
        self.process = subprocess.Popen(
            [self.binary, str(self.directory / "pgbouncer.ini")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            user=self.run_as,
            group=self.run_as,
            extra_groups=[] if self.run_as else None,
        )
        log.close()
        wait_for(
            self._accepts, START_TIMEOUT_SECONDS, f"PgBouncer listening on {self.port}", details=self.log
        )

    def stop(self) -> None:
        """Stop at once (SIGTERM, PgBouncer 1.18's immediate shutdown): every client
        connection is closed, in a transaction or not."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def _accepts(self) -> bool:
        assert self.process.poll() is None, f"PgBouncer exited:\n{self.log()}"
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True
