"""state.db: the SQLite store behind a machine, its schema versions and migrations.

The store is a namespaced key-value table plus a table of simulated DRAM pages. Every
command runs as ONE SQLite transaction started with ``BEGIN IMMEDIATE``: a killed process
leaves the previous state (SQLite's atomic commit, WAL mode), and concurrent processes
queue on the write lock through SQLite's busy handler instead of failing with
"database is locked".

Schema history (``PRAGMA user_version``):

1. ``kv(ns, key, value)`` only; DRAM pages lived in namespace ``dram`` under the page
   number in lower-case hex.
2. DRAM pages moved to their own table ``dram(page, data)`` (page = physical address >> 12),
   so that bulk reads and writes are range scans rather than key-value lookups.
3. Where the BIOS reserved the PRM (the EPC and its engine's metadata) at this power-on is
   recorded in ``boot.prm``/``map`` beside the key slots in ``boot.keys``; the physical
   view reads the EPC there. A schema-2 machine booted with SGX on (its EPC key slot
   loaded) gets the record its booted BIOS settings made.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from hwsim._pagecrypt import EPC_KEYID
from hwsim.bios import BiosConfig
from hwsim.errors import MachineError
from hwsim.prm import PrmMap
from hwsim.profiles import PROFILES
from memcrypt.errors import InvalidInput

__all__ = ["KEY_SLOTS_NS", "PRM_NS", "SCHEMA_VERSION", "StateTxn", "Store"]

SCHEMA_VERSION = 3

KEY_SLOTS_NS = "boot.keys"  # memory-encryption key slots (volatile: a power cycle empties them)
PRM_NS = "boot.prm"  # where the BIOS reserved the PRM at this power-on

# How long a command waits for another process's transaction before giving up. Long on
# purpose: a bulk DRAM write holds the lock for a second or so, and CI may run many jobs.
BUSY_TIMEOUT_S = 600.0

# 64 KiB database pages keep a 4 KiB DRAM page inline in the B-tree (no overflow chain),
# which roughly halves the cost of bulk page writes (see bench/bench_memory.py).
_DB_PAGE_SIZE = 65536

_SCHEMA_V2 = """
CREATE TABLE kv (
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE TABLE dram (page INTEGER PRIMARY KEY, data BLOB NOT NULL);
"""


def _migrate_1_to_2(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE dram (page INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    rows = db.execute("SELECT key, value FROM kv WHERE ns = 'dram'").fetchall()
    db.executemany("INSERT INTO dram VALUES (?, ?)", [(int(k, 16), v) for k, v in rows])
    db.execute("DELETE FROM kv WHERE ns = 'dram'")


def _migrate_2_to_3(db: sqlite3.Connection) -> None:
    def value(ns: str, key: str) -> bytes | None:
        row = db.execute("SELECT value FROM kv WHERE ns = ? AND key = ?", (ns, key)).fetchone()
        return None if row is None else bytes(row[0])

    name, booted = value("machine", "profile"), value("boot.bios", "config")
    if value(KEY_SLOTS_NS, str(EPC_KEYID)) is None or name is None or booted is None:
        return  # SGX was off at this boot: no PRM
    profile = PROFILES.get(name.decode("utf-8", "replace"))
    try:
        table = json.loads(booted)
        config = (
            BiosConfig.from_table(profile, table) if profile and isinstance(table, dict) else None
        )
    except (ValueError, InvalidInput):
        config = None  # opening the machine reports the damaged row; nothing to derive here
    if profile is not None and config is not None:
        prm = PrmMap.at_boot(profile, config.epc_size).pack()
        db.execute("INSERT OR REPLACE INTO kv VALUES (?, 'map', ?)", (PRM_NS, prm))


# MIGRATIONS[n] turns a schema-n database into schema n+1, inside one transaction.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _migrate_1_to_2,
    2: _migrate_2_to_3,
}


class StateTxn:
    """Namespaced key-value access inside one open transaction.

    Namespaces starting with ``boot.`` are volatile: a power cycle wipes them.
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def get(self, ns: str, key: str) -> bytes | None:
        row = self.db.execute("SELECT value FROM kv WHERE ns = ? AND key = ?", (ns, key))
        found = row.fetchone()
        return None if found is None else bytes(found[0])

    def put(self, ns: str, key: str, value: bytes) -> None:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"value for {ns}/{key} must be bytes, not {type(value).__name__}")
        self.db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (ns, key, bytes(value)))

    def delete(self, ns: str, key: str) -> None:
        self.db.execute("DELETE FROM kv WHERE ns = ? AND key = ?", (ns, key))

    def keys(self, ns: str) -> list[str]:
        rows = self.db.execute("SELECT key FROM kv WHERE ns = ? ORDER BY key", (ns,))
        return [str(r[0]) for r in rows]

    def namespaces(self) -> list[str]:
        return [str(r[0]) for r in self.db.execute("SELECT DISTINCT ns FROM kv ORDER BY ns")]

    def wipe(self, *, volatile_only: bool, keep: tuple[str, ...] = ()) -> None:
        """Delete the ``boot.`` namespaces, or everything but the namespaces in ``keep``."""
        if volatile_only:
            self.db.execute("DELETE FROM kv WHERE ns LIKE 'boot.%'")
            return
        marks = ",".join("?" * len(keep))
        self.db.execute(f"DELETE FROM kv WHERE ns NOT IN ({marks})", keep)
        self.db.execute("DELETE FROM dram")


