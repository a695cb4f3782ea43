"""A primary and a streaming standby made with the embedded PostgreSQL's own binaries.

pgserver ships a full PostgreSQL (with pgvector) under ``pgserver/pginstall/bin``;
this module runs its ``initdb``, ``pg_ctl`` and ``pg_basebackup`` directly to build
a real replication pair on local ports. As pgserver does, servers run as the
``pgserver`` system user when this process is root (PostgreSQL refuses root).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.live_http import free_port


def _bin() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns at import without XDG_RUNTIME_DIR
        import pgserver
    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def _system_user() -> str | None:
    """pgserver's way: as root, servers run as ``pgserver`` (created when missing)."""
    if os.geteuid() != 0:
        return None
    binaries = _bin()  # imports pgserver quietly first
    from pgserver.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists("pgserver")
    ensure_prefix_permissions(binaries)
    ensure_folder_permissions(binaries, 0o055)
    ensure_folder_permissions(binaries.parent / "lib", 0o044)
    return "pgserver"


@dataclass
class Node:
    name: str
    pgdata: Path
    port: int
    sockets: Path
    user: str | None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def run(self, tool: str, *args: str, timeout: float = 60) -> str:
        done = subprocess.run(
            [str(_bin() / tool), *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            user=self.user,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            log = self.pgdata / "log"
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise RuntimeError(f"{tool} {args} failed: {done.stderr}\n{tail}")
        return done.stdout

    def start(self) -> None:
        self.run(
            "pg_ctl", "-D", str(self.pgdata), "-l", str(self.pgdata / "log"), "-w", "-t", "30",
            "-o", f"-p {self.port} -h 127.0.0.1 -k {self.sockets}", "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "stop")

    def promote(self) -> None:
        self.run("pg_ctl", "-D", str(self.pgdata), "-w", "promote")

    def running(self) -> bool:
        pid = self.pgdata / "postmaster.pid"
        return pid.exists()

    def execute(self, statement: str) -> list[tuple[object, ...]]:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []


class Cluster:
    """``primary`` and ``standby`` (streaming, hot standby) under one temporary folder."""

    def __init__(self) -> None:
        self.user = _system_user()
        self.root = Path(tempfile.mkdtemp(prefix="memory-service-replication-"))
        self.root.chmod(0o755)
        sockets = Path(tempfile.mkdtemp(prefix="pgs-", dir="/tmp"))
        sockets.chmod(0o777)
        self.sockets = sockets
        self.primary = Node("primary", self.root / "primary", free_port(), sockets, self.user)
        self.standby = Node("standby", self.root / "standby", free_port(), sockets, self.user)

    def _owned_dir(self, path: Path) -> None:
        path.mkdir(mode=0o700)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> Cluster:
        p = self.primary
        self._owned_dir(p.pgdata)
        p.run(
            "initdb", "-D", str(p.pgdata), "-U", "postgres", "--auth=trust", "--encoding=utf8",
            "--no-sync",
        )
        with (p.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(
                "\nwal_level = replica\nmax_wal_senders = 5\nhot_standby = on\n"
                "fsync = off\nfull_page_writes = off\n"
                "shared_buffers = 64MB\nmax_connections = 60\n"
                "wal_receiver_status_interval = 1s\nhot_standby_feedback = on\n"
            )
        with (p.pgdata / "pg_hba.conf").open("a") as hba:
            hba.write("host replication postgres 127.0.0.1/32 trust\n")
        p.start()
        self._owned_dir(self.standby.pgdata)
        self.standby.run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(p.port), "-U", "postgres",
            "-D", str(self.standby.pgdata), "-R", "-X", "stream", "--checkpoint=fast",
        )
        self.standby.start()
        return self

    def replay_lag_bytes(self) -> int:
        (primary_lsn,) = self.primary.execute("SELECT pg_current_wal_lsn()")[0]
        (replayed,) = self.standby.execute(
            f"SELECT pg_wal_lsn_diff('{primary_lsn}', pg_last_wal_replay_lsn())"
        )[0]
        return int(replayed)  # type: ignore[call-overload]

    def wait_caught_up(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.replay_lag_bytes() > 0:
            assert time.monotonic() < deadline, "the standby did not catch up"
            time.sleep(0.05)

    def close(self) -> None:
        for node in (self.standby, self.primary):
            if node.running():
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    node.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.sockets, ignore_errors=True)
