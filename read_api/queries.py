"""Read-model queries for one caller, with the contract's visibility rules.

Live stories are served from Redis (the tray) or MongoDB (everything else); expired ones from
MongoDB alone, since Redis lets a story's state go when it expires. Both become one served shape
through ``_present``. Visibility is the domain's own pure rule (``domain.visibility``), so the
command side and the query side cannot disagree. Every list is a page (``read_api.pages``) read
with a fixed number of round trips, whatever the caller's history.
"""

from __future__ import annotations

import asyncio
import base64
import os
import zlib
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from domain.engagement import NavigationAction
from domain.errors import Forbidden, NotFound
from domain.ids import canonical_id
from domain.platform import Platform
from domain.stories import is_live as story_is_live
from domain.visibility import Privacy, Relationship, audience_allows
from projections.mongo_schema import NOT_GONE
from projections.redis_schema import RESPONSES_KEPT, Keys, answer_field, counters_from_hash
from read_api import presenter
from read_api.pages import Cursors, invalid_cursor, page
from stories.backends import AsyncRedis, read_pipeline, slot_groups

ANSWERED_KINDS = ("poll", "quiz", "slider", "countdown")  # stickers with a per-user answer to show
# Privacies as the tray's hashes hold them (bytes). BROAD: audiences every follower (entativa: friend) is in.
BROAD = {p.encode() for p in (Privacy.PUBLIC, Privacy.FOLLOWERS, Privacy.FRIENDS)}
CLOSE_FRIENDS, CUSTOM = Privacy.CLOSE_FRIENDS.encode(), Privacy.CUSTOM.encode()
SEEN_READ = 2000  # a viewer's seen set is read whole up to this size, else asked about the page's candidates
MAX_STICKERS = 10


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


async def is_erased(redis: AsyncRedis, keys: Keys | str, pseudonym: str) -> bool:
    """Whether the account of this pseudonym (``domain.accounts.AccountErased``) was erased, by the
    Redis read model's ``P:erased:{~erased}`` (``keys``: the read side's ``Keys`` or its prefix).
    It holds each pseudonym ``ERASED_KEPT`` (400 days), longer than any token lives."""
    k = Keys(keys) if isinstance(keys, str) else keys
    return await redis.zscore(k.erased, pseudonym) is not None


def _named_ids(ids: list | None) -> list[str]:
    return [i for i in ids or () if i is not None]


def _unnamed(doc: dict) -> dict:
    """A story without its erased entries: a list of people in which an erased person reads None
    (their key is gone) is served without them."""
    lists = {
        name: [i for i in doc[name] if i is not None]
        for name in ("allowed_viewer_ids", "hidden_from_ids")
        if doc.get(name) and None in doc[name]
    }
    return {**doc, **lists} if lists else doc


def _responses(raw: list[bytes]) -> list[dict]:
    """Question responses as served: an erased person's (kept for its place, naming nobody) are left out."""
    return [
        {key: r[key] for key in ("user_id", "text", "answered_at")}
        for r in map(orjson.loads, raw)
        if r.get("user_id") is not None
    ]


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def is_live(doc: dict, now: datetime) -> bool:
    return story_is_live(
        deleted=bool(doc.get("deleted")),
        expired=bool(doc.get("expired")),
        expires_at=presenter.instant(doc["expires_at"]),
        now=now,
    )


def may_see(doc: dict, viewer: str, relationship: Relationship) -> bool:
    """Audience only (highlights ignore expiry); the owner always may."""
    return audience_allows(
        owner_id=doc["user_id"],
        privacy=doc["privacy"],
        allowed_viewer_ids=doc.get("allowed_viewer_ids", ()),
        hidden_from_ids=doc.get("hidden_from_ids", ()),
        viewer_id=viewer,
        relationship=relationship,
    )


def _path_id(value: str, what: str) -> str:
    """A story or highlight id from a path, in any spelling of a UUID, as the read models hold
    it (canonical); anything else names nothing (404)."""
    canonical = canonical_id(value)
    if canonical is None:
        raise NotFound(f"{what} not found")
    return canonical


def _short_hash(value: str) -> bytes:
    return zlib.crc32(value.encode()).to_bytes(4, "big")


def _after(sort: list[tuple[str, int]], last: list[Any]) -> dict:
    """The keyset filter for "strictly after ``last``" in a two-field sort order."""
    (f1, d1), (f2, d2) = sort
    op1, op2 = ("$gt" if d1 > 0 else "$lt"), ("$gt" if d2 > 0 else "$lt")
    return {"$or": [{f1: {op1: last[0]}}, {f1: last[0], f2: {op2: last[1]}}]}


