"""Redis read models: the social graph, live stories per author, who saw what, hot counters,
and story cards, which together serve the feed without touching MongoDB.

Key layout (``P`` is the configured prefix):
  P:following:{u} / P:followers:{u}   sets      the follow graph
  P:cf:{owner}                          set       the owner's close friends
  P:live:{author}                       zset      live story ids, score = created_at (epoch s)
  P:card:{story}                        string    JSON: the story's content and audience settings
  P:seen:{viewer}                       set       story ids the viewer has seen
  P:views / P:replies                   hashes    story id -> count
  P:answer:{story}:{i}                  hash      user -> option / value (poll, quiz, slider)
  P:countdown:{story}:{i}               set       users following a countdown
  P:expiry:due                           zset      live stories by due time (the expirer's own view)
  P:position:<view>                     string    the last log position each view applied
"""

from __future__ import annotations

from datetime import timedelta
from typing import Callable

import orjson
import redis

from commands.event_store import LoggedEvent
from domain import engagement as en, highlights as hl, social as so, stories as st
from projections.runner import StalePosition

# Key kinds that make up the read models (replay clears these; relay and expirer keep theirs).
READ_MODEL_KEYS = ("following:", "followers:", "cf:", "live:", "card:", "seen:", "views", "replies",
                   "answer:", "countdown:", "position:redis_views")
SEEN_TTL = int(timedelta(hours=49).total_seconds())  # longer than any story lives


class Keys:
    def __init__(self, prefix: str) -> None:
        self.p = prefix

    def following(self, u: str) -> str: return f"{self.p}following:{u}"
    def followers(self, u: str) -> str: return f"{self.p}followers:{u}"
    def close_friends(self, owner: str) -> str: return f"{self.p}cf:{owner}"
    def live(self, author: str) -> str: return f"{self.p}live:{author}"
    def card(self, story: str) -> str: return f"{self.p}card:{story}"
    def seen(self, viewer: str) -> str: return f"{self.p}seen:{viewer}"
    def answers(self, story: str, i: int) -> str: return f"{self.p}answer:{story}:{i}"
    def countdown(self, story: str, i: int) -> str: return f"{self.p}countdown:{story}:{i}"
    @property
    def views(self) -> str: return f"{self.p}views"
    @property
    def replies(self) -> str: return f"{self.p}replies"
    def position(self, name: str) -> str: return f"{self.p}position:{name}"
    @property
    def expiry_due(self) -> str: return f"{self.p}expiry:due"


def story_card(e: st.StoryCreated) -> dict:
    card = e.data()
    card["created_at"] = e.occurred_at.isoformat()
    return card


def on_story_created(p, k: Keys, e: st.StoryCreated) -> None:
    p.set(k.card(e.story_id), orjson.dumps(story_card(e)))
    p.zadd(k.live(e.user_id), {e.story_id: e.occurred_at.timestamp()})


def on_story_viewed(p, k: Keys, e: en.StoryViewed) -> None:
    p.sadd(k.seen(e.viewer_id), e.story_id)
    p.expire(k.seen(e.viewer_id), SEEN_TTL)
    p.hincrby(k.views, e.story_id, 1)


def on_story_replied(p, k: Keys, e: en.StoryReplied) -> None:
    p.hincrby(k.replies, e.story_id, 1)


def on_option_chosen(p, k: Keys, e: en.PollVoted | en.QuizAnswered) -> None:
    p.hset(k.answers(e.story_id, e.sticker_index), e.user_id, e.option_index)


def on_slider_answered(p, k: Keys, e: en.SliderAnswered) -> None:
    p.hset(k.answers(e.story_id, e.sticker_index), e.user_id, e.value)


def on_countdown_followed(p, k: Keys, e: en.CountdownFollowed) -> None:
    p.sadd(k.countdown(e.story_id, e.sticker_index), e.user_id)


def on_countdown_unfollowed(p, k: Keys, e: en.CountdownUnfollowed) -> None:
    p.srem(k.countdown(e.story_id, e.sticker_index), e.user_id)


def on_story_gone(p, k: Keys, e: st.StoryDeleted | st.StoryExpired) -> None:
    p.zrem(k.live(e.user_id), e.story_id)


def on_story_deleted(p, k: Keys, e: st.StoryDeleted) -> None:
    on_story_gone(p, k, e)
    p.delete(k.card(e.story_id))


def on_user_followed(p, k: Keys, e: so.UserFollowed) -> None:
    p.sadd(k.following(e.follower_id), e.followee_id)
    p.sadd(k.followers(e.followee_id), e.follower_id)


def on_user_unfollowed(p, k: Keys, e: so.UserUnfollowed) -> None:
    p.srem(k.following(e.follower_id), e.followee_id)
    p.srem(k.followers(e.followee_id), e.follower_id)


def on_close_friend_added(p, k: Keys, e: so.CloseFriendAdded) -> None:
    p.sadd(k.close_friends(e.user_id), e.friend_id)


def on_close_friend_removed(p, k: Keys, e: so.CloseFriendRemoved) -> None:
    p.srem(k.close_friends(e.user_id), e.friend_id)


def _nothing(p, k, e) -> None:
    pass


HANDLERS: dict[type, Callable] = {
    st.StoryCreated: on_story_created,
    en.StoryViewed: on_story_viewed,
    en.StoryReplied: on_story_replied,
    en.PollVoted: on_option_chosen,
    en.QuizAnswered: on_option_chosen,
    en.SliderAnswered: on_slider_answered,
    en.CountdownFollowed: on_countdown_followed,
    en.CountdownUnfollowed: on_countdown_unfollowed,
    en.QuestionAnswered: _nothing,
    en.LinkTapped: _nothing,
    st.StoryDeleted: on_story_deleted,
    st.StoryExpired: on_story_gone,
    so.UserFollowed: on_user_followed,
    so.UserUnfollowed: on_user_unfollowed,
    so.CloseFriendAdded: on_close_friend_added,
    so.CloseFriendRemoved: on_close_friend_removed,
    **{cls: _nothing for cls in (
        hl.HighlightCreated, hl.HighlightUpdated, hl.HighlightStoriesAdded, hl.HighlightStoriesRemoved,
        hl.HighlightDeleted, hl.HighlightFiled, hl.HighlightUnfiled, hl.HighlightsReordered,
    )},
}


class RedisViewStore:
    """Queues a batch's commands in one MULTI/EXEC with the new position (WATCHed)."""

    def __init__(self, client: redis.Redis, prefix: str, name: str = "redis_views",
                 handlers: dict[type, Callable] | None = None) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self.name = name
        self.handlers = HANDLERS if handlers is None else handlers

    def position(self) -> int:
        return int(self.client.get(self.keys.position(self.name)) or 0)

    def pending_until(self) -> None:
        return None  # MULTI/EXEC: a batch lands whole or not at all

    def apply(self, events: list[LoggedEvent], start: int, position: int) -> None:
        key = self.keys.position(self.name)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.watch(key)
            if int(pipe.get(key) or 0) != start:
                raise StalePosition(self.name)
            pipe.multi()
            for logged in events:
                handler = self.handlers.get(type(logged.event))
                if handler is not None:
                    handler(pipe, self.keys, logged.event)
            pipe.set(key, position)
            try:
                pipe.execute()
            except redis.WatchError:
                raise StalePosition(self.name) from None
