"""Shapes read-model documents into what the query API serves, for one caller."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from domain.engagement import NavigationAction
from domain.stickers import parse_timestamp
from domain.visibility import Privacy
from projections.redis_schema import LONGEST_LIFE, SLIDER_SUM_SCALE
from read_api.tallies import completion_rate, percentages, rate

CONTENT_FIELDS = (
    "story_id",
    "user_id",
    "story_type",
    "media_id",
    "media_url",
    "thumbnail_url",
    "text_content",
    "background_color",
    "background_gradient",
    "duration",
    "privacy",
    "allow_replies",
    "allow_sharing",
    "reshared_from",
)


OWNER_ONLY_FIELDS = ("allowed_viewer_ids", "hidden_from_ids")
MAX_LIFE_HOURS = int(LONGEST_LIFE.total_seconds() // 3600)


def instant(value: datetime | str) -> datetime:
    """A document's time: a datetime as the projector writes it, or its ISO 8601 string."""
    return value if isinstance(value, datetime) else parse_timestamp(value)


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def base_story(doc: dict, viewer: str, now: datetime, *, viewed_by_me: bool, view_count: int, reply_count: int) -> dict:
    """The fields every served story has; ``Queries._present`` adds the stickers with results."""
    expires_at = instant(doc["expires_at"])
    story = {name: doc.get(name) for name in CONTENT_FIELDS}
    story.update(
        created_at=_iso(doc["created_at"]),
        expires_at=expires_at.isoformat(),
        is_expired=bool(doc.get("expired")) or now >= expires_at,
        close_friends_only=doc["privacy"] == Privacy.CLOSE_FRIENDS,
        view_count=view_count,
        reply_count=reply_count,
        viewed_by_me=viewed_by_me,
        edited=bool(doc.get("edited")),
        edited_at=_iso(doc.get("edited_at")),
    )
    if viewer == doc["user_id"]:  # only the owner sees who the story was meant for
        # (an erased person is never listed: the projector leaves them out; skipped here too)
        story.update((name, [p for p in doc.get(name) or [] if p is not None]) for name in OWNER_ONLY_FIELDS)
    return story


def sticker_with_results(
    i: int, sticker: dict, results: dict, mine: dict, owner: bool, now: datetime, responses: list[dict] | None
) -> dict:
    """One sticker and its results; ``mine`` holds the caller's own answer where there is one."""
    kind = sticker["sticker_type"]
    out = {k: sticker[k] for k in ("sticker_type", "x", "y", "width", "height", "rotation")}
    payload = dict(sticker.get(kind) or {})
    r = results.get(str(i), {})
    total = r.get("total", 0)
    if kind in ("poll", "quiz"):
        counts = [r.get("options", {}).get(str(k), 0) for k in range(len(payload["options"]))]
        shares = percentages(counts)
        key = "votes" if kind == "poll" else "selected_count"
        payload["options"] = [
            {"text": o["text"], key: c, "percentage": p} for o, c, p in zip(payload["options"], counts, shares)
        ]
        if kind == "poll":
            payload.update(total_votes=total, my_vote=mine.get("option"))
        elif owner or mine.get("option") is not None:
            payload.update(total_attempts=total, correct_attempts=r.get("correct", 0), my_answer=mine.get("option"))
        else:
            # Before an attempt nothing that could give the answer away: no counts, no index.
            payload["options"] = [{"text": o["text"]} for o in payload["options"]]
            payload.pop("correct_answer_index", None)
            payload["my_answer"] = None
    elif kind == "slider":
        payload.update(
            average_value=slider_average(r, total),
            response_count=total,
            my_value=mine.get("value"),
        )
    elif kind == "countdown":
        payload.update(
            follower_count=r.get("followers", 0),
            is_over=instant(payload["end_time"]) <= now,
            following=bool(mine.get("following")),
        )
    elif kind == "question":
        payload["response_count"] = total
        if owner:
            payload["responses"] = responses or []
    elif kind == "link" and owner:
        payload["tap_count"] = total
    out[kind] = payload
    return out


def slider_average(tally: dict, total: int) -> float | None:
    """The average answer, from the scaled sum (``SLIDER_SUM_SCALE``) plus any unscaled ``sum``
    an older read model kept; each part is divided by the count before it is scaled back, so
    no intermediate leaves the range of a double."""
    if not total:
        return None
    unscaled = tally.get("sum", 0.0)  # a Decimal from Redis, a float in older MongoDB documents
    part = float(unscaled / total) if isinstance(unscaled, Decimal) else unscaled / total
    return round(part + tally.get("ssum", 0.0) / total / SLIDER_SUM_SCALE, 3)


