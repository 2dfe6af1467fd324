"""Read-model queries for one caller, with the contract's visibility rules.

MongoDB holds the served documents; Redis holds the graph, live-story sets, who-saw-what and the
hot counters. Visibility uses the domain's own pure rule (``domain.visibility``), so the command
side and the query side cannot disagree.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import orjson
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from domain.errors import Forbidden, InvalidInput, NotFound
from domain.platform import Platform
from domain.stickers import parse_timestamp
from domain.visibility import Relationship, audience_allows
from projections.redis_views import Keys
from read_api import presenter

RESPONSES_SHOWN = 100


def _expires(doc: dict) -> datetime:
    value = doc["expires_at"]
    return value if isinstance(value, datetime) else parse_timestamp(value)


def is_live(doc: dict, now: datetime) -> bool:
    return not doc.get("deleted") and not doc.get("expired") and now < _expires(doc)


def may_see(doc: dict, viewer: str, relationship: Relationship) -> bool:
    """Audience only (highlights ignore expiry); the owner always may."""
    return audience_allows(
        owner_id=doc["user_id"], privacy=doc["privacy"], allowed_viewer_ids=doc.get("allowed_viewer_ids", ()),
        hidden_from_ids=doc.get("hidden_from_ids", ()), viewer_id=viewer, relationship=relationship,
    )


def encode_cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(parts)).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Our cursors are (ISO time, id) pairs; anything else is the client's mistake (422)."""
    try:
        value = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
        if isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
            return parse_timestamp(value[0]), value[1]
    except (ValueError, TypeError, orjson.JSONDecodeError):
        pass
    raise InvalidInput("cursor is not one this API gave out", details=[{"field": "cursor", "message": "invalid"}])