def _position(cursor_values: list[Any]) -> list[Any]:
    """A decoded keyset position: [epoch ms, id]."""
    if len(cursor_values) != 2 or not isinstance(cursor_values[0], int) or not isinstance(cursor_values[1], str):
        raise invalid_cursor()
    return [_at(cursor_values[0]), cursor_values[1]]


class Queries:
    async def is_erased(self, pseudonym: str) -> bool:
        """``is_erased`` on this read side's Redis and prefix."""
        return await is_erased(self.redis, self.keys, pseudonym)

    def __init__(
        self,
        mongo: AsyncMongoClient,
        database: str,
        redis: AsyncRedis,
        prefix: str,
        platform: Platform,
        cursors: Cursors | None = None,
    ) -> None:
        self.db = mongo[database]
        self.redis = redis
        self.keys = Keys(prefix)
        self.platform = platform
        # Without a configured secret (tests), cursors are good for this process only.
        self.cursors = cursors or Cursors(os.urandom(32))

    # -- graph ----------------------------------------------------------------------------

    async def relationship(self, owner: str, viewer: str) -> Relationship:
        if owner == viewer:
            return Relationship()
        k = self.keys
        async with self.redis.pipeline(transaction=False) as p:
            p.sismember(k.followers(owner), viewer)
            p.sismember(k.following(owner), viewer)
            p.sismember(k.close_friends(owner), viewer)
            follows, followed, close = await p.execute()
        return Relationship(bool(follows), bool(followed), bool(close))

    async def audience_size(self, doc: dict) -> int:
        owner, privacy, k = doc["user_id"], doc["privacy"], self.keys
        if privacy == Privacy.CUSTOM:
            return len(_named_ids(doc.get("allowed_viewer_ids")))
        if privacy == Privacy.CLOSE_FRIENDS:
            return await self.redis.scard(k.close_friends(owner))
        if privacy == Privacy.FRIENDS or (privacy == Privacy.PUBLIC and self.platform is Platform.ENTATIVA):
            return len(await self.redis.sinter([k.following(owner), k.followers(owner)]))
        return await self.redis.scard(k.followers(owner))

    # -- serving stories --------------------------------------------------------------------

    @staticmethod
    def _present(
        doc: dict, viewer: str, now: datetime, *, seen: bool, mine: dict[int, dict], responses: list[dict] | None
    ) -> dict:
        """The one served shape of a story, from a MongoDB document or a Redis card with its
        counters (``projections.redis_schema.counters_from_hash`` gives them the same fields)."""
        doc = _unnamed(doc)
        owner = viewer == doc["user_id"]
        story = presenter.base_story(
            doc,
            viewer,
            now,
            viewed_by_me=seen,
            view_count=doc.get("view_count", 0),
            reply_count=doc.get("reply_count", 0),
        )
        results = doc.get("results", {})
        story["stickers"] = [
            presenter.sticker_with_results(
                i,
                sticker,
                results,
                mine.get(i, {}),
                owner,
                now,
                responses if sticker["sticker_type"] == "question" else None,
            )
            for i, sticker in enumerate(doc.get("stickers") or [])
        ]
        if owner:
            story["unique_viewers"] = doc.get("unique_viewers", 0)
        return story

    @staticmethod
    def _mine(doc: dict, raw: list[bytes | None] | None) -> dict[int, dict]:
        """The caller's own answers, from ``HMGET mine:{s} 0:<viewer> ... 9:<viewer>``."""
        out: dict[int, dict] = {}
        for i, sticker in enumerate(doc.get("stickers") or []):
            kind = sticker["sticker_type"]
            value = raw[i] if raw is not None and i < len(raw) else None
            if kind == "countdown":
                out[i] = {"following": value is not None}
            elif kind in ANSWERED_KINDS and value is not None:
                out[i] = {"value": float(value)} if kind == "slider" else {"option": int(value)}
        return out

    @staticmethod
    def _mine_fields(viewer: str) -> list[str]:
        return [answer_field(i, viewer) for i in range(MAX_STICKERS)]

    def _ask_mine(self, p, story_id: str, viewer: str) -> None:
        p.hmget(self.keys.answers(story_id), self._mine_fields(viewer))

    async def serve_docs(self, docs: list[dict], viewer: str, now: datetime) -> list[dict]:
        """MongoDB story documents as served: one Redis round trip for what the caller has seen
        and answered, and the latest question responses for the owner's own stories."""
        if not docs:
            return []
        live = [d for d in docs if is_live(d, now)]  # Redis keeps nothing of the others
        seen_at: list[float | None] = []
        mine_raw: dict[str, list] = {}
        if live:
            async with self.redis.pipeline(transaction=False) as p:
                p.zmscore(self.keys.seen(viewer), [d["_id"] for d in live])
                for d in live:
                    self._ask_mine(p, d["_id"], viewer)
                seen_at, *answers = await p.execute()
            mine_raw = {d["_id"]: a for d, a in zip(live, answers)}
        seen = {d["_id"]: s is not None for d, s in zip(live, seen_at)}
        gone = [d["_id"] for d in docs if d["_id"] not in seen and d["user_id"] != viewer]
        if gone:  # Redis let these go: MongoDB's viewer list says whether the caller saw them
            # by the shard key's fields (story_id, viewer_id), not the _id made of them: a mongos
            # then asks only the shards holding these stories
            async for row in self.db.story_viewers.find(
                {"story_id": {"$in": gone}, "viewer_id": viewer}, {"story_id": 1}
            ):
                seen[row["story_id"]] = True
        asking = [
            d
            for d in docs
            if d["user_id"] == viewer and any(s["sticker_type"] == "question" for s in d.get("stickers") or [])
        ]
        responses = await self._latest_responses([d["_id"] for d in asking])
        return [
            self._present(
                d,
                viewer,
                now,
                seen=seen.get(d["_id"], False),
                mine=self._mine(d, mine_raw.get(d["_id"])),
                responses=responses.get(d["_id"]),
            )
            for d in docs
        ]

    async def _latest_responses(self, story_ids: list[str]) -> dict[str, list[dict]]:
        """The latest question responses of each story, newest first, in one aggregation ($topN:
        MongoDB 5.2+); all of them are a page at ``/viewers/story/{id}/answers``."""
        if not story_ids:
            return {}
        latest = {
            "$topN": {
                "n": RESPONSES_KEPT,
                "sortBy": {"answered_at": -1, "_id": -1},
                "output": {"user_id": "$user_id", "text": "$text", "answered_at": "$answered_at"},
            }
        }
        found = await self.db.question_answers.aggregate(
            [
                {"$match": {"story_id": {"$in": story_ids}}},
                {"$group": {"_id": "$story_id", "latest": latest}},
            ]
        )
        out: dict[str, list[dict]] = {story_id: [] for story_id in story_ids}
        async for group in found:
            out[group["_id"]] = [
                {**r, "answered_at": r["answered_at"].isoformat()}
                for r in group["latest"]
                if r.get("user_id") is not None
            ]  # an erased person's: not served
        return out

    # -- stories --------------------------------------------------------------------------

    async def _visible_story(self, story_id: str, viewer: str, now: datetime) -> dict:
        doc = await self.db.stories.find_one({"_id": story_id})
        if doc is None or doc.get("deleted"):
            raise NotFound("story not found")
        if viewer != doc["user_id"] and (
            not is_live(doc, now) or not may_see(doc, viewer, await self.relationship(doc["user_id"], viewer))
        ):
            raise NotFound("story not found")
        return doc

    async def _owned_story(self, story_id: str, viewer: str, now: datetime) -> dict:
        """The caller's own story; 404 when they cannot see it, 403 when they can but do not own it."""
        doc = await self._visible_story(story_id, viewer, now)
        if doc["user_id"] != viewer:
            raise Forbidden("only the owner can see this", code="not_owner")
        return doc

    async def story(self, story_id: str, viewer: str, now: datetime) -> dict:
        story_id = _path_id(story_id, "story")
        doc = await self._visible_story(story_id, viewer, now)
        return (await self.serve_docs([doc], viewer, now))[0]

    async def _keyset_page(
        self,
        collection: AsyncCollection,
        query: dict,
        sort: list[tuple[str, int]],
        scope: str,
        limit: int,
        cursor: str | None,
        keep: Callable[[dict], bool] = lambda doc: True,
    ) -> tuple[list[dict], str | None]:
        """Up to ``limit`` documents after the cursor in ``sort`` order (two fields: a time, then
        a unique id) that ``keep`` accepts; reads in chunks so that filtering cannot starve a page."""
        if cursor:
            query = {"$and": [query, _after(sort, _position(self.cursors.decode(scope, cursor)))]}
        kept: list[dict] = []
        chunk = max(limit + 1, 50)
        while len(kept) <= limit:
            found = [d async for d in collection.find(query).sort(sort).limit(chunk)]
            kept.extend(d for d in found if keep(d))
            if len(found) < chunk:
                break
            last = found[-1]
            query = {"$and": [query, _after(sort, [last[sort[0][0]], last[sort[1][0]]])]}
        more, kept = len(kept) > limit, kept[:limit]
        next_cursor = None
        if more:
            last = kept[-1]
            next_cursor = self.cursors.encode(scope, _ms(last[sort[0][0]]), last[sort[1][0]])
        return kept, next_cursor

    async def user_stories(self, user_id: str, viewer: str, now: datetime, limit: int, cursor: str | None) -> dict:
        relationship = await self.relationship(user_id, viewer)
        docs, next_cursor = await self._keyset_page(
            self.db.stories,
            {"user_id": user_id, "deleted": False, "expired": False, "expires_at": {"$gt": now}},
            [("created_at", 1), ("_id", 1)],
            f"user-stories:{user_id}:{viewer}",
            limit,
            cursor,
            keep=lambda d: viewer == user_id or may_see(d, viewer, relationship),
        )
        return page(await self.serve_docs(docs, viewer, now), next_cursor)

    async def archive(self, viewer: str, now: datetime, limit: int, cursor: str | None) -> dict:
        query = {"user_id": viewer, "deleted": False, "$or": [{"expired": True}, {"expires_at": {"$lte": now}}]}
        docs, next_cursor = await self._keyset_page(
            self.db.stories, query, [("created_at", -1), ("_id", -1)], f"archive:{viewer}", limit, cursor
        )
        return page(await self.serve_docs(docs, viewer, now), next_cursor)

    # -- feed -----------------------------------------------------------------------------

    async def feed(self, viewer: str, now: datetime, limit: int, cursor: str | None) -> dict:
        """A page of the tray, from Redis alone, in at most four round trips whatever the
        history: the authors; their live entries and the viewer's seen set (read whole up to
        SEEN_READ entries, else asked about these stories only: one more); close-friends and
        custom or hidden lists, only where a story has one; the page's cards, counters and own
        answers. The order (own entry, then
        authors with unseen stories, then the rest, each by latest story) is computed as of the
        first page's time, carried in the cursor, so that new stories and new views cannot move
        an author past the cursor. The loop over live entries is the hot path (a viewer at the
        follows limit has tens of thousands): raw replies, no per-entry objects."""
        scope, k = f"feed:{viewer}", self.keys
        now_ms = _ms(now)
        as_of, after = now_ms, None
        if cursor:
            values = self.cursors.decode(scope, cursor)
            if len(values) != 2 or not isinstance(values[0], int) or not isinstance(values[1], list):
                raise invalid_cursor()
            as_of, after = values[0], tuple(values[1])
        authors = await tray_authors(self.redis, k, self.platform, viewer)
        live_keys = slot_groups(self.redis, [k.live(viewer), *(k.live(a.decode()) for a in authors)])
        *unions, seen_pairs = await read_pipeline(
            self.redis,
            [
                *(("SUNION", *group) for group in live_keys),  # one per hash slot (a single server: one in all)
                ("ZRANGE", k.seen(viewer), 0, SEEN_READ - 1, "WITHSCORES"),  # what the viewer saw live, and when
            ],
        )
        members = unions[0] if len(unions) == 1 else [m for union in unions for m in union]
        if len(seen_pairs) < SEEN_READ:
            seen = {story_id: int(at) for story_id, at in seen_pairs}  # [member, score] pairs
        else:  # a viewer who saw more than that: ask about these stories only
            candidates = [m.split(b"|", 1)[0] for m in members]
            found = await self.redis.zmscore(k.seen(viewer), candidates) if candidates else []
            seen = {story_id: int(at) for story_id, at in zip(candidates, found) if at is not None}
        # The hot loop works on the raw bytes: times are 13-digit milliseconds, so they compare
        # as bytes; ids are decoded only for the page. On the first page every view so far
        # counts as seen; later pages count those made up to the first page's time (as_of).
        paging = cursor is not None
        now_b, as_of_b = b"%013d" % now_ms, b"%013d" % as_of
        seen_until = as_of if paging else float("inf")
        me = viewer.encode()
        summary: dict[bytes, list] = {}  # author -> [latest created, has unseen]
        shown: list[tuple[bytes, bytes, bytes, bytes]] = []  # (created, story id, author, flags)
        narrow: list[tuple[bytes, bytes, bytes, bytes, bytes]] = []  # close friends, custom or hidden lists

        def show(story_id: bytes, author: bytes, created: bytes, flags: bytes) -> None:
            at = seen.get(story_id)
            unseen = at is None or at > seen_until
            shown.append((created, story_id, author, flags))
            entry = summary.setdefault(author, [created, unseen])
            entry[0], entry[1] = max(entry[0], created), entry[1] or unseen

        for member in members:
            story_id, author, privacy, created, expires, flags = member.split(b"|")
            if expires <= now_b or (paging and created > as_of_b):
                continue
            if author == me:
                unseen = False
            else:
                # The domain's audience rule (domain.visibility) for an author the viewer follows
                # (entativa: a friend), unrolled for speed; the privacy-model test holds it to the rule.
                if privacy not in BROAD or (flags and (b"w" in flags or b"h" in flags)):
                    narrow.append((story_id, author, privacy, created, flags))
                    continue
                at = seen.get(story_id)
                unseen = at is None or at > seen_until
            shown.append((created, story_id, author, flags))
            entry = summary.get(author)
            if entry is None:
                summary[author] = [created, unseen]
            else:
                if created > entry[0]:
                    entry[0] = created
                if unseen:
                    entry[1] = True
        if narrow:  # one round trip: is the viewer on these authors' lists, in these stories' lists
            close_asks = sorted({author for _, author, privacy, _, _ in narrow if privacy == CLOSE_FRIENDS})
            async with self.redis.pipeline(transaction=False) as p:
                if close_asks:
                    p.smismember(k.close_friend_of(viewer), close_asks)
                for story_id, _, _, _, flags in narrow:
                    sid = story_id.decode()
                    if b"w" in flags:
                        p.sismember(k.allowed(sid), viewer)
                    if b"h" in flags:
                        p.sismember(k.hidden(sid), viewer)
                replies = iter(await p.execute())
            close = {a for a, on in zip(close_asks, next(replies) if close_asks else []) if on}
            for story_id, author, privacy, created, flags in narrow:
                allowed = bool(next(replies)) if b"w" in flags else False
                if bool(next(replies)) if b"h" in flags else False:
                    continue
                if privacy == CUSTOM:
                    if not allowed:
                        continue
                elif privacy == CLOSE_FRIENDS:
                    if author not in close:
                        continue
                elif privacy not in BROAD:
                    continue  # an unknown value hides rather than leaks
                show(story_id, author, created, flags)
        if not paging:  # later pages: as of now, every view so far, and every story shown (clocks may run ahead)
            as_of = max(now_ms, max(seen.values(), default=0), int(max((item[0] for item in shown), default=b"0")))
        ordered = sorted(
            (0 if author == me else 1 if unseen else 2, -int(latest), author.decode())
            for author, (latest, unseen) in summary.items()
        )
        if after is not None:
            ordered = [o for o in ordered if list(o) > list(after)]
        chosen, more = ordered[:limit], len(ordered) > limit
        next_cursor = self.cursors.encode(scope, as_of, list(chosen[-1])) if more else None
        on_page = {author.encode() for _, _, author in chosen}
        picked = sorted(item for item in shown if item[2] in on_page)
        served = await self._serve_live(
            [(story_id.decode(), author.decode(), flags, story_id in seen) for _, story_id, author, flags in picked],
            viewer,
            now,
        )
        stories_of: dict[str, list[dict]] = {}
        for _, story_id, author, _ in picked:
            story = served.get(story_id.decode())
            if story is not None:
                stories_of.setdefault(author.decode(), []).append(story)
        entries = []
        for rank, _, author in chosen:
            stories = stories_of.get(author)
            if not stories:
                continue  # gone between the reads
            entries.append(
                {
                    "user_id": author,
                    "stories": stories,
                    "has_unseen": rank == 1,
                    "latest_at": stories[-1]["created_at"],
                    "close_friends": any(s["close_friends_only"] for s in stories),
                }
            )
        return page(entries, next_cursor)

    async def _serve_live(
        self, items: list[tuple[str, str, bytes, bool]], viewer: str, now: datetime
    ) -> dict[str, dict]:
        """Live stories (story id, author, live-entry flags, seen by the viewer) from their Redis
        cards and counters, in one round trip; own answers and question responses only where
        the flags say the story has such stickers."""
        if not items:
            return {}
        k = self.keys
        asks_mine = [sid for sid, _, flags, _ in items if b"i" in flags]
        own_questions = [sid for sid, author, flags, _ in items if author == viewer and b"q" in flags]
        card_groups = slot_groups(self.redis, [k.card(sid) for sid, _, _, _ in items])
        replies = await read_pipeline(
            self.redis,
            [
                *(("MGET", *group) for group in card_groups),
                *(("HGETALL", k.counters(sid)) for sid, _, _, _ in items),
                *(("HMGET", k.answers(sid), *self._mine_fields(viewer)) for sid in asks_mine),
                *(("LRANGE", k.responses(sid), 0, RESPONSES_KEPT - 1) for sid in own_questions),
            ],
        )
        found = dict(
            zip(
                (key for group in card_groups for key in group),
                (card for cards in replies[: len(card_groups)] for card in cards),
            )
        )
        cards, rest = [found[k.card(sid)] for sid, _, _, _ in items], replies[len(card_groups) :]
        n, m = len(items), len(asks_mine)
        counters, mine = rest[:n], dict(zip(asks_mine, rest[n : n + m]))
        responses = {sid: _responses(raw) for sid, raw in zip(own_questions, rest[n + m :])}
        out = {}
        for (sid, _, _, was_seen), card, raw_counters in zip(items, cards, counters):
            if card is None:
                continue
            doc = orjson.loads(card)
            doc.update(counters_from_hash(raw_counters))
            out[sid] = self._present(
                doc, viewer, now, seen=was_seen, mine=self._mine(doc, mine.get(sid)), responses=responses.get(sid)
            )
        return out

    # -- viewers, answers and insights --------------------------------------------------------

    async def viewers(self, story_id: str, viewer: str, now: datetime, limit: int, cursor: str | None) -> dict:
        story_id = _path_id(story_id, "story")
        doc = await self._owned_story(story_id, viewer, now)
        rows, next_cursor = await self._keyset_page(
            self.db.story_viewers,
            {"story_id": story_id},
            [("first_viewed_at", -1), ("viewer_id", 1)],
            f"viewers:{story_id}:{viewer}",
            limit,
            cursor,
        )
        items = [
            {
                "user_id": r["viewer_id"],
                "first_viewed_at": r["first_viewed_at"].isoformat(),
                "viewed_at": r["last_viewed_at"].isoformat(),
                "view_count": r["view_count"],
            }
            for r in rows
            if r.get("viewer_id") is not None
        ]  # an erased viewer: counted, never listed
        return {**page(items, next_cursor), "story_id": story_id, "total": doc.get("unique_viewers", 0)}

    async def answers(
        self, story_id: str, viewer: str, now: datetime, limit: int, cursor: str | None, sticker_index: int | None
    ) -> dict:
        story_id = _path_id(story_id, "story")
        await self._owned_story(story_id, viewer, now)
        query: dict[str, Any] = {"story_id": story_id}
        if sticker_index is not None:
            query["sticker_index"] = sticker_index
        rows, next_cursor = await self._keyset_page(
            self.db.question_answers,
            query,
            [("answered_at", -1), ("_id", -1)],
            f"answers:{story_id}:{sticker_index}:{viewer}",
            limit,
            cursor,
        )
        items = [
            {
                "user_id": r["user_id"],
                "sticker_index": r["sticker_index"],
                "text": r["text"],
                "answered_at": r["answered_at"].isoformat(),
            }
            for r in rows
            if r.get("user_id") is not None
        ]  # an erased person's answer: not served
        return {**page(items, next_cursor), "story_id": story_id}

    async def story_insights(self, story_id: str, viewer: str, now: datetime) -> dict:
        story_id = _path_id(story_id, "story")
        doc = await self._owned_story(story_id, viewer, now)
        navigation = await self._navigation({"story_id": story_id})
        return presenter.insights(doc, await self.audience_size(doc), navigation)

    async def user_insights(self, viewer: str) -> dict:
        docs = [d async for d in self.db.stories.find({"user_id": viewer, "deleted": False})]
        distinct = await self.db.owner_viewers.count_documents({"owner_id": viewer})
        navigation = await self._navigation({"story_id": {"$in": [d["_id"] for d in docs]}}) if docs else {}
        return presenter.user_insights(viewer, docs, distinct, navigation)

    async def _navigation(self, scope: dict[str, Any]) -> dict[str, int]:
        """Viewers' last navigations by action: one count per action on the (scope, navigation)
        index, a count scan on MongoDB whatever the story's audience."""
        actions = [action.value for action in NavigationAction]
        counts = await asyncio.gather(
            *(self.db.story_viewers.count_documents({**scope, "navigation": action}) for action in actions)
        )
        return dict(zip(actions, counts))

    # -- highlights and close friends -------------------------------------------------------

    @staticmethod
    def _highlight_head(h: dict, shown: list[str]) -> dict:
        """The highlight's own fields; its cover names a story only if the caller may see that
        story in this highlight (a cover never reveals a hidden, removed or deleted story)."""
        cover = h.get("cover")
        if isinstance(cover, dict) and cover.get("story_id") is not None and cover["story_id"] not in shown:
            cover = {key: value for key, value in cover.items() if key != "story_id"} or None
        return {
            "highlight_id": h["_id"],
            "user_id": h["user_id"],
            "title": h["title"],
            "description": h.get("description", ""),
            "cover": cover,
            "is_pinned": h.get("is_pinned", False),
            "is_archived": h.get("is_archived", False),
            "created_at": h["created_at"].isoformat(),
            "updated_at": h["updated_at"].isoformat(),
            "story_ids": shown,
            "story_count": len(shown),
        }

    async def _visible_story_ids(
        self, ids: Iterable[str], owner: str, viewer: str, relationship: Relationship | None = None
    ) -> set[str]:
        """Which of ``owner``'s stories (by id) the caller may see in a highlight: audience only."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return set()
        fields = {"user_id": 1, "privacy": 1, "allowed_viewer_ids": 1, "hidden_from_ids": 1, "deleted": 1}
        # the owner too: a highlight holds only its owner's stories, and ``user_id`` leads the shard key
        docs = [d async for d in self.db.stories.find({"user_id": owner, "_id": {"$in": wanted}}, fields)]
        if viewer == owner:
            return {d["_id"] for d in docs if not d.get("deleted")}
        if relationship is None:
            relationship = await self.relationship(owner, viewer)
        return {d["_id"] for d in docs if not d.get("deleted") and may_see(d, viewer, relationship)}

    async def _reel(self, user_id: str) -> dict[str, int]:
        reel = await self.db.highlight_reels.find_one({"_id": user_id}) or {"highlight_ids": []}
        return {h: i for i, h in enumerate(reel["highlight_ids"])}

    async def highlights_of(self, user_id: str, viewer: str, now: datetime, limit: int, cursor: str | None) -> dict:
        """Pinned first, then the owner's order; each with its visible ``story_ids``, no stories.
        Others see only highlights with a story they may see. The cursor carries a short hash of
        every highlight served so far (at most the highlights limit), so a reorder between pages
        neither skips nor repeats one."""
        scope = f"highlights:{user_id}:{viewer}"
        query: dict[str, Any] = {"user_id": user_id, "deleted": False}
        if viewer != user_id:
            query["is_archived"] = False
        docs = [h async for h in self.db.highlights.find(query)]  # at most the highlights limit
        order = await self._reel(user_id)
        docs.sort(key=lambda h: (not h.get("is_pinned", False), order.get(h["_id"], len(order)), h["_id"]))
        all_docs, served = docs, b""
        if cursor:
            values = self.cursors.decode(scope, cursor)
            if len(values) != 1 or not isinstance(values[0], str):
                raise invalid_cursor()
            served = base64.b64decode(values[0])
            done = {served[i : i + 4] for i in range(0, len(served), 4)}
            docs = [h for h in docs if _short_hash(h["_id"]) not in done]
        relationship = None if viewer == user_id else await self.relationship(user_id, viewer)
        items: list[dict] = []
        position = 0
        while position < len(docs) and len(items) <= limit:
            chunk = docs[position : position + limit + 1]
            position += len(chunk)
            visible = await self._visible_story_ids(
                (s for h in chunk for s in h.get("story_ids", [])), user_id, viewer, relationship
            )
            for h in chunk:
                shown = [s for s in h.get("story_ids", []) if s in visible]
                if viewer == user_id or shown:
                    items.append({**self._highlight_head(h, shown), "_id": h["_id"]})
        more, items = len(items) > limit, items[:limit]
        # The owner's order; others count only the highlights they may list (no archived gaps).
        listed = (
            order
            if viewer == user_id
            else {
                i: n
                for n, i in enumerate(
                    i for i in sorted(order, key=order.__getitem__) if i in {h["_id"] for h in all_docs}
                )
            }
        )
        for item in items:
            served += _short_hash(item["_id"])
            item["order_index"] = listed.get(item.pop("_id"), len(listed))
        next_cursor = self.cursors.encode(scope, base64.b64encode(served).decode()) if more else None
        return page(items, next_cursor)

    async def highlight(self, highlight_id: str, viewer: str, now: datetime, limit: int, cursor: str | None) -> dict:
        highlight_id = _path_id(highlight_id, "highlight")
        h = await self.db.highlights.find_one({"_id": highlight_id})
        if h is None or h.get("deleted") or (h.get("is_archived") and viewer != h["user_id"]):
            raise NotFound("highlight not found")
        story_ids = h.get("story_ids", [])  # at most the per-highlight limit
        visible = await self._visible_story_ids(story_ids, h["user_id"], viewer)
        shown = [s for s in story_ids if s in visible]
        if viewer != h["user_id"] and not shown:
            raise NotFound("highlight not found")
        scope = f"highlight:{highlight_id}:{viewer}"
        start = 0  # in the highlight's full list, so that a story removed between pages skips nothing
        if cursor:
            values = self.cursors.decode(scope, cursor)
            if len(values) != 2 or not isinstance(values[0], str) or not isinstance(values[1], int):
                raise invalid_cursor()
            start = story_ids.index(values[0]) + 1 if values[0] in story_ids else max(0, values[1])
        rest = [(n, s) for n, s in enumerate(story_ids[start:], start) if s in visible]
        chosen, more = rest[:limit], len(rest) > limit
        docs = {
            d["_id"]: d
            async for d in self.db.stories.find(  # by owner too: their shards only
                {"user_id": h["user_id"], "_id": {"$in": [s for _, s in chosen]}}
            )
        }
        served = await self.serve_docs([docs[s] for _, s in chosen if s in docs], viewer, now)
        next_cursor = self.cursors.encode(scope, chosen[-1][1], chosen[-1][0]) if more else None
        reel = await self.db.highlight_reels.find_one({"_id": h["user_id"]}) or {"highlight_ids": []}
        if viewer != h["user_id"]:  # count only what others are shown of the reel: no gaps
            listed = {
                d["_id"]
                async for d in self.db.highlights.find(
                    {"user_id": h["user_id"], "deleted": False, "is_archived": False}, {"_id": 1}
                )
            }
            reel["highlight_ids"] = [i for i in reel["highlight_ids"] if i in listed]
        order = reel["highlight_ids"]
        return {
            **self._highlight_head(h, shown),
            "order_index": order.index(highlight_id) if highlight_id in order else 0,
            "stories": page(served, next_cursor),
        }

    async def muted(self, viewer: str, limit: int, cursor: str | None) -> dict:
        rows, next_cursor = await self._keyset_page(
            self.db.muted,
            {"user_id": viewer, **NOT_GONE},
            [("muted_at", -1), ("muted_id", 1)],
            f"muted:{viewer}",
            limit,
            cursor,
        )
        return page([{"user_id": r["muted_id"], "muted_at": r["muted_at"].isoformat()} for r in rows], next_cursor)

    async def close_friends(self, viewer: str, limit: int, cursor: str | None) -> dict:
        rows, next_cursor = await self._keyset_page(
            self.db.close_friends,
            {"user_id": viewer, **NOT_GONE},
            [("added_at", -1), ("friend_id", 1)],
            f"close-friends:{viewer}",
            limit,
            cursor,
        )
        if not rows:
            return page([], None)
        friends = [r["friend_id"] for r in rows]
        async with self.redis.pipeline(transaction=False) as p:
            p.smismember(self.keys.following(viewer), friends)
            p.smismember(self.keys.followers(viewer), friends)
            following, followers = await p.execute()
        return page(
            [
                {"user_id": r["friend_id"], "added_at": r["added_at"].isoformat(), "is_mutual": bool(a and b)}
                for r, a, b in zip(rows, following, followers)
            ],
            next_cursor,
        )


async def tray_authors(redis: AsyncRedis, keys: Keys, platform: Platform, viewer: str) -> set[bytes]:
    """Whose entries the viewer's tray shows: whom they follow (entativa: their friends), less
    those they muted. One round trip: the keys share the viewer's slot."""
    if platform is Platform.ENTATIVA:
        friends, muted = await read_pipeline(
            redis, [("SINTER", keys.following(viewer), keys.followers(viewer)), ("SMEMBERS", keys.muted(viewer))]
        )
        return set(friends) - set(muted)
    # the clients are made without decode_responses: members are bytes
    return cast(set[bytes], await redis.sdiff([keys.following(viewer), keys.muted(viewer)]))


async def gather_pages(fetch: Callable[[str | None], Awaitable[dict]]) -> list:
    """Every item of a paged list, following the cursors (tests and tools)."""
    items, cursor = [], None
    while True:
        answer = await fetch(cursor)
        items.extend(answer["items"])
        cursor = answer["next_cursor"]
        if cursor is None:
            return items