def sticker_interactions(doc: dict) -> dict[str, int]:
    results = doc.get("results", {})
    return {
        f"sticker_{i}_{s['sticker_type']}": results.get(str(i), {}).get("total", 0)
        for i, s in enumerate(doc.get("stickers", []))
        if s["sticker_type"] in ("poll", "quiz", "question", "countdown", "slider", "link")
    }


def life_hours(doc: dict) -> int:
    """How many hours the story lives (the length of its ``views_timeline``)."""
    created = instant(doc["created_at"])
    expires = instant(doc["expires_at"])
    hours = -(-int((expires - created).total_seconds()) // 3600)
    return min(max(hours, 1), MAX_LIFE_HOURS)  # a bounded answer whatever a stored expiry says


def navigation_counts(counts: dict[str, int] | None) -> dict[str, int]:
    return {action.value: (counts or {}).get(action.value, 0) for action in NavigationAction}


def insights(doc: dict, audience_size: int, navigation: dict[str, int] | None = None) -> dict:
    """``navigation``: how many viewers' last navigation was each action (from the viewer entries)."""
    by_hour = {str(h): doc.get("views_by_hour", {}).get(str(h), 0) for h in range(24)}
    per_sticker = sticker_interactions(doc)
    replies = doc.get("reply_count", 0)
    interactions = sum(per_sticker.values()) + replies
    unique = doc.get("unique_viewers", 0)
    peak = max(range(24), key=lambda h: (by_hour[str(h)], -h)) if any(by_hour.values()) else None
    timeline = doc.get("views_timeline", {})
    navigation = navigation_counts(navigation)
    return {
        "story_id": doc["_id"],
        "total_views": doc.get("view_count", 0),
        "unique_viewers": unique,
        "audience_size": audience_size,
        "reach_percentage": rate(unique, audience_size),
        "total_interactions": interactions,
        "interaction_rate": rate(interactions, unique),
        "replies": replies,
        "shares": doc.get("shares", 0),
        "views_by_hour": by_hour,
        "peak_viewing_hour": peak,
        "views_timeline": [timeline.get(str(h), 0) for h in range(life_hours(doc))],
        "navigation": navigation,
        "completion_rate": completion_rate(unique, navigation),
        "sticker_interactions": per_sticker,
    }


def user_insights(
    user_id: str, docs: list[dict], unique_viewers: int | None = None, navigation: dict[str, int] | None = None
) -> dict:
    """Totals over the user's stories; ``unique_viewers`` counts distinct people (each story's
    own count would count a person once per story they saw). ``views_timeline`` adds the stories'
    timelines hour by hour since each was posted; ``completion_rate`` is over the stories' own
    unique viewers, as navigation is counted per story."""
    by_hour = {str(h): 0 for h in range(24)}
    totals = {"total_views": 0, "unique_viewers": 0, "replies": 0, "total_interactions": 0, "shares": 0}
    stickers: dict[str, int] = {}
    timeline: list[int] = []
    for doc in docs:
        story = insights(doc, 0)
        for h, n in story["views_by_hour"].items():
            by_hour[h] += n
        for name in totals:
            totals[name] += story[name]
        for kind_total in story["sticker_interactions"].items():
            kind = kind_total[0].split("_", 2)[2]
            stickers[kind] = stickers.get(kind, 0) + kind_total[1]
        for h, n in enumerate(story["views_timeline"]):
            if h == len(timeline):
                timeline.append(0)
            timeline[h] += n
    peak = max(range(24), key=lambda h: (by_hour[str(h)], -h)) if any(by_hour.values()) else None
    navigation = navigation_counts(navigation)
    story_viewers = totals["unique_viewers"]
    if unique_viewers is not None:
        totals["unique_viewers"] = unique_viewers
    return {
        "user_id": user_id,
        "story_count": len(docs),
        **totals,
        "interaction_rate": rate(totals["total_interactions"], totals["unique_viewers"]),
        "views_by_hour": by_hour,
        "peak_viewing_hour": peak,
        "views_timeline": timeline,
        "navigation": navigation,
        "completion_rate": completion_rate(story_viewers, navigation),
        "sticker_interactions": stickers,
    }
