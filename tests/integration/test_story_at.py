"""`stories story-at`: a story as it was at a moment, from the log alone."""

from __future__ import annotations

import asyncio

from commands import models
from commands import use_cases as uc
from commands.application import StoriesApplication
from commands.event_store import EventStore
from commands.group_commit import GroupCommitter
from domain.platform import Platform
from projections.replay import Cut, parse_until, story_at

POLL = {"sticker_type": "poll", "poll": {"question": "?", "options": [{"text": "a"}, {"text": "b"}]}}


def test_story_at_shows_counts_and_results_as_they_were(sqlite_url, clock):
    store = EventStore(sqlite_url)
    committer = GroupCommitter(store)
    app = StoriesApplication(store, committer, Platform.VIGNETTE, clock=clock)

    async def scenario():
        body = models.CreateStory.model_validate(
            {"story_type": "text", "text_content": "hi", "privacy": "public", "stickers": [POLL]}
        )
        created, _ = await app.execute(uc.CreateStory("alice", body))
        story_id = str(created.story_id)
        for i in range(3):
            clock.advance(minutes=1)
            await app.execute(uc.ViewStory(f"v{i}", story_id))
            await app.execute(uc.Interact(f"v{i}", story_id, models.Interact(sticker_index=0, option_index=0)))
        middle = clock.advance(minutes=1)
        for i in range(3, 5):
            clock.advance(minutes=1)
            await app.execute(uc.ViewStory(f"v{i}", story_id))
            await app.execute(uc.Interact(f"v{i}", story_id, models.Interact(sticker_index=0, option_index=1)))
        await app.execute(uc.ViewStory("v0", story_id))  # a repeat view
        return story_id, middle

    try:
        story_id, middle = asyncio.run(scenario())
        then = story_at(store, story_id, middle)
        assert (then["view_count"], then["unique_viewers"]) == (3, 3)
        poll = then["stickers"][0]["poll"]
        assert poll["total_votes"] == 3 and [o["votes"] for o in poll["options"]] == [3, 0]
        now = story_at(store, story_id, clock.advance(minutes=1))
        assert (now["view_count"], now["unique_viewers"]) == (6, 5)
        poll = now["stickers"][0]["poll"]
        assert [o["votes"] for o in poll["options"]] == [3, 2] and [o["percentage"] for o in poll["options"]] == [
            60.0,
            40.0,
        ]
        assert story_at(store, "no-such-story", middle) is None
        assert [v["version"] for v in now["versions"]] == [1] and now["versions"][0]["text_content"] == "hi"
        assert parse_until(store, middle.isoformat()) == Cut(store.head(), middle)
    finally:
        committer.close()
        store.close()
