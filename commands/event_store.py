"""The event log, on eventsourcing's own SQLite or PostgreSQL recorders.

Our aggregates are plain Python (``domain/``); this module maps their events to eventsourcing's
stored events and back, so upcasting (``class_version`` / ``upcast_vN_vN+1``) happens in one
place for every reader: command handlers, projectors, the relay and replay.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast
from urllib.parse import parse_qs, unquote, urlparse
from uuid import UUID, uuid4, uuid5

from eventsourcing.persistence import (
    DatetimeAsISO,
    InfrastructureFactory,
    IntegrityError,
    InterfaceError,
    JSONTranscoder,
    Mapper,
    OperationalError,
    StoredEvent,
    UUIDAsHex,
)
from eventsourcing.persistence import (
    EventStore as LibraryEventStore,
)
from eventsourcing.utils import Environment, get_topic, resolve_topic

from commands.catalogue_race import create_racing
from commands.personal_data import KeyStore, PersonalData, parse_master_keys
from domain.accounts import AccountErased
from domain.aggregate import Aggregate, DomainEvent
from domain.catalogue import EVENT_TYPES
from domain.ids import NAMESPACE

if TYPE_CHECKING:
    from stories.settings import Settings

A = TypeVar("A", bound=Aggregate)
_DOMAIN_EVENTS = frozenset(EVENT_TYPES.values())
PROBE_INTERVAL_S = 1.0


class StreamConflict(Exception):
    """Another writer appended to one of the streams first (optimistic concurrency)."""


class StoreUnavailable(Exception):
    """The database cannot be reached."""


UNREACHABLE = "the event store is unreachable; retrying in the background"


class Loader(Protocol):
    """Loads an aggregate by replaying its stream (``EventStore.load``, or ``reading``'s loader)."""

    def __call__(self, cls: type[A], aggregate_id: UUID, *, last: bool = False) -> A | None: ...


@dataclass(frozen=True)
class LoggedEvent:
    """A domain event with its place in the one global log order."""

    position: int
    event: DomainEvent

    @property
    def event_id(self) -> UUID:
        # Stable across reads and re-publication, so consumers can deduplicate on it.
        return uuid5(NAMESPACE, f"{self.event.originator_id}:{self.event.originator_version}")

    def envelope(self, platform: str) -> dict:
        """The contract's JSON envelope; ``"erased": true`` when an erased person's data in it
        reads null (``../shared/CONTRACT.md``, "Erasure")."""
        event = self.event
        envelope = {
            "event_id": str(self.event_id),
            "event_type": event.event_type,
            "stream_id": str(event.originator_id),
            "stream_version": event.originator_version,
            "position": self.position,
            "occurred_at": event.occurred_at.isoformat(),
            "platform": platform,
            "schema_version": event.class_version,
            "data": event.data(),
        }
        if event.erased:
            envelope["erased"] = True
        return envelope


class PersonalDataMapper(Mapper[UUID]):
    """eventsourcing's mapper, with each event's personal fields sealed with their person's key
    (``commands.personal_data``) and streams derived from user ids stored under keyed ids.
    The reader's notes (``_erased``, ``AccountErased``'s ``_user_id``) are never stored."""

    def __init__(self, transcoder: JSONTranscoder, keys: KeyStore, encrypt: bool) -> None:
        super().__init__(transcoder=transcoder)
        self.keys = keys
        self.personal = PersonalData(keys)
        self.encrypt = encrypt

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        cls = type(domain_event)
        state = {k: v for k, v in vars(domain_event).items() if not k.startswith("_")}
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        if self.encrypt:
            self.personal.seal(cls, state)
        if cls.class_version > 1:
            state["class_version"] = cls.class_version
        return StoredEvent(
            originator_id=self.keys.physical_stream(originator_id),
            originator_version=originator_version,
            topic=get_topic(cls),
            state=self.transcoder.encode(state),
        )

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        cls = resolve_topic(stored_event.topic)
        state = self.transcoder.decode(stored_event.state)
        erased = self.personal.open(cls, state)  # whether or not this process seals new ones (``encrypt``)
        originator_id = stored_event.originator_id
        state["originator_id"] = originator_id if isinstance(originator_id, UUID) else UUID(str(originator_id))
        state["originator_version"] = stored_event.originator_version
        class_version = getattr(cls, "class_version", 1)
        from_version = state.pop("class_version", 1)
        while from_version < class_version:
            getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(state)
            from_version += 1
        if erased:
            state["_erased"] = erased
        if cls is AccountErased:
            # Forget the person's key in this process from here on in log order, and learn
            # whom the projectors must purge (while the key store still says).
            state["_user_id"] = self.keys.erased_user(state["pseudonym"])
        event = object.__new__(cls)
        object.__setattr__(event, "__dict__", state)
        return event


def persistence_env(url: str) -> dict[str, str]:
    """eventsourcing's settings for ``sqlite:///path``, ``sqlite:///:memory:`` (a log that lives as
    long as its EventStore: tests, demos) or ``postgresql://user:pw@host:port/db?schema=s``."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite" and parsed.path.lstrip("/") == ":memory:":
        # One shared-cache database per store: the recorder's pool holds several connections
        # (threads), and a plain ":memory:" would give each its own empty database.
        name = f"file:stories-{uuid4().hex}?mode=memory&cache=shared"
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": name}
    if parsed.scheme == "sqlite":
        path = unquote(parsed.path)
        if parsed.netloc:  # sqlite://relative/path
            path = parsed.netloc + path
        if path.startswith("//"):
            path = path[1:]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": path, "SQLITE_LOCK_TIMEOUT": "30"}
    if parsed.scheme in ("postgresql", "postgres"):
        query = parse_qs(parsed.query)
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": parsed.path.lstrip("/") or "stories",
            "POSTGRES_HOST": parsed.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parsed.port or 5432),
            "POSTGRES_USER": unquote(parsed.username or os.environ.get("USER", "postgres")),
            "POSTGRES_PASSWORD": unquote(parsed.password or ""),
            "POSTGRES_POOL_SIZE": "10",
            # eventsourcing retries a failed call 10 times; a short connect timeout bounds that.
            "POSTGRES_CONNECT_TIMEOUT": "1",
        }
        if "schema" in query:
            env["POSTGRES_SCHEMA"] = query["schema"][0]
        return env
    raise ValueError(f"unsupported event store URL {url!r}: use sqlite:///path or postgresql://...")


@dataclass(frozen=True)
class _Connected:
    """What exists once the database was first reached (and is kept from then on)."""

    # eventsourcing's SQLite or PostgreSQL recorder: ``datastore`` and ``events_table_name`` are
    # theirs, not the ``ApplicationRecorder`` interface's.
    recorder: Any
    keys: KeyStore
    mapper: PersonalDataMapper
    events: LibraryEventStore[UUID]


class EventStore:
    """Loads aggregates, appends events atomically, reads the log in position order."""

    def __init__(
        self,
        url: str,
        *,
        master_keys: str | None = None,
        encrypt: bool = True,
        purge_window: timedelta = timedelta(days=7),
    ) -> None:
        """``master_keys``: ``STORIES_MASTER_KEYS`` (commands/personal_data.py); ``encrypt``:
        seal new events' personal data (off only to measure what it costs)."""
        self.url = url
        env = Environment("stories", persistence_env(url))
        self._factory = InfrastructureFactory.construct(env)
        self._transcoder = JSONTranscoder()
        self._transcoder.register(UUIDAsHex())
        self._transcoder.register(DatetimeAsISO())
        self._master_keys, self._encrypt, self._purge_window = parse_master_keys(master_keys), encrypt, purge_window
        self._connected: _Connected | None = None
        # Circuit breaker: while the database is down, calls fail at once (503) and one
        # background probe waits for it, instead of every caller sitting out the driver's retries.
        self._down = threading.Event()
        self._probe_lock = threading.Lock()
        try:
            self._connect()
        except (OperationalError, InterfaceError) as error:
            self._trip(error)

    def _connect(self) -> _Connected:
        if self._connected is None:
            recorder = self._create_recorder()
            legacy = (recorder.max_notification_id() or 0) > 0
            keys = KeyStore(recorder.datastore, self._master_keys, legacy_log=legacy, purge_window=self._purge_window)
            mapper = PersonalDataMapper(self._transcoder, keys, self._encrypt)
            events = LibraryEventStore(mapper=mapper, recorder=recorder)
            self._connected = _Connected(recorder, keys, mapper, events)
        return self._connected

    def _create_recorder(self) -> Any:
        # The recorder creates its tables, types and functions "if not exists": see catalogue_race.
        return create_racing(self._factory.application_recorder)

    @property
    def recorder(self) -> Any:
        return self._guard().recorder

    @property
    def keys(self) -> KeyStore:
        """The key store (``commands.personal_data``); StoreUnavailable until the database was
        first reached."""
        if self._connected is None:
            raise StoreUnavailable(UNREACHABLE)
        return self._connected.keys

    @property
    def _mapper(self) -> PersonalDataMapper:
        if self._connected is None:
            raise StoreUnavailable(UNREACHABLE)
        return self._connected.mapper

    def _guard(self) -> _Connected:
        if self._down.is_set() or self._connected is None:
            raise StoreUnavailable(UNREACHABLE)
        return self._connected

    def _trip(self, error: Exception) -> StoreUnavailable:
        with self._probe_lock:
            if not self._down.is_set():
                self._down.set()
                threading.Thread(target=self._probe, name="event-store-probe", daemon=True).start()
        return StoreUnavailable(str(error))

    def _probe(self) -> None:
        while True:
            time.sleep(PROBE_INTERVAL_S)
            try:
                self._connect().recorder.max_notification_id()
            except Exception:
                continue
            self._down.clear()
            return

    def load(self, cls: type[A], aggregate_id: UUID, *, last: bool = False) -> A | None:
        """Replay the stream; with ``last``, only its newest event (for streams whose every
        event holds the whole state, e.g. the limit tallies: O(1) however long they grow)."""
        connected = self._guard()
        stored_id = connected.keys.physical_stream(aggregate_id)
        try:
            if last:
                rows = self.recorder.select_events(stored_id, desc=True, limit=1)
                return cls.replay(aggregate_id, map(connected.mapper.to_domain_event, rows))
            # Our mapper makes our domain events (the library's signature names its own protocol).
            return cls.replay(aggregate_id, cast(Iterator[DomainEvent], connected.events.get(stored_id)))
        except (OperationalError, InterfaceError) as error:
            raise self._trip(error) from error

    def _events_query(self, columns: str, where: str) -> tuple[Any, str, Callable[[UUID], Any]]:
        """(datastore, SQL, how a stream id is passed) to read the recorder's events table
        directly, in SQLite's or PostgreSQL's dialect: ``where`` uses ``?`` placeholders and
        ``columns`` may name ``{position}`` (the log position)."""
        datastore, table = self.recorder.datastore, self.recorder.events_table_name
        if hasattr(datastore, "schema"):  # PostgreSQL
            sql = f'SELECT {columns} FROM "{datastore.schema}"."{table}" WHERE {where}'
            return datastore, sql.format(position="notification_id").replace("?", "%s"), lambda key: key
        sql = f"SELECT {columns} FROM {table} WHERE {where}"
        return datastore, sql.format(position="rowid"), lambda key: key.hex

    @contextmanager
    def reading(self) -> Iterator[Loader]:
        """A loader that reads many streams through one connection and one read transaction
        (a group-commit batch loads dozens; opening a transaction per load dominated its cost).
        ``load(cls, id, last=True)`` reads only the stream's newest event (see ``load``)."""
        datastore, sql, key_of = self._events_query(
            "originator_version, topic, state", "originator_id = ? ORDER BY originator_version"
        )
        sql_last = sql + " DESC LIMIT 1"
        to_event, stored = self._mapper.to_domain_event, self.keys.physical_stream
        try:
            with datastore.transaction(commit=False) as cursor:

                def load(cls: type[A], aggregate_id: UUID, *, last: bool = False) -> A | None:
                    try:
                        stored_id = stored(aggregate_id)
                        cursor.execute(sql_last if last else sql, (key_of(stored_id),))
                        rows = cursor.fetchall()
                    except (OperationalError, InterfaceError) as error:
                        raise self._trip(error) from error
                    return cls.replay(
                        aggregate_id,
                        (
                            to_event(StoredEvent(stored_id, row["originator_version"], row["topic"], row["state"]))
                            for row in rows
                        ),
                    )

                yield load
        except (OperationalError, InterfaceError) as error:
            raise self._trip(error) from error

    def append(self, events: Sequence[DomainEvent]) -> list[int]:
        """Store ``events`` in one transaction, in this order; their positions in the log."""
        if not events:
            return []
        connected = self._guard()
        try:
            if self._encrypt:  # every key the batch needs, in one transaction before it (not one per person)
                connected.keys.ensure(p for e in events for p in PersonalData.people(type(e), vars(e)))
            recordings = connected.events.put(events)
        except IntegrityError as error:
            raise StreamConflict(str(error)) from error
        except (OperationalError, InterfaceError) as error:
            raise self._trip(error) from error
        return [r.notification.id for r in recordings]

    def position_of(self, aggregate_id: UUID, version: int) -> int | None:
        """Where one stored event sits in the log (eventsourcing has no public call for this)."""
        recorder = self.recorder
        datastore, table = recorder.datastore, recorder.events_table_name
        aggregate_id = self.keys.physical_stream(aggregate_id)
        try:
            with datastore.transaction(commit=False) as cursor:
                if hasattr(datastore, "schema"):  # PostgreSQL
                    cursor.execute(
                        f'SELECT notification_id FROM "{datastore.schema}"."{table}" '
                        "WHERE originator_id = %s AND originator_version = %s",
                        (aggregate_id, version),
                    )
                    row = cursor.fetchone()
                    return row["notification_id"] if row else None
                cursor.execute(
                    f"SELECT rowid FROM {table} WHERE originator_id = ? AND originator_version = ?",
                    (aggregate_id.hex, version),
                )
                row = cursor.fetchone()
                return row[0] if row else None
        except (OperationalError, InterfaceError) as error:
            raise self._trip(error) from error

    def stored_positions(self, events: Sequence[DomainEvent]) -> list[int] | None:
        """Are these very events in the log already? Their positions if every one is stored
        with the same type and content, else None (at the first that is not: one query on a
        real conflict, since a batch is stored whole or not at all).

        For an append that failed on uniqueness: when the connection drops after ``COMMIT``
        reached PostgreSQL, the driver's retry of the insert meets the batch's own rows, and
        re-running its commands would store them twice."""
        if not events:
            return []
        datastore, sql, key_of = self._events_query(
            "{position} AS position, topic, state", "originator_id = ? AND originator_version = ?"
        )
        try:
            with datastore.transaction(commit=False) as cursor:
                positions = []
                for event in events:
                    stored_id = self.keys.physical_stream(event.originator_id)
                    cursor.execute(sql, (key_of(stored_id), event.originator_version))
                    row = cursor.fetchone()
                    # Compared opened: sealed values differ in every write (a fresh nonce each).
                    if (
                        row is None
                        or row["topic"] != get_topic(type(event))
                        or not self._same(
                            event, StoredEvent(stored_id, event.originator_version, row["topic"], bytes(row["state"]))
                        )
                    ):
                        return None
                    positions.append(row["position"])
                return positions
        except (OperationalError, InterfaceError) as error:
            raise self._trip(error) from error

    def _same(self, event: DomainEvent, stored: StoredEvent) -> bool:
        found = self._mapper.to_domain_event(stored)
        # An erased person's values were sealed with a key nobody keeps: they cannot be compared.
        skip = {"originator_id", *found.erased_fields}
        ours = {k: v for k, v in vars(event).items() if not k.startswith("_") and k not in skip}
        theirs = {k: v for k, v in vars(found).items() if not k.startswith("_") and k not in skip}
        return ours == theirs

    def copy_from(
        self, source: EventStore, batch: int = 1000, on_batch: Callable[[int, int], None] | None = None
    ) -> int:
        """Append every record of ``source`` (private ones too), in its order, through this
        store's mapper (``stories reencrypt``); how many. ``on_batch(position, head)`` after each."""
        copied, after, head = 0, 0, source.head()
        while True:
            rows = source.recorder.select_notifications(after + 1, batch)
            if not rows:
                return copied
            self.append([source._mapper.to_domain_event(row) for row in rows])
            copied, after = copied + len(rows), rows[-1].id
            if on_batch is not None:
                on_batch(after, head)

    def head(self) -> int:
        """The position of the newest event (0 for an empty log)."""
        recorder = self.recorder
        try:
            return recorder.max_notification_id() or 0
        except (OperationalError, InterfaceError) as error:
            raise self._trip(error) from error

    def read_batch(self, after: int, limit: int, until: int | None = None) -> tuple[list[LoggedEvent], int]:
        """Up to ``limit`` log rows after ``after``: their domain events, and the position
        reached (past internal records too, so a reader never stalls on them)."""
        recorder = self.recorder
        try:
            rows = recorder.select_notifications(after + 1, limit, stop=until)
        except (OperationalError, InterfaceError) as error:
            raise self._trip(error) from error
        events = []
        for row in rows:
            event = self._mapper.to_domain_event(row)
            if type(event) in _DOMAIN_EVENTS:
                events.append(LoggedEvent(row.id, event))
        return events, (rows[-1].id if rows else after)

    def read(self, after: int = 0, until: int | None = None, batch_size: int = 1000) -> Iterator[LoggedEvent]:
        """Domain events after ``after`` up to ``until``, in log order (internal records skipped)."""
        while True:
            events, reached = self.read_batch(after, batch_size, until)
            yield from events
            if reached == after or (until is not None and reached >= until):
                return
            after = reached

    def close(self) -> None:
        self._factory.close()


def open_event_store(settings: Settings) -> EventStore:
    """The event log of ``settings``, with the key store's settings (personal data, erasure)."""
    if settings.event_store_url is None:  # cannot be: Settings fills in its default
        raise ValueError("no event store URL in the settings")
    return EventStore(
        settings.event_store_url,
        master_keys=settings.master_keys,
        encrypt=settings.encrypt_personal_data,
        purge_window=settings.erasure_purge_window,
    )
