"""A throwaway real PostgreSQL server for tests: ``initdb`` into a temp directory, then gone.

``running_postgres_server`` creates a fresh cluster in a new temporary directory (``initdb``,
UTF8, C locale, no fsync), starts it with ``pg_ctl`` listening only on 127.0.0.1 on a free port
and on a unix socket inside that directory, waits until it accepts connections, creates a
login role with a password (and ``CREATEDB``) and a database owned by it, and yields a
``PostgresServer``. Afterwards it always stops the server (``pg_ctl stop -m immediate``, then
SIGKILL of the postmaster if that did not work) and removes the directory.

Authentication: the bootstrap superuser ``postgres`` may only connect over the unix socket
(``trust``, used to create the role and databases); TCP connections need the password
(``scram-sha-256``), so the URLs the tests hand to Optuna and MLflow use real credentials.

Running as root: ``initdb`` and ``postgres`` refuse to run as root. The server then runs as an
unprivileged system user (``$PGTEST_RUN_AS``, else ``postgres``, which Debian's
``postgresql-common`` creates, else ``nobody``): the temporary directory (mode 0700, in a parent
that user can traverse: the system temp dir, else /tmp) is chowned to that user, and every
server binary is started with Python's ``subprocess`` ``user=`` / ``group=`` /
``extra_groups=[]`` (setreuid/setregid in the child: no sudo, runuser or PAM involved).

Binaries: ``$PG_BINDIR`` if set, else ``pg_config --bindir``, else the newest
``/usr/lib/postgresql/<version>/bin`` (Debian, Ubuntu), else ``initdb`` on ``PATH``. When none
is found, the ``postgres_server`` fixture *fails* (a skipped database test would be a silent
hole) and says how to install them: ``scripts/ensure_postgres.sh``.

Start-up on a 2-core machine: 0.6 to 1.3 s (``initdb`` 0.5 to 0.9 s of it), so one server per
session is cheap; give each test its own database with ``create_database``.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mlops_assets_tests.helpers import free_port

if TYPE_CHECKING:
    from psycopg2.extensions import connection as Connection

HOST = "127.0.0.1"
SUPERUSER = "postgres"
"""The bootstrap superuser of the throwaway cluster (unix socket only, no password)."""
SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
INSTALL_HINT = (
    "Install them with `scripts/ensure_postgres.sh` (on Debian/Ubuntu it runs "
    "`apt-get install -y --no-install-recommends postgresql`), or point $PG_BINDIR at a "
    "directory holding initdb, pg_ctl and postgres (e.g. /usr/lib/postgresql/15/bin)."
)
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_PORT_IN_USE = ("could not bind", "address already in use")


class PostgresUnavailableError(RuntimeError):
    """The PostgreSQL server binaries are missing (the message says how to install them)."""


class PostgresServerError(RuntimeError):
    """The server could not be created or started; the message carries its log."""


@dataclass(frozen=True)
class PostgresServer:
    """A running throwaway PostgreSQL server and the credentials of its test role."""

    host: str
    port: int
    user: str
    """A login role with ``CREATEDB`` (not a superuser), owner of every database made here."""
    password: str
    database: str
    """The database created at start-up (owned by ``user``)."""
    socket_dir: Path
    data_dir: Path
    log_path: Path
    bin_dir: Path
    version: str
    run_as: str | None
    """The system user the server runs as (None: the current user)."""
    initdb_seconds: float
    startup_seconds: float
    """Wall time from ``initdb`` to the role and database existing (initdb included)."""

    def url(self, database: str | None = None, driver: str = "psycopg2") -> str:
        """SQLAlchemy URL ``postgresql+psycopg2://user:password@127.0.0.1:PORT/database``."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        name = database or self.database
        return f"{scheme}://{self.user}:{self.password}@{self.host}:{self.port}/{name}"

    def connect(self, database: str | None = None, superuser: bool = False) -> Connection:
        """A psycopg2 connection: as the test role over TCP, or as the superuser (socket).

        The caller closes it (``contextlib.closing``); ``with connection:`` only ends a
        transaction.
        """
        import psycopg2

        if superuser:
            return psycopg2.connect(
                host=str(self.socket_dir),
                port=self.port,
                user=SUPERUSER,
                dbname=database or self.database,
                connect_timeout=10,
            )
        return psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=database or self.database,
            sslmode="disable",
            connect_timeout=10,
        )

    def query(
        self,
        sql: str,
        params: Sequence[Any] = (),
        database: str | None = None,
        superuser: bool = False,
    ) -> list[tuple[Any, ...]]:
        """Rows of one statement, as the test role (or the superuser), for assertions."""
        connection = self.connect(database, superuser=superuser)
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return list(cursor.fetchall())
        finally:
            connection.close()

    def create_database(self, name: str) -> str:
        """Create database ``name`` (lower-case identifier) owned by the test role; its URL."""
        _create_database(self.connect(database="postgres", superuser=True), name, self.user)
        return self.url(name)


