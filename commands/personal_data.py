"""Personal data in the log, encrypted with a key per person (crypto-shredding).

Each event type names its personal fields (``DomainEvent.PERSONAL``). On the way into the log each
such value is encrypted (AES-256-GCM) with a data key of its person's own and stored as
``{"$pd": <key id>, "c": <base64 nonce|ciphertext|tag>}``; on the way out it is decrypted. Erasure
destroys the person's key (``KeyStore.erase``): from then on every reader finds ``None`` there and
the field's name in ``event.erased_fields``. Values stored before this existed are plain and read
as they are (``stories reencrypt`` copies an old log into an encrypted one).

The keys live in the event store's own database, not in the log (table ``stories_person_keys``),
each wrapped (AES-256-GCM) with a master key: ``STORIES_MASTER_KEYS`` (newest first; ``stories
keys rotate`` rewraps every key with the first), else one the key store made for itself on first
use (``stories_key_meta``), which protects nothing against a copy of the database: set the
setting in production. A key id is a keyed hash of the person's id, never the id. The key store
also holds the log's stream key: stream ids derived from user ids (``domain.ids.stream_id``) are
stored keyed with it (``EventStore``), so the log does not reveal whose streams they are.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, TypeGuard
from uuid import UUID

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import InterfaceError, OperationalError

from commands.catalogue_race import create_racing
from domain.aggregate import SELF

KEYS_TABLE = "stories_person_keys"
META_TABLE = "stories_key_meta"
MARK = "$pd"
CACHED_KEYS = 200_000  # data keys kept unwrapped in memory per process (an LRU)
OPENED_KEPT = 100_000  # opened values kept per process
ENSURE_ATTEMPTS = 3  # of a batch's new keys, when a commit's answer is lost
POLL_ERASURES_S = 1.0  # how often a process learns of erasures made by others (and forgets those keys)
# Erasure times come from each process's own clock: look this far back each time, so that an
# erasure stamped a little earlier than one already seen (another clock) is not missed.
CLOCK_SKEW = timedelta(seconds=60)


class KeyStoreError(Exception):
    """The key store cannot serve: a key is wrapped with a master key this process lacks."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def master_key_id(key: bytes) -> str:
    return hmac.new(key, b"stories master key id", hashlib.sha256).hexdigest()[:16]


def parse_master_keys(setting: str | None) -> list[bytes]:
    """``STORIES_MASTER_KEYS``: base64 keys of 32 bytes, comma-separated, newest first."""
    keys = []
    for part in (setting or "").split(","):
        part = part.strip()
        if not part:
            continue
        key = _unb64(part.replace("+", "-").replace("/", "_"))
        if len(key) != 32:
            raise KeyStoreError("each STORIES_MASTER_KEYS entry must be 32 bytes, base64-encoded")
        keys.append(key)
    return keys


def pseudonym(key: bytes, user_id: str) -> str:
    """The contract's keyed pseudonym of an account: HMAC-SHA256(key, id), hex."""
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()


@lru_cache(maxsize=16)
def _aead(master: bytes) -> AESGCM:
    return AESGCM(master)


