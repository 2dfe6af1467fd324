"""Read-your-writes over HTTP, served in process: a query carrying X-Stories-Min-Position = a write's log
position always reflects that write (50 sequential writes of mixed kinds, each read back at once)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(180)

S = "/api/v1/stories"
POLL = {"sticker_type": "poll", "poll": {"question": "?", "options": [{"text": "a"}, {"text": "b"}]}}
WRITES = 50


def test_each_of_50_writes_is_visible_at_its_position(read_side, uid):
    rs = read_side
    owner, reader = uid("owner"), uid("reader")
    state = {"stories": [], "views": {}, "votes": 0, "replies": 0, "close": [], "followed": set(), "deleted": []}
    served_positions: list[int] = []
    kinds = [
        "story",
        "view",
        "vote",
        "follow",
        "reply",
        "close_friend",
        "delete",
        "highlight",
        "view_again",
        "unfollow",
    ]

    def read(path: str, user: str, at: int) -> dict:
        resp = rs.read(path, user, at)  # asserts 200 and X-Stories-Position >= at
        served_positions.append(resp.position)
        return resp.body

    def every(path: str, user: str, at: int) -> list:
        """Every item of a paged list (the first page counts as the served read; the following
        pages are read at the same position)."""
        first = read(path, user, at)
        items, cursor = list(first["items"]), first["next_cursor"]
        while cursor is not None:
            sep = "&" if "?" in path else "?"
            more = rs.read(f"{path}{sep}cursor={cursor}", user, at).body
            items.extend(more["items"])
            cursor = more["next_cursor"]
        return items

    # positions are those of the command API, one global log order: strictly increasing
    last = 0
    for n in range(WRITES):
        kind = kinds[n % len(kinds)]
        if kind == "story":
            story, at = rs.story(owner, privacy="public", stickers=[POLL])
            state["stories"].append(story)
            assert story in [s["story_id"] for s in every(f"{S}/user/{owner}", reader, at)]
        elif kind in ("view", "view_again"):
            story = state["stories"][-1]
            at = rs.view(reader, story)
            state["views"][story] = state["views"].get(story, 0) + 1
            served = read(f"{S}/{story}", reader, at)
            assert served["viewed_by_me"] is True and served["view_count"] == state["views"][story]
        elif kind == "vote":
            story = state["stories"][-1]
            voter = uid(f"voter{n}")
            at = rs.interact(voter, story, sticker_index=0, option_index=n % 2).position
            served = read(f"{S}/{story}", voter, at)
            assert served["stickers"][0]["poll"]["my_vote"] == n % 2
            assert served["stickers"][0]["poll"]["total_votes"] == 1
        elif kind == "follow":
            author = uid(f"author{n}")
            rs.story(author, privacy="followers")
            at = rs.follow(reader, author)
            state["followed"].add(author)
            feed = every(f"{S}/feed", reader, at)
            assert author in [e["user_id"] for e in feed]
        elif kind == "unfollow":
            author = sorted(state["followed"])[0]
            at = rs.write("DELETE", f"/api/v1/following/{author}", reader, expect=204).position
            state["followed"].discard(author)
            feed = every(f"{S}/feed", reader, at)
            assert author not in [e["user_id"] for e in feed]
        elif kind == "reply":
            story = state["stories"][-1]
            at = rs.write("POST", f"{S}/{story}/reply", reader, {"text": f"reply {n}"}, expect=201).position
            state["replies"] += 1
            assert read("/api/v1/viewers/user/insights", owner, at)["replies"] == state["replies"]
        elif kind == "close_friend":
            friend = uid(f"friend{n}")
            at = rs.write("POST", f"/api/v1/close-friends/{friend}", owner, expect=201).position
            state["close"].append(friend)
            listed = [x["user_id"] for x in every("/api/v1/close-friends/", owner, at)]
            assert sorted(listed) == sorted(state["close"])
        elif kind == "delete":
            story, _ = rs.story(owner, privacy="public")
            at = rs.write("DELETE", f"{S}/{story}", owner, expect=204).position
            resp = rs.query(f"{S}/{story}", reader, at=at)
            assert resp.status == 404, resp
            assert story not in [s["story_id"] for s in every(f"{S}/user/{owner}", reader, at)]
        elif kind == "highlight":
            story = state["stories"][-1]
            resp = rs.write("POST", "/api/v1/highlights", owner, {"title": f"h{n}", "story_ids": [story]}, expect=201)
            at = resp.position
            listed = [h["highlight_id"] for h in every(f"/api/v1/highlights/user/{owner}", reader, at)]
            assert resp.body["highlight_id"] in listed
        assert at > last, (kind, at, last)
        last = at
    assert len(served_positions) == WRITES
    assert served_positions == sorted(served_positions)  # never served from an older position later