# --- finding the binaries and the user to run them as -------------------------------------------


def _has_server_binaries(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in SERVER_BINARIES)


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))


def find_bin_dir() -> Path:
    """The directory of ``initdb``, ``pg_ctl`` and ``postgres`` (see the module docstring)."""
    explicit = os.environ.get("PG_BINDIR")
    if explicit:
        if _has_server_binaries(Path(explicit)):
            return Path(explicit)
        raise PostgresUnavailableError(
            f"$PG_BINDIR={explicit} does not hold executable {', '.join(SERVER_BINARIES)}. "
            + INSTALL_HINT
        )
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:  # also installed by libpq-dev alone, without any server: check, don't trust
        with suppress(OSError, subprocess.SubprocessError):
            result = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            candidates.append(Path(result.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for candidate in candidates:
        if _has_server_binaries(candidate):
            return candidate
    raise PostgresUnavailableError(
        f"PostgreSQL server binaries ({', '.join(SERVER_BINARIES)}) not found (looked in "
        f"{', '.join(map(str, candidates)) or 'pg_config --bindir, /usr/lib/postgresql/*/bin'} "
        "and PATH). Tests that need a real PostgreSQL server cannot run. " + INSTALL_HINT
    )


def server_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run the server as when we are root (None: not root)."""
    if os.geteuid() != 0:
        return None
    names = [os.environ["PGTEST_RUN_AS"]] if os.environ.get("PGTEST_RUN_AS") else []
    names += ["postgres", "nobody"]
    for name in names:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        if entry.pw_uid != 0:
            return entry
    raise PostgresServerError(
        f"Running as root, and none of the users {names} exists to run PostgreSQL as "
        "(initdb and postgres refuse to run as root): create one, e.g. "
        "`useradd --system --no-create-home pgtest`, and set PGTEST_RUN_AS=pgtest"
    )


def _reachable_by(directory: Path, user: pwd.struct_passwd) -> bool:
    """Whether ``user`` can traverse every ancestor of ``directory`` (by the 'other' bits)."""
    for part in [directory, *directory.parents]:
        mode = part.stat()
        if mode.st_uid != user.pw_uid and not mode.st_mode & stat.S_IXOTH:
            return False
    return True


def _make_base_dir(user: pwd.struct_passwd | None) -> Path:
    """A fresh private temp directory, owned by ``user`` when the server runs as someone else."""
    parent = Path(os.environ.get("PGTEST_TMPDIR") or tempfile.gettempdir()).resolve()
    if user is not None and not _reachable_by(parent, user):
        parent = Path("/tmp")  # e.g. TMPDIR under /root: the server user could not get in
    base = Path(tempfile.mkdtemp(prefix="pgtest-", dir=parent))
    if user is not None:
        os.chown(base, user.pw_uid, user.pw_gid)
    return base


# --- running the binaries -----------------------------------------------------------------------


def _child_env(base: Path) -> dict[str, str]:
    """The environment of a server binary: no inherited PG* settings, C locale, HOME=base."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(HOME=str(base), LC_ALL="C", LANG="C")
    return env


def _run(
    command: Sequence[str | Path],
    base: Path,
    user: pwd.struct_passwd | None,
    timeout: float,
) -> subprocess.CompletedProcess[str]:
    """Run a server binary (as ``user`` when given), capturing its output; never raises."""
    identity: dict[str, Any] = {}
    if user is not None:
        identity = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    try:
        return subprocess.run(
            [str(part) for part in command],
            cwd=base,
            env=_child_env(base),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **identity,
        )
    except subprocess.TimeoutExpired as error:
        output = f"{error.stdout or ''}{error.stderr or ''}"
        return subprocess.CompletedProcess(list(map(str, command)), -1, output, "timed out")


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return f"{result.stdout or ''}{result.stderr or ''}".strip()


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _configure(data_dir: Path, socket_dir: Path, port: int) -> None:
    """Append the test settings to postgresql.conf (later lines win)."""
    settings = {
        "listen_addresses": f"'{HOST}'",
        "port": str(port),
        "unix_socket_directories": f"'{socket_dir}'",
        "unix_socket_permissions": "0700",
        # throwaway data: never wait for the disk
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "100",
        "shared_buffers": "32MB",
        "max_wal_size": "256MB",
        "log_min_messages": "warning",
        "password_encryption": "'scram-sha-256'",
    }
    with (data_dir / "postgresql.conf").open("a") as conf:
        conf.write("\n# mlops_assets_tests.postgres\n")
        conf.writelines(f"{key} = {value}\n" for key, value in settings.items())


def _stop(bin_dir: Path, data_dir: Path, base: Path, user: pwd.struct_passwd | None) -> None:
    """``pg_ctl stop -m immediate``; SIGKILL the postmaster if it is still there after that."""
    result = _run(
        [bin_dir / "pg_ctl", "stop", "-D", data_dir, "-m", "immediate", "-w", "-t", "30"],
        base,
        user,
        timeout=40,
    )
    pid_file = data_dir / "postmaster.pid"
    if result.returncode != 0 and pid_file.exists():
        with suppress(OSError, ValueError, IndexError):
            os.kill(int(pid_file.read_text().splitlines()[0]), signal.SIGKILL)


def _create_database(superuser: Connection, name: str, owner: str) -> None:
    from psycopg2 import sql

    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"database name {name!r}: use a lower-case identifier ([a-z_][a-z0-9_]*)")
    try:
        superuser.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with superuser.cursor() as cursor:
            cursor.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(owner)
                )
            )
    finally:
        superuser.close()