def _wrap(master: bytes, secret: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + _aead(master).encrypt(nonce, secret, aad)


def _unwrap(master: bytes, blob: bytes, aad: bytes) -> bytes:
    return _aead(master).decrypt(blob[:12], blob[12:], aad)


class _Sql:
    """The few statements the key store needs, in SQLite's or PostgreSQL's dialect, on the
    event recorder's own connection pool."""

    def __init__(self, datastore: Any) -> None:
        self.datastore = datastore
        self.postgres = hasattr(datastore, "schema")
        prefix = f'"{datastore.schema}".' if self.postgres else ""
        self.keys, self.meta = prefix + KEYS_TABLE, prefix + META_TABLE
        self.blob = "BYTEA" if self.postgres else "BLOB"

    def q(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.postgres else sql

    @staticmethod
    def marks(n: int) -> str:
        return ",".join("?" * n)

    def transaction(self, commit: bool) -> Any:
        return self.datastore.transaction(commit=commit)


@dataclass
class _Meta:
    master_keys: dict[str, bytes]
    current_master: str
    stream_key: bytes | None
    kid_key: bytes


class KeyStore:
    """Data keys per person, their erasure, and the log's stream key."""

    def __init__(
        self,
        datastore: Any,
        master_keys: Sequence[bytes] = (),
        *,
        legacy_log: bool = False,
        purge_window: timedelta = timedelta(days=7),
    ) -> None:
        self.sql = _Sql(datastore)
        self.purge_window = purge_window
        self._lock = threading.Lock()
        self._write: OrderedDict[str, tuple[str, AESGCM | None]] = OrderedDict()  # user -> (kid, key)
        self._read: OrderedDict[str, AESGCM | None] = OrderedDict()  # kid -> key (None: erased)
        self._polled = time.monotonic()
        self._seen_erasures = ""  # the newest erasure time seen (ISO)
        create_racing(self._create_tables)
        self.meta = self._load_meta(list(master_keys), legacy_log)

    # -- set-up -------------------------------------------------------------------------

    def _create_tables(self) -> None:
        # Processes that start together race on these (commands.catalogue_race).
        s = self.sql
        with s.transaction(commit=True) as cur:
            cur.execute(f"CREATE TABLE IF NOT EXISTS {s.meta} (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {s.keys} (kid TEXT PRIMARY KEY, wrapped {s.blob}, "
                f"master_id TEXT, erased_at TEXT, pseudonym TEXT, purge_ref {s.blob}, announced_at TEXT)"
            )
            cur.execute(f"CREATE INDEX IF NOT EXISTS {KEYS_TABLE}_pseudonym ON {s.keys} (pseudonym)")
            cur.execute(f"CREATE INDEX IF NOT EXISTS {KEYS_TABLE}_erased ON {s.keys} (erased_at)")

    def _meta_value(self, cur: Any, name: str) -> str | None:
        cur.execute(self.sql.q(f"SELECT value FROM {self.sql.meta} WHERE name = ?"), (name,))
        row = cur.fetchone()
        return row["value"] if row else None

    def _set_meta_once(self, name: str, value: str) -> str:
        """Store ``value`` unless another process stored one first; the stored one."""
        s = self.sql
        with s.transaction(commit=True) as cur:
            cur.execute(
                s.q(f"INSERT INTO {s.meta} (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"), (name, value)
            )
            stored = self._meta_value(cur, name)
        if stored is None:  # cannot be: ours was just inserted, or another process's was there
            raise KeyStoreError(f"the key store's {name} was not stored")
        return stored

    def _load_meta(self, configured: list[bytes], legacy_log: bool) -> _Meta:
        masters = {master_key_id(k): k for k in configured}
        with self.sql.transaction(commit=False) as cur:
            embedded = self._meta_value(cur, "embedded_master_key")
        if configured:
            current = master_key_id(configured[0])
        else:
            if embedded is None:
                embedded = self._set_meta_once("embedded_master_key", _b64(os.urandom(32)))
            current = master_key_id(_unb64(embedded))
        if embedded is not None:
            key = _unb64(embedded)
            masters.setdefault(master_key_id(key), key)
        meta = _Meta(masters, current, None, b"")
        meta.kid_key = self._secret(meta, "kid_key")
        # A log that already holds events from before keyed stream ids keeps its plain ones.
        plain = self._set_meta_once("stream_ids", "plain" if legacy_log else "keyed") == "plain"
        meta.stream_key = None if plain else self._secret(meta, "stream_key")
        return meta

    def _secret(self, meta: _Meta, name: str) -> bytes:
        """One of the log's own secrets (made on first use), wrapped with a master key."""
        fresh = (
            f"{meta.current_master}:{_b64(_wrap(meta.master_keys[meta.current_master], os.urandom(32), name.encode()))}"
        )
        master_id, wrapped = self._set_meta_once(name, fresh).split(":", 1)
        if master_id not in meta.master_keys:
            raise KeyStoreError(
                f"the log's keys are wrapped with master key {master_id}, which STORIES_MASTER_KEYS does not hold"
            )
        return _unwrap(meta.master_keys[master_id], _unb64(wrapped), name.encode())

    # -- ids ----------------------------------------------------------------------------

    def kid(self, user_id: str) -> str:
        return _b64(hmac.new(self.meta.kid_key, user_id.encode(), hashlib.sha256).digest()[:16])

    def physical_stream(self, stream: UUID) -> UUID:
        """Where a stream is stored: an id derived from user ids (``uuid5``, ``domain.ids``) keyed
        with the log's stream key, so it cannot be recomputed from the ids; random ids as they are."""
        if self.meta.stream_key is None or stream.version != 5:
            return stream
        digest = bytearray(hmac.new(self.meta.stream_key, stream.bytes, hashlib.sha256).digest()[:16])
        digest[6] = (digest[6] & 0x0F) | 0x80  # version 8: "custom"
        digest[8] = (digest[8] & 0x3F) | 0x80
        return UUID(bytes=bytes(digest))

    # -- keys ---------------------------------------------------------------------------

    def _unwrap_row(self, row: Any) -> AESGCM | None:
        if "key" in row:  # made by this process just now (``_ensure``)
            return AESGCM(row["key"])
        if row["wrapped"] is None:
            return None
        master = self.meta.master_keys.get(row["master_id"])
        if master is None:
            raise KeyStoreError(
                f"a person's key is wrapped with master key {row['master_id']}, which STORIES_MASTER_KEYS does not hold"
            )
        return AESGCM(_unwrap(master, bytes(row["wrapped"]), row["kid"].encode()))

    def _remember(self, cache: OrderedDict, key: str, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        if len(cache) > CACHED_KEYS:
            cache.popitem(last=False)

    def _rows(self, cur: Any, kids: list[str]) -> dict[str, Any]:
        rows: dict[str, Any] = {}
        for i in range(0, len(kids), 500):
            chunk = kids[i : i + 500]
            cur.execute(
                self.sql.q(
                    f"SELECT kid, wrapped, master_id FROM {self.sql.keys} WHERE kid IN ({self.sql.marks(len(chunk))})"
                ),
                chunk,
            )
            rows.update((row["kid"], row) for row in cur.fetchall())
        return rows

    def ensure(self, user_ids: Iterable[str]) -> None:
        """Make sure each person has a key to write with (one transaction for all the new ones)."""
        with self._lock:
            missing = {self.kid(u): u for u in set(user_ids) if u not in self._write}
        if not missing:
            return
        # Safe to re-run whole: a key made by a commit whose answer was lost is found, not remade.
        for attempt in range(ENSURE_ATTEMPTS):
            try:
                rows = self._ensure(missing)
                break
            except (OperationalError, InterfaceError):
                if attempt == ENSURE_ATTEMPTS - 1:
                    raise
        with self._lock:
            for kid, user in missing.items():
                key = self._unwrap_row(rows[kid])
                self._remember(self._write, user, (kid, key))
                self._remember(self._read, kid, key)

    def _ensure(self, missing: dict[str, str]) -> dict[str, Any]:
        s = self.sql
        with s.transaction(commit=False) as cur:  # most exist already (a process that restarted)
            rows = self._rows(cur, list(missing))
        new = [kid for kid in missing if kid not in rows]
        if new:
            master, current = self.meta.master_keys[self.meta.current_master], self.meta.current_master
            made = {kid: os.urandom(32) for kid in new}
            wrapped = {kid: _wrap(master, key, kid.encode()) for kid, key in made.items()}
            # A write transaction that writes first: on SQLite (WAL) one that read first could
            # not upgrade while another process writes ("database is locked" at once, no wait).
            with s.transaction(commit=True) as cur:
                cur.executemany(
                    s.q(
                        f"INSERT INTO {s.keys} (kid, wrapped, master_id) VALUES (?, ?, ?) ON CONFLICT (kid) DO NOTHING"
                    ),
                    [(kid, blob, current) for kid, blob in wrapped.items()],
                )
                found = self._rows(cur, new)  # another process may have made some first
            for kid, row in found.items():  # ours, unless another's won: then theirs, unwrapped
                rows[kid] = {"kid": kid, "key": made[kid]} if bytes(row["wrapped"] or b"") == wrapped[kid] else row
        return rows

    def for_writing(self, user_id: str) -> tuple[str, AESGCM]:
        entry = self._write.get(user_id)
        if entry is None:
            self.ensure([user_id])
            entry = self._write[user_id]
        kid, key = entry
        # An erased person's data is sealed with a key nobody keeps: it can never be read.
        return kid, key if key is not None else AESGCM(os.urandom(32))

    def for_reading(self, kid: str) -> AESGCM | None:
        self._poll_erasures()
        try:
            return self._read[kid]
        except KeyError:
            pass
        with self.sql.transaction(commit=False) as cur:
            row = self._rows(cur, [kid]).get(kid)
        key = self._unwrap_row(row) if row is not None else None
        with self._lock:
            self._remember(self._read, kid, key)
        return key

    # -- erasure ------------------------------------------------------------------------

    def erase(self, user_id: str, pseudonym_: str, now: datetime) -> None:
        """Destroy the person's key (idempotent). Their id stays, wrapped, for the projectors'
        purge (``erased_user``) until ``purge_window`` has passed (``scrub``)."""
        s, kid = self.sql, self.kid(user_id)
        master = self.meta.master_keys[self.meta.current_master]
        ref = _wrap(master, user_id.encode(), b"purge " + kid.encode())
        with s.transaction(commit=True) as cur:
            cur.execute(s.q(f"INSERT INTO {s.keys} (kid) VALUES (?) ON CONFLICT (kid) DO NOTHING"), (kid,))
            cur.execute(
                s.q(
                    f"UPDATE {s.keys} SET wrapped = NULL, master_id = ?, erased_at = ?, pseudonym = ?, "
                    "purge_ref = ? WHERE kid = ? AND erased_at IS NULL"
                ),
                (self.meta.current_master, now.isoformat(), pseudonym_, ref, kid),
            )
        self.forget(kid, user_id)
        self.scrub(now)

    def forget(self, kid: str, user_id: str | None = None) -> None:
        with self._lock:
            self._remember(self._read, kid, None)
            if user_id is not None:
                self._remember(self._write, user_id, (kid, None))

    def mark_announced(self, pseudonym_: str, now: datetime) -> None:
        s = self.sql
        with s.transaction(commit=True) as cur:
            cur.execute(
                s.q(f"UPDATE {s.keys} SET announced_at = ? WHERE pseudonym = ? AND announced_at IS NULL"),
                (now.isoformat(), pseudonym_),
            )

    def unannounced(self) -> list[str]:
        """Erasures whose ``AccountErased`` may not be in the log yet (a crash between the steps)."""
        with self.sql.transaction(commit=False) as cur:
            cur.execute(f"SELECT pseudonym FROM {self.sql.keys} WHERE erased_at IS NOT NULL AND announced_at IS NULL")
            return [row["pseudonym"] for row in cur.fetchall()]

    def erased_since(self, since: str) -> list[tuple[str, str]]:
        """(pseudonym, erased_at) of the accounts erased after ``since`` (ISO), oldest first."""
        with self.sql.transaction(commit=False) as cur:
            cur.execute(
                self.sql.q(f"SELECT pseudonym, erased_at FROM {self.sql.keys} WHERE erased_at > ? ORDER BY erased_at"),
                (since,),
            )
            return [(row["pseudonym"], row["erased_at"]) for row in cur.fetchall()]

    def erased_user(self, pseudonym_: str) -> str | None:
        """For a reader meeting ``AccountErased``: forget the person's key in this process, and
        their id while the purge window lasts (else None)."""
        with self.sql.transaction(commit=False) as cur:
            cur.execute(
                self.sql.q(f"SELECT kid, master_id, purge_ref FROM {self.sql.keys} WHERE pseudonym = ?"), (pseudonym_,)
            )
            row = cur.fetchone()
        if row is None:
            return None
        user_id = None
        master = self.meta.master_keys.get(row["master_id"] or "")
        if row["purge_ref"] is not None and master is not None:
            user_id = _unwrap(master, bytes(row["purge_ref"]), b"purge " + row["kid"].encode()).decode()
        self.forget(row["kid"], user_id)
        return user_id

    def _poll_erasures(self) -> None:
        """Forget the keys of people erased by other processes, once a second at most: a process
        that never reads the log (a command API) stops reading their data within that second."""
        now = time.monotonic()
        if now - self._polled < POLL_ERASURES_S:
            return
        self._polled = now
        since = self._seen_erasures
        if since:
            since = (datetime.fromisoformat(since) - CLOCK_SKEW).isoformat()
        with self.sql.transaction(commit=False) as cur:
            cur.execute(self.sql.q(f"SELECT kid, erased_at FROM {self.sql.keys} WHERE erased_at > ?"), (since,))
            rows = cur.fetchall()
        if not rows:
            return
        with self._lock:
            for row in rows:
                self._remember(self._read, row["kid"], None)
                self._seen_erasures = max(self._seen_erasures, row["erased_at"])
            for user, (kid, _) in list(self._write.items()):
                if self._read.get(kid, False) is None:
                    self._write[user] = (kid, None)

    def scrub(self, now: datetime) -> int:
        """Drop the ids of accounts erased longer ago than the purge window."""
        s, before = self.sql, (now - self.purge_window).isoformat()
        with s.transaction(commit=False) as cur:
            cur.execute(
                s.q(f"SELECT COUNT(*) AS n FROM {s.keys} WHERE purge_ref IS NOT NULL AND erased_at < ?"), (before,)
            )
            count = cur.fetchone()["n"]
        if count:
            with s.transaction(commit=True) as cur:  # writes first (see _ensure)
                cur.execute(
                    s.q(f"UPDATE {s.keys} SET purge_ref = NULL WHERE purge_ref IS NOT NULL AND erased_at < ?"),
                    (before,),
                )
        return count

    def rotate(self) -> int:
        """Rewrap every key (and the stream key) with the current master key; how many changed."""
        s, current = self.sql, self.meta.current_master
        master = self.meta.master_keys[current]
        changed = 0
        with s.transaction(commit=True) as cur:
            # Take the write lock first (see _ensure): a no-op write, then read what to rewrap.
            cur.execute(s.q(f"UPDATE {s.meta} SET value = value WHERE name = ?"), ("kid_key",))
            cur.execute(
                s.q(f"SELECT kid, wrapped, master_id, purge_ref FROM {s.keys} WHERE master_id <> ?"), (current,)
            )
            for row in cur.fetchall():
                old = self.meta.master_keys.get(row["master_id"])
                if old is None:
                    raise KeyStoreError(f"master key {row['master_id']} is not in STORIES_MASTER_KEYS")
                kid = row["kid"]
                wrapped = row["wrapped"] and _wrap(
                    master, _unwrap(old, bytes(row["wrapped"]), kid.encode()), kid.encode()
                )
                aad = b"purge " + kid.encode()
                ref = row["purge_ref"] and _wrap(master, _unwrap(old, bytes(row["purge_ref"]), aad), aad)
                cur.execute(
                    s.q(f"UPDATE {s.keys} SET wrapped = ?, purge_ref = ?, master_id = ? WHERE kid = ?"),
                    (wrapped, ref, current, kid),
                )
                changed += 1
            for name, secret in (("kid_key", self.meta.kid_key), ("stream_key", self.meta.stream_key)):
                if secret is not None:
                    value = f"{current}:{_b64(_wrap(master, secret, name.encode()))}"
                    cur.execute(s.q(f"UPDATE {s.meta} SET value = ? WHERE name = ?"), (value, name))
        return changed

    def master_ids_in_use(self) -> set[str]:
        with self.sql.transaction(commit=False) as cur:
            cur.execute(f"SELECT DISTINCT master_id FROM {self.sql.keys} WHERE master_id IS NOT NULL")
            return {row["master_id"] for row in cur.fetchall()}


# -- the event state's personal fields ------------------------------------------------------


def owner_of(state: dict[str, Any], paths: str) -> Any:
    """Whose a personal field is (``DomainEvent.PERSONAL``'s owner: a dotted path, or ``a|b``
    for the first of them that names someone), in an event's state."""
    for path in paths.split("|"):
        value: Any = state
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            return value
    return None


def _is_sealed(value: Any) -> TypeGuard[dict[str, str]]:
    return isinstance(value, dict) and MARK in value


class PersonalData:
    """Seals and opens the personal fields of an event's stored state (a dict)."""

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys
        self._nonces, self._next_nonce = b"", 0
        # Opened strings by ciphertext: a hot story's StoryCreated is opened for every command on
        # it. Checked against the key on every use, so nothing of an erased person is served.
        self._opened: dict[tuple[str, str], str] = {}

    def _nonce(self) -> bytes:
        """12 random bytes (one ``os.urandom`` call per 1,024 of them: it is a system call)."""
        if self._next_nonce >= len(self._nonces):
            self._nonces, self._next_nonce = os.urandom(12 * 1024), 0
        start = self._next_nonce
        self._next_nonce = start + 12
        return self._nonces[start : start + 12]

    @staticmethod
    def people(cls: type, state: dict[str, Any]) -> Iterator[str]:
        """Everyone whose key sealing ``state`` needs."""
        for field, owner in getattr(cls, "PERSONAL", {}).items():
            value = state.get(field)
            if value is None:
                continue
            person = value if owner == SELF else owner_of(state, owner)
            if isinstance(person, list):
                yield from (p for p in person if isinstance(p, str))
            elif isinstance(person, str):
                yield person

    def _seal(self, person: str, field: str, value: Any) -> dict[str, str]:
        kid, key = self.keys.for_writing(person)
        nonce = self._nonce()
        return {MARK: kid, "c": _b64(nonce + key.encrypt(nonce, orjson.dumps(value), field.encode()))}

    def seal(self, cls: type, state: dict[str, Any]) -> None:
        personal = getattr(cls, "PERSONAL", None)
        if not personal:
            return
        owners = {
            field: (state.get(field) if owner == SELF else owner_of(state, owner)) for field, owner in personal.items()
        }
        for field, owner in personal.items():
            value, person = state.get(field), owners[field]
            if value is None or person is None:
                continue
            if owner == SELF and isinstance(value, list):
                state[field] = [self._seal(v, field, v) if isinstance(v, str) else v for v in value]
            elif isinstance(person, str):
                state[field] = self._seal(person, field, value)

    def _open(self, field: str, sealed: dict[str, str]) -> tuple[Any, bool]:
        key = self.keys.for_reading(sealed[MARK])
        if key is None:
            return None, True
        text = sealed["c"]
        opened = self._opened.get((field, text))  # the field too: it is bound into the ciphertext
        if opened is not None:
            return opened, False
        blob = _unb64(text)
        try:
            value = orjson.loads(key.decrypt(blob[:12], blob[12:], field.encode()))
        except InvalidTag:  # sealed for an erased person after their key was gone (see for_writing)
            return None, True
        if isinstance(value, str):  # immutable: safe to hand out again
            if len(self._opened) >= OPENED_KEPT:
                self._opened.clear()
            self._opened[(field, text)] = value
        return value, False

    def open(self, cls: type, state: dict[str, Any]) -> frozenset[str]:
        """Decrypt in place; the names of the fields an erased person's data was in."""
        personal = getattr(cls, "PERSONAL", None)
        if not personal:
            return frozenset()
        erased = []
        for field in personal:
            value = state.get(field)
            if _is_sealed(value):
                state[field], gone = self._open(field, value)
                if gone:
                    erased.append(field)
            elif isinstance(value, list) and any(_is_sealed(v) for v in value):
                opened = [self._open(field, v) if _is_sealed(v) else (v, False) for v in value]
                state[field] = [v for v, _ in opened]
                if any(gone for _, gone in opened):
                    erased.append(field)
        return frozenset(erased)


def utc_now() -> datetime:
    return datetime.now(UTC)
