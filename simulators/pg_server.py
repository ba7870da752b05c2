"""A private PostgreSQL server for tests and benchmarks, from the installed server binaries.

Never the machine's own PostgreSQL: ``initdb`` makes a fresh cluster in a temporary
directory, ``pg_ctl`` starts it on a free loopback port (durability off: a test cluster
is thrown away). ``initdb`` refuses to run as root, so as root (CI) the cluster belongs
to the ``postgres`` user and every server command runs through ``runuser``.

:func:`start_postgres` returns ``None`` with the reason when there are no binaries; the
session fixture then skips, unless ``BREAKWATER_REQUIRE_POSTGRES=1`` (set by ``.ci/run``),
which turns the skip into a failure.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

SERVER_USER = "postgres"


def server_binaries() -> Path | None:
    """The newest installed PostgreSQL ``bin`` directory holding initdb and pg_ctl."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name)
                   if Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    bin_dir: Path
    root: Path
    port: int = 0
    _as_user: list[str] = field(default_factory=list)

    @property
    def admin_url(self) -> str:
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._as_user, *args], capture_output=True, text=True,
                              timeout=120, check=False)
        if done.returncode != 0:
            message = f"{' '.join(args[:2])} failed: {done.stderr.strip() or done.stdout.strip()}"
            raise RuntimeError(message)

    def start(self) -> None:
        data = self.root / "data"
        if os.geteuid() == 0:
            # initdb refuses root: the cluster belongs to the postgres user
            user = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", SERVER_USER, "--"]
        self._run(str(self.bin_dir / "initdb"), "-D", str(data), "-U", SERVER_USER,
                  "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C")
        for _ in range(5):  # a port taken between choosing and binding: try another
            self.port = _free_port()
            options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                       "-c max_connections=200")
            try:
                self._run(str(self.bin_dir / "pg_ctl"), "-D", str(data), "-o", options,
                          "-l", str(self.root / "server.log"), "-w", "-t", "60", "start")
            except RuntimeError:
                continue
            return
        message = f"PostgreSQL did not start: see {self.root / 'server.log'}"
        raise RuntimeError(message)

    def create_database(self, prefix: str = "bw", *, template: str | None = None) -> str:
        """A fresh database, empty or a copy of ``template`` (the URL of a database
        nobody is connected to: benchmarks seed once and copy per trial); its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        copy = "" if template is None else f' TEMPLATE "{template.rsplit("/", 1)[-1]}"'
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"{copy}')
        return self.url(name)

    def drop_database(self, url: str) -> bool:
        """Drop a database made by :meth:`create_database` (gone already is fine); False,
        and the database left for :meth:`stop`, while somebody is still connected to it.

        A test session makes hundreds of databases of ~10 MB each: dropped as each test
        ends (~10 ms), rather than all removed with the server at the end (~50 ms each,
        minutes on a loaded disk)."""
        name = url.rsplit("/", 1)[-1]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            try:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            except psycopg.errors.ObjectInUse:
                return False
        return True

    def stop(self) -> None:
        try:
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.root / "data"), "-m",
                      "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> PostgresServer | str:
    """A running private server, or the reason there is none."""
    bin_dir = server_binaries()
    if bin_dir is None:
        return ("no PostgreSQL server binaries (initdb, pg_ctl) installed: "
                "apt-get install postgresql")
    root = Path(tempfile.mkdtemp(prefix="bw-pg-"))
    server = PostgresServer(bin_dir, root)
    try:
        server.start()
    except (RuntimeError, OSError, KeyError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(root, ignore_errors=True)
        return f"private PostgreSQL could not start: {exc}"
    return server
