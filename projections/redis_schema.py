"""The Redis read model's layout: one typed module that the projector writes and the query API
reads, so neither guesses the other's keys or encodings.

Redis holds the social graph and the live window, nothing that grows with history:

| key (``P`` = prefix)      | tag | type   | what                                      | lifetime |
| ------------------------- | --- | ------ | ----------------------------------------- | -------- |
| ``P:following:{u}``       | u | set    | whom ``u`` follows                              | graph |
| ``P:followers:{u}``       | u | set    | who follows ``u``                               | graph |
| ``P:cf:{u}``              | u | set    | ``u``'s close friends                           | graph |
| ``P:cfof:{u}``            | u | set    | owners whose close-friends list holds ``u``     | graph |
| ``P:muted:{u}``           | u | set    | authors ``u`` muted (left out of ``u``'s tray)   | graph |
| ``P:mutedby:{u}``         | u | set    | who muted ``u`` (the reverse of ``muted``: erasure removes ``u`` from theirs) | graph |
| ``P:named:{u}``           | u | zset   | live stories whose keys name ``u`` (``u``'s answers in ``mine``/``qa``, ``u`` in ``aud``/``hid``): story id -> its expiry (ms) | trimmed two days after each story's expiry; key expires with the last |
| ``P:live:{u}``            | u | set    | ``u``'s live stories, each a `LiveEntry`        | a member per live story; key expires with the last |
| ``P:seen:{u}``            | u | zset   | stories ``u`` has seen: story id -> first view (ms); ``~due`` -> when the last of them expires | trimmed by view time; reclaimed when due |
| ``P:at:{u}``              | u | hash   | stamps: view -> last log position applied to ``u``'s keys | two days after the last write |
| ``P:card:{s}``            | s | string | the story's content (its StoryCreated data, served shape) | story's life |
| ``P:n:{s}``               | s | hash   | counters and sticker tallies (`CounterField`), ``m``: its live member, ``e``: its latest edit, ``@<view>``: stamps | story's life |
| ``P:mine:{s}``            | s | hash   | ``"<sticker>:<user>"`` -> that user's answer    | story's life |
| ``P:aud:{s}`` / ``P:hid:{s}`` | s | set | a custom story's allowed viewers / hidden viewers | story's life |
| ``P:qa:{s}``              | s | list   | the latest question responses (JSON), newest first | story's life |
| ``P:erased:{~erased}``    | ~erased | zset | erased accounts: pseudonym -> when erased (ms), for refusing their tokens | trimmed after ``ERASED_KEPT`` (400 days) |
| ``P:seen_due``            | - | zset   | viewer -> when the last story they saw expires (ms); idempotent writes only | an entry per viewer who saw a live story |
| ``P:expiry:{~expiry}``    | ~expiry | zset | the expirer's schedule (its own view), stamps ``P:at:{~expiry}`` | story's life |
| ``P:position:<view>``     | - | string | the last log position each view applied        | permanent |
| ``P:wait:{tag}``          | tag | string | a marker written before WAIT (``STORIES_REDIS_WAIT_REPLICAS``) | 10 s |
| ``P:changes``             | - | channel | sharded pub/sub (SPUBLISH): what each applied batch changed | not stored |

A story whose owner is erased is a *ghost*: its counters hash holds only a member naming nobody
(``LiveEntry.ghost``: story id and expiry, no author, privacy or flags) and its stamps, nothing
else: no card, counters, answers, lists or live-set member. A replay of the erased log makes the
ghost from the owner-less ``StoryCreated``; the live projector's ``AccountErased`` purge turns the
person's live stories into the same ghosts. A ghost lets the viewers' and answerers' own keys
(``seen``, ``named``, ``seen_due``) come out the same both ways; it goes with the story's end
like any story's keys.

"Story's life": deleted when the story's ``StoryExpired`` or ``StoryDeleted`` is applied, and
created with a time to live of the story's remaining life plus a grace period, a safety net
should an event ever be missed. The braces are Redis Cluster hash tags: all of one user's keys
share a slot, and so do all of one story's, so each tag's share of a batch is applied by one
script in one slot (``projections.redis_views``), and the query API's multi-key reads for one
user stay in one slot. A user id that equals a story id merely shares its slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import orjson

LONGEST_LIFE = timedelta(hours=48)  # no story lives longer (domain: expires_in_hours <= 48)
# MongoDB sums slider answers scaled by 2**-64 (``ssum``): a power of two scales exactly, and a
# sum of any values inside any finite range then cannot overflow a double (an unscaled sum of
# values near 1e308 did, and the average became null). Redis sums them unscaled in long double.
SLIDER_SUM_SCALE = 2.0**-64
RESPONSES_KEPT = 5  # question responses a served story carries; all of them are on /answers
# The Redis view's name, in its position key. Versioned with the layout: a projector that finds no
# position for this version rebuilds Redis from the start of the log, so an upgrade needs no step.
VIEW_NAME = "redis_views.v2"
LEGACY_KEYS = ("views", "replies", "answer:", "countdown:", "position:redis_views")  # layout v1
SEEN_DUE = "~due"  # the member of a seen set whose score is when the last story in it expires
ERASED_TAG = "~erased"  # the erased accounts' pseudonyms (``P:erased:{~erased}``)
ERASED_KEPT = timedelta(days=400)  # an erased pseudonym is kept this long (longer than any token lives)
EXPIRY_TAG = "~expiry"  # the expirer's schedule and its stamps (not a read model: replay keeps them)

# Key kinds that make up the read models (replay clears these; relay and expirer keep theirs).
READ_MODEL_KEYS = (
    "following:",
    "followers:",
    "cf:",
    "cfof:",
    "muted:",
    "live:",
    "seen:",
    "seen_due",
    "card:",
    "n:",
    "mine:",
    "aud:",
    "hid:",
    "qa:",
    "mutedby:",
    "named:",
    "erased:",
    "at:",
    "wait:",
    "position:redis_views",
)  # v1 and v2 positions


def hash_tag(key: str) -> str | None:
    """The key's Redis Cluster hash tag (what its slot is computed from), None when it has none."""
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    return key[start + 1 : end] if end > start + 1 else None


