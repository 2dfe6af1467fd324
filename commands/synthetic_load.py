"""A mixed, reproducible workload driven through the real write path (the application service
and group commit), for tests, demos and benchmarks: ``stories generate``."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from commands import models
from commands import use_cases as uc
from commands.application import StoriesApplication, utc_now
from commands.event_store import EventStore
from commands.group_commit import GroupCommitter
from domain.errors import DomainError
from domain.platform import Platform
from domain.visibility import Privacy

STICKERS = [
    {"sticker_type": "poll", "poll": {"question": "Which?", "options": [{"text": "A"}, {"text": "B"}, {"text": "C"}]}},
    {
        "sticker_type": "quiz",
        "quiz": {"question": "Capital?", "options": [{"text": "X"}, {"text": "Y"}], "correct_answer_index": 1},
    },
    {"sticker_type": "question", "question": {"text": "Ask me anything"}},
    {"sticker_type": "slider", "slider": {"question": "How much?"}},
    {"sticker_type": "countdown", "countdown": {"title": "Launch", "end_time": "2099-01-01T00:00:00Z"}},
    {"sticker_type": "link", "link": {"url": "https://example.org/", "label": "read"}},
]


@dataclass
class Tally:
    accepted: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    story_ids: list[str] = field(default_factory=list)
    last_position: int = 0

    def count(self, kind: str, ok: bool) -> None:
        target = self.accepted if ok else self.rejected
        target[kind] = target.get(kind, 0) + 1


class SyntheticLoad:
    def __init__(self, app: StoriesApplication, users: int = 200, seed: int = 7) -> None:
        self.app, self.rng = app, random.Random(seed)
        self.users = [f"user{i}" for i in range(users)]
        self.tally = Tally()

    async def _do(self, kind: str, command: uc.Command) -> None:
        try:
            _, position = await self.app.execute(command)
        except DomainError:
            self.tally.count(kind, False)
            return
        self.tally.count(kind, True)
        self.tally.last_position = max(self.tally.last_position, position)

    def _privacy(self) -> str:
        return self.rng.choice(
            [Privacy.PUBLIC, Privacy.PUBLIC, self.app.platform.audience, Privacy.CLOSE_FRIENDS, Privacy.CUSTOM]
        )

    def _story_body(self) -> models.CreateStory:
        privacy = self._privacy()
        body = {
            "story_type": "image",
            "media_url": f"https://cdn.example.org/{self.rng.randrange(10**9)}.jpg",
            "privacy": privacy,
            "stickers": self.rng.sample(STICKERS, self.rng.randint(0, 3)),
        }
        if privacy == Privacy.CUSTOM:
            body["allowed_viewer_ids"] = self.rng.sample(self.users, 5)
        return models.CreateStory.model_validate(body)

    async def social(self, follows_per_user: int = 10) -> None:
        jobs = []
        for user in self.users:
            for other in self.rng.sample(self.users, follows_per_user):
                if other != user:
                    jobs.append(self._do("follow", uc.Follow(user, other)))
            friend = self.rng.choice(self.users)
            if friend != user:
                jobs.append(self._do("close_friend", uc.AddCloseFriend(user, friend)))
        await self._gather(jobs)

    async def stories(self, count: int) -> None:
        async def create() -> None:
            author = self.rng.choice(self.users)
            try:
                result, position = await self.app.execute(uc.CreateStory(author, self._story_body()))
            except DomainError:
                self.tally.count("create", False)
                return
            self.tally.count("create", True)
            assert isinstance(result, uc.StoryPosted)
            self.tally.story_ids.append(str(result.story_id))
            self.tally.last_position = max(self.tally.last_position, position)

        await self._gather([create() for _ in range(count)])

    async def engagement(self, count: int) -> None:
        jobs = []
        for _ in range(count):
            story_id, user = self.rng.choice(self.tally.story_ids), self.rng.choice(self.users)
            roll = self.rng.random()
            if roll < 0.7:
                jobs.append(self._do("view", uc.ViewStory(user, story_id)))
            elif roll < 0.8:
                reply = models.ReplyToStory(text="nice one")
                jobs.append(self._do("reply", uc.ReplyToStory(user, story_id, reply)))
            else:
                interaction = models.Interact(
                    sticker_index=self.rng.randrange(3), option_index=self.rng.randrange(2), text="why?", value=0.5
                )
                jobs.append(self._do("interact", uc.Interact(user, story_id, interaction)))
        await self._gather(jobs)

    async def _gather(self, jobs: list, window: int = 512) -> None:
        for i in range(0, len(jobs), window):
            await asyncio.gather(*jobs[i : i + window])


async def generate(
    store: EventStore,
    platform: Platform,
    *,
    users: int,
    stories: int,
    engagements: int,
    seed: int = 7,
    clock: Callable[[], datetime] | None = None,
) -> Tally:
    committer = GroupCommitter(store)
    app = StoriesApplication(store, committer, platform, clock=clock or utc_now)
    load = SyntheticLoad(app, users, seed)
    try:
        await load.social()
        await load.stories(stories)
        await load.engagement(engagements)
    finally:
        committer.close()
    return load.tally