def _wait_until_accepting(socket_dir: Path, port: int, timeout: float) -> None:
    """Until a real connection (as the superuser over the socket) succeeds."""
    import psycopg2

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg2.connect(
                host=str(socket_dir), port=port, user=SUPERUSER, dbname="postgres"
            ).close()
            return
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def running_postgres_server(
    *,
    database: str = "test",
    user: str = "tester",
    password: str | None = None,
    timeout_seconds: float = 60.0,
    port_attempts: int = 3,
) -> Iterator[PostgresServer]:
    """Run a throwaway PostgreSQL server until the block exits (see the module docstring).

    Raises ``PostgresUnavailableError`` when the binaries are missing and
    ``PostgresServerError`` (with the server's output) when it cannot be created or started.
    """
    import psycopg2
    from psycopg2 import sql

    if not _IDENTIFIER.fullmatch(user):
        raise ValueError(f"role name {user!r}: use a lower-case identifier")
    bin_dir = find_bin_dir()
    run_as = server_user()
    password = password or secrets.token_hex(16)
    started = time.monotonic()
    base = _make_base_dir(run_as)
    data_dir = base / "data"
    log_path = base / "postgres.log"
    running = False
    try:
        initdb = _run(
            [
                bin_dir / "initdb",
                "-D",
                data_dir,
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            base,
            run_as,
            timeout=timeout_seconds,
        )
        if initdb.returncode != 0:
            raise PostgresServerError(f"initdb failed ({initdb.returncode}):\n{_output(initdb)}")
        initdb_seconds = time.monotonic() - started
        version = _output(_run([bin_dir / "postgres", "--version"], base, run_as, timeout=10))

        for attempt in range(1, port_attempts + 1):
            port = free_port()
            _configure(data_dir, base, port)
            start = _run(
                [
                    bin_dir / "pg_ctl",
                    "start",
                    "-D",
                    data_dir,
                    "-l",
                    log_path,
                    "-w",
                    "-t",
                    str(int(timeout_seconds)),
                ],
                base,
                run_as,
                timeout=timeout_seconds + 10,
            )
            running = (data_dir / "postmaster.pid").exists()
            if start.returncode == 0:
                break
            log = _tail(log_path, 60)
            if running:
                _stop(bin_dir, data_dir, base, run_as)
                running = False
            if attempt < port_attempts and any(s in log.lower() for s in _PORT_IN_USE):
                continue  # lost the port race: next free port
            raise PostgresServerError(
                f"pg_ctl start failed ({start.returncode}): {_output(start)}\nlog:\n{log}"
            )

        _wait_until_accepting(base, port, timeout_seconds)
        superuser = psycopg2.connect(host=str(base), port=port, user=SUPERUSER, dbname="postgres")
        try:
            superuser.autocommit = True
            with superuser.cursor() as cursor:
                cursor.execute(
                    sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                        sql.Identifier(user), sql.Literal(password)
                    )
                )
        finally:
            superuser.close()
        _create_database(
            psycopg2.connect(host=str(base), port=port, user=SUPERUSER, dbname="postgres"),
            database,
            user,
        )
        yield PostgresServer(
            host=HOST,
            port=port,
            user=user,
            password=password,
            database=database,
            socket_dir=base,
            data_dir=data_dir,
            log_path=log_path,
            bin_dir=bin_dir,
            version=version,
            run_as=run_as.pw_name if run_as else None,
            initdb_seconds=initdb_seconds,
            startup_seconds=time.monotonic() - started,
        )
    finally:
        if running or (data_dir / "postmaster.pid").exists():
            _stop(bin_dir, data_dir, base, run_as)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server per test session; fails (never skips) without binaries."""
    missing = None
    try:
        find_bin_dir()
    except PostgresUnavailableError as error:
        missing = str(error)
    if missing:  # outside the except block: no chained traceback around the message
        pytest.fail(missing, pytrace=False)
    with running_postgres_server() as server:
        yield server