class Keys:
    def __init__(self, prefix: str) -> None:
        self.p = prefix

    # one user's keys (hash tag: the user id)
    def following(self, u: str) -> str:
        return f"{self.p}following:{{{u}}}"

    def followers(self, u: str) -> str:
        return f"{self.p}followers:{{{u}}}"

    def close_friends(self, owner: str) -> str:
        return f"{self.p}cf:{{{owner}}}"

    def close_friend_of(self, u: str) -> str:
        return f"{self.p}cfof:{{{u}}}"

    def muted(self, u: str) -> str:
        return f"{self.p}muted:{{{u}}}"

    def live(self, author: str) -> str:
        return f"{self.p}live:{{{author}}}"

    def seen(self, viewer: str) -> str:
        return f"{self.p}seen:{{{viewer}}}"

    def muted_by(self, u: str) -> str:
        return f"{self.p}mutedby:{{{u}}}"

    def named(self, u: str) -> str:
        return f"{self.p}named:{{{u}}}"

    def user_keys(self, u: str) -> tuple[str, ...]:
        """Everything Redis holds under one user's tag (their stamps aside)."""
        return (
            self.following(u),
            self.followers(u),
            self.close_friends(u),
            self.close_friend_of(u),
            self.muted(u),
            self.muted_by(u),
            self.live(u),
            self.seen(u),
            self.named(u),
        )

    # one story's keys (hash tag: the story id)
    def card(self, story: str) -> str:
        return f"{self.p}card:{{{story}}}"

    def counters(self, story: str) -> str:
        return f"{self.p}n:{{{story}}}"

    def answers(self, story: str) -> str:
        return f"{self.p}mine:{{{story}}}"

    def allowed(self, story: str) -> str:
        return f"{self.p}aud:{{{story}}}"

    def hidden(self, story: str) -> str:
        return f"{self.p}hid:{{{story}}}"

    def responses(self, story: str) -> str:
        return f"{self.p}qa:{{{story}}}"

    @property
    def changes(self) -> str:
        """The sharded pub/sub channel of the projector's change notices (``change_notice``)."""
        return f"{self.p}changes"

    def wait_marker(self, tag: str) -> str:
        """A marker the projector writes (10 s) before WAIT, in a slot it has just written to."""
        return f"{self.p}wait:{{{tag}}}"

    def stamps(self, tag: str) -> str:
        """A hash tag's stamps (view -> last log position applied), in the tag's own slot."""
        return f"{self.p}at:{{{tag}}}"

    def story_keys(self, story: str) -> tuple[str, ...]:
        """Everything Redis holds for one story (the live-set member aside)."""
        return (
            self.card(story),
            self.counters(story),
            self.answers(story),
            self.allowed(story),
            self.hidden(story),
            self.responses(story),
        )

    # shared
    @property
    def seen_due(self) -> str:
        return f"{self.p}seen_due"

    @property
    def erased(self) -> str:
        return f"{self.p}erased:{{{ERASED_TAG}}}"

    @property
    def expiry_due(self) -> str:
        return f"{self.p}expiry:{{{EXPIRY_TAG}}}"

    @property
    def legacy_expiry(self) -> tuple[str, str]:  # before the cluster layout: untagged
        return f"{self.p}expiry:due", f"{self.p}position:expiry_schedule"

    def position(self, name: str) -> str:
        return f"{self.p}position:{name}"