# What a damaged database file raises: SQLite's errors, and UnicodeDecodeError when the
# sqlite3 module decodes text that is not UTF-8 (a stored name, or an error message that
# quotes a damaged schema).
_DB_ERRORS = (sqlite3.Error, UnicodeDecodeError)


def _wrap(path: Path, exc: Exception) -> MachineError:
    why = "it holds text that is not UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc)
    # SQLite's message may quote a damaged schema: keep the error on one printable line.
    why = "".join(c if c.isprintable() else "?" for c in " ".join(why.split()))
    return MachineError(f"state database {path} is unusable: {why}")


class Store:
    """One process's connection to a machine's state.db."""

    def __init__(self, path: Path, db: sqlite3.Connection) -> None:
        self.path = path
        self._db = db
        self._pid = os.getpid()
        self._depth = 0
        self._writing = False
        self._lock = threading.RLock()

    @classmethod
    def create(cls, path: Path) -> Store:
        """Make a new, empty state.db at the current schema (the file must not exist)."""
        try:
            db = sqlite3.connect(f"file:{path}?mode=rwc", uri=True, isolation_level=None)
            db.execute(f"PRAGMA page_size = {_DB_PAGE_SIZE}")
            db.execute("PRAGMA journal_mode = WAL")
            db.executescript(_SCHEMA_V2)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.close()
        except sqlite3.Error as exc:
            raise _wrap(path, exc) from exc
        return cls.open(path)

    @classmethod
    def open(cls, path: Path) -> Store:
        """Open an existing state.db, migrating an older schema; never creates the file."""
        if not path.is_file():
            what = "is not a regular file" if path.exists() else "is missing"
            raise MachineError(f"state database {path} {what}")
        try:
            db = sqlite3.connect(
                f"file:{path}?mode=rw",
                uri=True,
                isolation_level=None,
                timeout=BUSY_TIMEOUT_S,
                check_same_thread=False,  # the store's own lock serialises threads
            )
        except sqlite3.Error as exc:
            raise _wrap(path, exc) from exc
        try:
            db.execute("PRAGMA synchronous = NORMAL")
            store = cls(path, db)
            store._check_schema()
        except _DB_ERRORS as exc:
            db.close()
            raise _wrap(path, exc) from exc
        except BaseException:
            db.close()  # leaves no -wal / -shm behind a refused database
            raise
        return store

    def _check_schema(self) -> None:
        version = self._version()
        if version == SCHEMA_VERSION:
            return
        self._check_known(version)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            version = self._version()  # another process may have migrated meanwhile
            while version < SCHEMA_VERSION:
                MIGRATIONS[version](self._db)
                version += 1
                self._db.execute(f"PRAGMA user_version = {version}")
            self._db.execute("COMMIT")
        except ValueError as exc:  # a row the migration cannot convert (int() of a key)
            self._db.execute("ROLLBACK")
            raise MachineError(
                f"state database {self.path} cannot be migrated from schema version "
                f"{version}: {exc}"
            ) from exc
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _check_known(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise MachineError(
                f"state database {self.path} has schema version {version}, newer than "
                f"this hwsim supports ({SCHEMA_VERSION})",
                hint="upgrade memcrypt to use this machine",
            )
        if version not in MIGRATIONS:
            raise MachineError(
                f"state database {self.path} is not a hwsim machine state "
                f"(schema version {version})"
            )

    @property
    def in_transaction(self) -> bool:
        """Whether this process has a transaction open on the store."""
        return self._depth > 0 and self._pid == os.getpid()

    @property
    def schema_version(self) -> int:
        try:
            return self._version()
        except _DB_ERRORS as exc:
            raise _wrap(self.path, exc) from exc

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One SQLite transaction; nested calls (same thread) join the outer one.

        ``write=True`` takes the write lock at once (``BEGIN IMMEDIATE``), so that a
        read-modify-write never has to upgrade its lock, which in WAL mode fails at once
        instead of waiting. A read-only transaction sees one consistent snapshot and must
        not write. Other threads using the same machine object wait for the transaction.
        """
        with self._lock:
            self._reconnect_after_fork()
            if self._depth:
                if write and not self._writing:
                    raise RuntimeError("a write transaction cannot join a read-only one")
                self._depth += 1
                try:
                    yield self._db
                finally:
                    self._depth -= 1
                return
            with self._outermost(write):
                yield self._db

    @contextmanager
    def _outermost(self, write: bool) -> Iterator[None]:
        try:
            self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN DEFERRED")
        except _DB_ERRORS as exc:
            raise _wrap(self.path, exc) from exc
        self._depth, self._writing = 1, write
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            if isinstance(exc, _DB_ERRORS):
                raise _wrap(self.path, exc) from exc
            raise
        finally:
            self._depth, self._writing = 0, False

    def _reconnect_after_fork(self) -> None:
        # A connection must not cross fork(): the child opens its own.
        if os.getpid() != self._pid:
            fresh = Store.open(self.path)
            self._db, self._pid, self._depth = fresh._db, fresh._pid, 0

    def close(self) -> None:
        self._db.close()