class Queries:
    def __init__(self, mongo: AsyncMongoClient, database: str, redis: Redis, prefix: str, platform: Platform) -> None:
        self.db = mongo[database]
        self.redis = redis
        self.keys = Keys(prefix)
        self.platform = platform

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
        if privacy == "custom":
            return len(doc.get("allowed_viewer_ids", []))
        if privacy == "close_friends":
            return await self.redis.scard(k.close_friends(owner))
        if privacy == "friends" or (privacy == "public" and self.platform is Platform.ENTATIVA):
            return len(await self.redis.sinter(k.following(owner), k.followers(owner)))
        return await self.redis.scard(k.followers(owner))

    # -- stories --------------------------------------------------------------------------

    async def _visible_story(self, story_id: str, viewer: str, now: datetime) -> dict:
        doc = await self.db.stories.find_one({"_id": story_id})
        if doc is None or doc.get("deleted"):
            raise NotFound("story not found")
        if viewer != doc["user_id"]:
            if not is_live(doc, now) or not may_see(doc, viewer, await self.relationship(doc["user_id"], viewer)):
                raise NotFound("story not found")
        return doc

    async def _owned_story(self, story_id: str, viewer: str, now: datetime) -> dict:
        """The caller's own story; 404 when they cannot see it, 403 when they can but do not own it."""
        doc = await self._visible_story(story_id, viewer, now)
        if doc["user_id"] != viewer:
            raise Forbidden("only the owner can see this", code="not_owner")
        return doc

    async def _mine(self, doc: dict, viewer: str) -> dict[int, dict]:
        """The caller's own answers to the story's stickers."""
        k, story_id, out = self.keys, doc["_id"], {}
        asks = [(i, s["sticker_type"]) for i, s in enumerate(doc.get("stickers", []))
                if s["sticker_type"] in ("poll", "quiz", "slider", "countdown")]
        if not asks:
            return out
        async with self.redis.pipeline(transaction=False) as p:
            for i, kind in asks:
                if kind == "countdown":
                    p.sismember(k.countdown(story_id, i), viewer)
                else:
                    p.hget(k.answers(story_id, i), viewer)
            answers = await p.execute()
        for (i, kind), value in zip(asks, answers):
            if kind == "countdown":
                out[i] = {"following": bool(value)}
            elif value is not None:
                out[i] = {"value": float(value)} if kind == "slider" else {"option": int(value)}
        return out

    async def serve(self, doc: dict, viewer: str, now: datetime, *, seen: bool | None = None) -> dict:
        """A full story as this caller may see it (results, their own answers, owner extras)."""
        owner = viewer == doc["user_id"]
        if seen is None:
            seen = bool(await self.redis.sismember(self.keys.seen(viewer), doc["_id"]))
        story = presenter.base_story(
            doc, viewer, now, viewed_by_me=seen, view_count=doc.get("view_count", 0), reply_count=doc.get("reply_count", 0)
        )
        mine = await self._mine(doc, viewer)
        stickers = []
        for i, sticker in enumerate(doc.get("stickers", [])):
            responses = None
            if owner and sticker["sticker_type"] == "question":
                cursor = self.db.question_answers.find(
                    {"story_id": doc["_id"], "sticker_index": i}, {"_id": 0, "user_id": 1, "text": 1, "answered_at": 1}
                ).sort("answered_at", -1).limit(RESPONSES_SHOWN)
                responses = [{**r, "answered_at": r["answered_at"].isoformat()} async for r in cursor]
            stickers.append(presenter.sticker_with_results(
                i, sticker, doc.get("results", {}), mine.get(i, {}), owner, now, responses))
        story["stickers"] = stickers
        if owner:
            story["unique_viewers"] = doc.get("unique_viewers", 0)
        return story

    async def story(self, story_id: str, viewer: str, now: datetime) -> dict:
        return await self.serve(await self._visible_story(story_id, viewer, now), viewer, now)

    async def user_stories(self, user_id: str, viewer: str, now: datetime) -> list[dict]:
        cursor = self.db.stories.find(
            {"user_id": user_id, "deleted": False, "expired": False, "expires_at": {"$gt": now}}
        ).sort("created_at", 1)
        docs = [d async for d in cursor]
        if not docs:
            return []
        relationship = await self.relationship(user_id, viewer)
        visible = [d for d in docs if viewer == user_id or may_see(d, viewer, relationship)]
        return [await self.serve(d, viewer, now) for d in visible]

    async def archive(self, viewer: str, now: datetime, limit: int, cursor: str | None) -> dict:
        query: dict[str, Any] = {
            "user_id": viewer, "deleted": False, "$or": [{"expired": True}, {"expires_at": {"$lte": now}}],
        }
        if cursor:
            created, story_id = decode_cursor(cursor)
            query = {"$and": [query, {"$or": [
                {"created_at": {"$lt": created}}, {"created_at": created, "_id": {"$lt": story_id}},
            ]}]}
        docs = [d async for d in self.db.stories.find(query).sort([("created_at", -1), ("_id", -1)]).limit(limit + 1)]
        more = len(docs) > limit
        docs = docs[:limit]
        stories = [await self.serve(d, viewer, now, seen=False) for d in docs]
        next_cursor = encode_cursor(docs[-1]["created_at"].isoformat(), docs[-1]["_id"]) if more else None
        return {"stories": stories, "next_cursor": next_cursor}

    # -- feed -----------------------------------------------------------------------------

    async def feed(self, viewer: str, now: datetime) -> list[dict]:
        # A fixed number of Redis commands whatever the number of authors: one ZUNION of the
        # authors' live sets, then one pipeline of four multi-key reads. The cards are stored in
        # the served shape, so each item is one parse plus its counters.
        k = self.keys
        if self.platform is Platform.ENTATIVA:
            authors = await self.redis.sinter(k.following(viewer), k.followers(viewer))
        else:
            authors = await self.redis.smembers(k.following(viewer))
        everyone = {viewer, *(a.decode() for a in authors)}
        ids = [sid.decode() for sid in await self.redis.zunion([k.live(a) for a in everyone])]
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as p:
            p.mget([k.card(i) for i in ids])
            p.smismember(k.seen(viewer), ids)
            p.hmget(k.views, ids)
            p.hmget(k.replies, ids)
            cards, seen, views, replies = await p.execute()
        by_author: dict[str, list[dict]] = {}
        for card, was_seen, v, r in zip(cards, seen, views, replies):
            if card is None:  # deleted meanwhile
                continue
            item = presenter.feed_item(orjson.loads(card), now, viewed_by_me=bool(was_seen),
                                       view_count=int(v or 0), reply_count=int(r or 0))
            if item is not None:  # None: past its expiry, StoryExpired not yet projected
                by_author.setdefault(item["user_id"], []).append(item)
        close_asks = sorted({a for a, items in by_author.items()
                             if a != viewer and any(i["close_friends_only"] for i in items)})
        close_of = {}
        if close_asks:
            async with self.redis.pipeline(transaction=False) as p:
                for author in close_asks:
                    p.sismember(k.close_friends(author), viewer)
                close_of = dict(zip(close_asks, await p.execute()))
        entries = []
        for author, items in by_author.items():
            if author == viewer:
                shown = items
            else:
                # Authors here are followed (friends on entativa) by the viewer, by construction.
                relationship = Relationship(follows_owner=True, followed_by_owner=self.platform is Platform.ENTATIVA,
                                            close_friend=bool(close_of.get(author)))
                shown = [presenter.feed_item_for_others(i) for i in items if may_see(i, viewer, relationship)]
            if not shown:
                continue
            shown.sort(key=lambda i: i["created_at"])
            entries.append({
                "user_id": author,
                "stories": shown,
                "has_unseen": any(not i["viewed_by_me"] for i in shown),
                "latest_at": shown[-1]["created_at"],
                "close_friends": any(i["close_friends_only"] for i in shown),
            })
        own = [e for e in entries if e["user_id"] == viewer]
        others = sorted((e for e in entries if e["user_id"] != viewer), key=lambda e: e["latest_at"], reverse=True)
        others.sort(key=lambda e: not e["has_unseen"])  # stable: unseen first, each group newest first
        return own + others

    # -- viewers and insights --------------------------------------------------------------

    async def viewers(self, story_id: str, viewer: str, now: datetime, limit: int, cursor: str | None) -> dict:
        doc = await self._owned_story(story_id, viewer, now)
        query: dict[str, Any] = {"story_id": story_id}
        if cursor:
            at, last_user = decode_cursor(cursor)
            query["$or"] = [{"last_viewed_at": {"$lt": at}}, {"last_viewed_at": at, "viewer_id": {"$gt": last_user}}]
        found = self.db.story_viewers.find(query).sort([("last_viewed_at", -1), ("viewer_id", 1)]).limit(limit + 1)
        rows = [r async for r in found]
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "story_id": story_id,
            "total": doc.get("unique_viewers", 0),
            "viewers": [
                {"user_id": r["viewer_id"], "viewed_at": r["last_viewed_at"].isoformat(),
                 "first_viewed_at": r["first_viewed_at"].isoformat(), "view_count": r["view_count"]}
                for r in rows
            ],
            "next_cursor": encode_cursor(rows[-1]["last_viewed_at"].isoformat(), rows[-1]["viewer_id"]) if more else None,
        }

    async def story_insights(self, story_id: str, viewer: str, now: datetime) -> dict:
        doc = await self._owned_story(story_id, viewer, now)
        return presenter.insights(doc, await self.audience_size(doc))

    async def user_insights(self, viewer: str) -> dict:
        docs = [d async for d in self.db.stories.find({"user_id": viewer, "deleted": False})]
        return presenter.user_insights(viewer, docs)

    # -- highlights and close friends -------------------------------------------------------

    async def _serve_highlight(self, h: dict, viewer: str, now: datetime, relationship: Relationship,
                               stories: dict[str, dict]) -> dict:
        shown = [
            stories[s] for s in h.get("story_ids", [])
            if s in stories and not stories[s].get("deleted")
            and (viewer == h["user_id"] or may_see(stories[s], viewer, relationship))
        ]
        return {
            "highlight_id": h["_id"], "user_id": h["user_id"], "title": h["title"],
            "description": h.get("description", ""), "cover": h.get("cover"), "is_pinned": h.get("is_pinned", False),
            "is_archived": h.get("is_archived", False), "created_at": h["created_at"].isoformat(),
            "updated_at": h["updated_at"].isoformat(),
            "stories": [await self.serve(d, viewer, now) for d in shown],
        }

    async def _stories_by_id(self, ids: list[str]) -> dict[str, dict]:
        if not ids:
            return {}
        return {d["_id"]: d async for d in self.db.stories.find({"_id": {"$in": ids}})}

    async def highlights_of(self, user_id: str, viewer: str, now: datetime) -> list[dict]:
        query: dict[str, Any] = {"user_id": user_id, "deleted": False}
        if viewer != user_id:
            query["is_archived"] = False
        docs = [h async for h in self.db.highlights.find(query)]
        reel = await self.db.highlight_reels.find_one({"_id": user_id}) or {"highlight_ids": []}
        order = {h: i for i, h in enumerate(reel["highlight_ids"])}
        docs.sort(key=lambda h: (not h.get("is_pinned", False), order.get(h["_id"], len(order))))
        stories = await self._stories_by_id(sorted({s for h in docs for s in h.get("story_ids", [])}))
        relationship = await self.relationship(user_id, viewer)
        out = []
        for index, h in enumerate(docs):
            served = await self._serve_highlight(h, viewer, now, relationship, stories)
            served["order_index"] = order.get(h["_id"], index)
            if viewer == user_id or served["stories"]:
                out.append(served)
        return out

    async def highlight(self, highlight_id: str, viewer: str, now: datetime) -> dict:
        h = await self.db.highlights.find_one({"_id": highlight_id})
        if h is None or h.get("deleted") or (h.get("is_archived") and viewer != h["user_id"]):
            raise NotFound("highlight not found")
        stories = await self._stories_by_id(h.get("story_ids", []))
        relationship = await self.relationship(h["user_id"], viewer)
        served = await self._serve_highlight(h, viewer, now, relationship, stories)
        if viewer != h["user_id"] and not served["stories"]:
            raise NotFound("highlight not found")
        reel = await self.db.highlight_reels.find_one({"_id": h["user_id"]}) or {"highlight_ids": []}
        served["order_index"] = reel["highlight_ids"].index(highlight_id) if highlight_id in reel["highlight_ids"] else 0
        return served

    async def close_friends(self, viewer: str) -> list[dict]:
        rows = [r async for r in self.db.close_friends.find({"user_id": viewer}).sort("added_at", -1)]
        if not rows:
            return []
        friends = [r["friend_id"] for r in rows]
        async with self.redis.pipeline(transaction=False) as p:
            p.smismember(self.keys.following(viewer), friends)
            p.smismember(self.keys.followers(viewer), friends)
            following, followers = await p.execute()
        return [
            {"user_id": r["friend_id"], "added_at": r["added_at"].isoformat(), "is_mutual": bool(a and b)}
            for r, a, b in zip(rows, following, followers)
        ]
