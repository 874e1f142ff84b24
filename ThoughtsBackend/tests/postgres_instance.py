"""A private PostgreSQL server for tests that stop and start the database under the service.

The shared PostgreSQL at 127.0.0.1:5432 must never be stopped by a test, so fault tests
start their own: Debian's `initdb` and `pg_ctl` on a spare loopback port, with a data
directory of their own that is removed afterwards. PostgreSQL refuses to run as root, so
when the tests run as root the server runs as the `postgres` system user.

    with PostgresInstance.create() as server:
        url = server.url            # postgresql+psycopg://postgres@127.0.0.1:PORT/postgres
        server.stop()               # the database goes away (fast shutdown)
        server.start()              # and comes back, same port, same data
        server.freeze()             # every server process stopped (SIGSTOP): no answer, no refusal
        server.thaw()               # and running again (SIGCONT)

    with IsolatedLink.create() as link, PostgresInstance.create(link) as server:
        link.cut()                  # the server is unreachable: packets to it are dropped
        link.heal()
        link.delay(1)               # 1 ms more each way (netem): a host in the same zone

`missing_server()` and `IsolatedLink.missing()` say why these cannot run here, for a caller
outside pytest (the benchmark's latency group) that reports it instead of skipping.
"""

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from .support import cannot_run, postgresql_required
from .uwsgi_process import free_port, process_tree

SERVER_USER = "postgres"
START_TIMEOUT_SECONDS = 30


def postgresql_bin_dir() -> Path | None:
    """The newest Debian PostgreSQL's bin directory, or one on PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version_key)
    if candidates:
        return Path(candidates[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def _version_key(path: str) -> int:
    version = Path(path).parent.parent.name
    return int(version) if version.isdigit() else 0


def unavailable(reason: str):
    cannot_run(reason, required=postgresql_required())


def missing_user(program: str) -> str | None:
    """Why `program` has no user to run as (we are root and there is no `postgres`), or None."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        return f"running as root and there is no {SERVER_USER!r} user to run {program} as"
    return None


def missing_server() -> str | None:
    """Why PostgresInstance cannot start a server here, or None."""
    if postgresql_bin_dir() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
    return missing_user("PostgreSQL")


def unprivileged_user(program: str) -> str | None:
    """Whom to run `program` as: None (ourselves) unless we are root, which PostgreSQL and
    PgBouncer refuse to run as; then the `postgres` system user."""
    reason = missing_user(program)
    if reason:
        unavailable(reason)
    return SERVER_USER if os.geteuid() == 0 else None


class IsolatedLink:
    """A network namespace joined to this one by a veth pair: a host on the other end of a
    cable that a test can cut. Packets sent over a cut link are dropped without an error,
    as across a network partition: TCP learns of it only by its own timeouts.
    Needs root and iproute2 (`ip netns`; `tc` for a delay)."""

    def __init__(self, name: str, subnet: int):
        self.namespace = name
        self.host_device = f"{name}h"
        self.peer_device = f"{name}p"
        self.host_address = f"10.231.{subnet}.1"
        self.peer_address = f"10.231.{subnet}.2"

    @staticmethod
    def missing() -> str | None:
        """Why a link cannot be made here, or None."""
        if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"):
            return "a link to a network namespace needs root and iproute2 (`ip netns`, `tc`)"
        return None

    @classmethod
    @contextlib.contextmanager
    def create(cls):
        reason = cls.missing()
        if reason:
            cannot_run(reason, required=postgresql_required())
        link = cls(f"tb{os.getpid() % 100000}", os.getpid() % 250 + 1)
        try:
            link._ip("netns", "add", link.namespace)
            link._ip("link", "add", link.host_device, "type", "veth", "peer", "name", link.peer_device)
            link._ip("link", "set", link.peer_device, "netns", link.namespace)
            link._ip("addr", "add", f"{link.host_address}/30", "dev", link.host_device)
            link._ip("link", "set", link.host_device, "up")
            link._ip("addr", "add", f"{link.peer_address}/30", "dev", link.peer_device, namespace=True)
            link._ip("link", "set", "lo", "up", namespace=True)
            link.heal()
            yield link
        finally:
            # Deleting the namespace deletes its end of the pair, and with it ours.
            subprocess.run(["ip", "netns", "delete", link.namespace], capture_output=True, check=False)
            subprocess.run(["ip", "link", "delete", link.host_device], capture_output=True, check=False)

    def cut(self) -> None:
        self._ip("link", "set", self.peer_device, "down", namespace=True)

    def heal(self) -> None:
        self._ip("link", "set", self.peer_device, "up", namespace=True)

    def delay(self, milliseconds: float) -> None:
        """Hold every packet `milliseconds` longer in each direction (netem on both ends of
        the pair): a round trip over the link takes twice that more. Raises RuntimeError,
        with tc's reason, where the kernel has no netem (CONFIG_NET_SCH_NETEM), leaving
        neither end delayed."""
        ends = ((self.host_device, False), (self.peer_device, True))
        try:
            for device, namespace in ends:
                netem = ("qdisc", "add", "dev", device, "root", "netem", "delay", f"{milliseconds}ms")
                self._run("tc", *netem, namespace=namespace)
        except subprocess.CalledProcessError as error:
            for device, namespace in ends:
                with contextlib.suppress(subprocess.CalledProcessError):
                    self._run("tc", "qdisc", "del", "dev", device, "root", namespace=namespace)
            raise RuntimeError(f"tc refused netem: {error.stderr.strip()}") from error

    def command_prefix(self) -> list[str]:
        """Run a command on the other end."""
        return ["ip", "netns", "exec", self.namespace]

    def _ip(self, *arguments: str, namespace: bool = False) -> None:
        self._run("ip", *arguments, namespace=namespace)

    def _run(self, *command: str, namespace: bool = False) -> str:
        command = (*(self.command_prefix() if namespace else []), *command)
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout


class PostgresInstance:
    def __init__(
        self,
        bin_dir: Path,
        data_dir: Path,
        port: int,
        run_as: str | None,
        link: IsolatedLink | None = None,
    ):
        self.bin_dir = bin_dir
        self.data_dir = data_dir
        self.port = port
        self.run_as = run_as
        self.link = link
        self.host = link.peer_address if link else "127.0.0.1"
        self.log_file = data_dir.parent / "postgresql.log"
        self.frozen: list[int] = []

    @classmethod
    @contextlib.contextmanager
    def create(cls, link: IsolatedLink | None = None):
        """initdb a fresh cluster, start it (at the far end of `link` if given, else on
        127.0.0.1), and remove everything on exit."""
        reason = missing_server()
        if reason:
            unavailable(reason)
        bin_dir = postgresql_bin_dir()
        run_as = unprivileged_user("PostgreSQL")
        # Not under pytest's tmp_path: its parents are private to root, and the server
        # user must be able to reach its data directory.
        base = Path(tempfile.mkdtemp(prefix="thoughts-pg-"))
        base.chmod(0o755)
        data_dir = base / "data"
        data_dir.mkdir(mode=0o700)
        if run_as:
            shutil.chown(base, run_as)
            shutil.chown(data_dir, run_as)
        server = cls(bin_dir, data_dir, free_port(), run_as, link)
        try:
            server._run(
                "initdb",
                "--pgdata",
                str(data_dir),
                "--username",
                "postgres",
                "--auth",
                "trust",
                "--no-sync",
                "--no-instructions",
            )
            if link:
                # initdb trusts loopback clients only; ours come over the link, or from a
                # relay at its far end (the benchmark's latency group, without netem).
                with (data_dir / "pg_hba.conf").open("a") as rules:
                    for address in (link.host_address, link.peer_address):
                        rules.write(f"host all all {address}/32 trust\n")
            server.start()
            yield server
        finally:
            server.thaw()
            server.stop(mode="immediate", missing_ok=True)
            shutil.rmtree(base, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@{self.host}:{self.port}/postgres"

    def start(self) -> None:
        """Start and wait until it accepts connections (pg_ctl -w)."""
        options = (
            f"-c port={self.port} -c listen_addresses={self.host} "
            f"-c unix_socket_directories={self.data_dir} -c fsync=off"
        )
        self._run(
            "pg_ctl",
            "start",
            "--wait",
            f"--timeout={START_TIMEOUT_SECONDS}",
            "--pgdata",
            str(self.data_dir),
            "--log",
            str(self.log_file),
            "-o",
            options,
        )

    def stop(self, mode: str = "fast", missing_ok: bool = False) -> None:
        """Stop the server: 'fast' ends every session at once, 'immediate' is a crash."""
        if missing_ok and not (self.data_dir / "postmaster.pid").exists():
            return
        self._run("pg_ctl", "stop", "--wait", "--pgdata", str(self.data_dir), "--mode", mode)

    def freeze(self) -> None:
        """Stop every process of the server (SIGSTOP), the postmaster first so that it forks
        no new one. The kernel still accepts connections and acknowledges data for them:
        clients see no refusal, no reset, no TCP timeout; only silence."""
        postmaster = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGSTOP)
        self.frozen = sorted(process_tree(postmaster))
        for pid in self.frozen:
            with contextlib.suppress(ProcessLookupError):  # a backend that has just exited
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """Let the frozen processes run again (SIGCONT)."""
        for pid in self.frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.frozen = []

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def _run(self, program: str, *arguments: str) -> None:
        command = [str(self.bin_dir / program), *arguments]
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        if self.link:
            command = [*self.link.command_prefix(), *command]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if completed.returncode != 0:
            raise RuntimeError(
                f"{program} failed ({completed.returncode}): {completed.stderr.strip()}\n{self.log()}"
            )