def answer_field(sticker_index: int, user_id: str) -> str:
    return f"{sticker_index}:{user_id}"


@dataclass(frozen=True)
class LiveEntry:
    """A member of an author's live set: all the tray needs to order and filter an author's
    stories without reading their cards. ``lists`` holds flags: "w" a custom allow-list applies,
    "h" a hidden list does, "i" the story has a sticker each user gets their answer back from
    (poll, quiz, slider, countdown), "q" a question sticker. Fixed when the story is created, so
    the projector can remove the exact member when the story goes."""

    story_id: str
    user_id: str
    privacy: str
    created_ms: int
    expires_ms: int
    lists: str = ""

    @property
    def ghost(self) -> bool:
        """The story of an erased owner: nothing of it is kept but this (module docstring)."""
        return not self.user_id

    def as_ghost(self) -> LiveEntry:
        return LiveEntry(self.story_id, "", "", 0, self.expires_ms, "")

    def encode(self) -> str:
        return f"{self.story_id}|{self.user_id}|{self.privacy}|{self.created_ms}|{self.expires_ms}|{self.lists}"

    @classmethod
    def decode(cls, member: bytes | str) -> LiveEntry:
        text = member.decode() if isinstance(member, bytes) else member
        story_id, user_id, privacy, created_ms, expires_ms, lists = text.split("|")
        return cls(story_id, user_id, privacy, int(created_ms), int(expires_ms), lists)


class CounterField:
    """Field names of a story's counter hash ``P:n:{s}``."""

    VIEWS, UNIQUE_VIEWERS, REPLIES, MEMBER, EDIT = "v", "u", "r", "m", "e"

    @staticmethod
    def total(i: int) -> str:
        return f"{i}:t"

    @staticmethod
    def option(i: int, k: int) -> str:
        return f"{i}:o{k}"

    @staticmethod
    def correct(i: int) -> str:
        return f"{i}:c"

    @staticmethod
    def slider_sum(i: int) -> str:
        return f"{i}:s"

    @staticmethod
    def followers(i: int) -> str:
        return f"{i}:f"


def counters_from_hash(raw: dict[bytes, bytes]) -> dict[str, Any]:
    """A counter hash as the fields a MongoDB story document carries: ``view_count``,
    ``unique_viewers``, ``reply_count`` and ``results`` (``{"<i>": {"total", "options": {"<k>": n},
    "correct", "sum", "followers"}}``), and an edited story's content, ``edited`` and ``edited_at``
    (laid over the card), so one presenter serves both stores' stories."""
    out: dict[str, Any] = {"view_count": 0, "unique_viewers": 0, "reply_count": 0, "results": {}}
    names = {
        CounterField.VIEWS: "view_count",
        CounterField.UNIQUE_VIEWERS: "unique_viewers",
        CounterField.REPLIES: "reply_count",
    }
    results: dict[str, dict[str, Any]] = out["results"]
    for key, value in raw.items():
        field = key.decode()
        if field in names:
            out[names[field]] = int(value)
            continue
        if field == CounterField.EDIT:
            out.update(orjson.loads(value))
            continue
        index, sep, name = field.partition(":")
        if not sep or not index.isdigit():
            continue  # the live member and anything else that is not a tally
        tally = results.setdefault(index, {})
        if name == "t":
            tally["total"] = int(value)
        elif name == "c":
            tally["correct"] = int(value)
        elif name == "f":
            tally["followers"] = int(value)
        elif name == "s":
            tally["sum"] = Decimal(value.decode())  # printed in full by Redis: exact, any size
        elif name.startswith("o"):
            tally.setdefault("options", {})[name[1:]] = int(value)
    return out
