"""The Redis layout's cluster rules, without a server: hash tags, how a batch's calls become
per-tag scripts, and how the clients and multi-key reads follow the URL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import redis
import redis.cluster
from hypothesis import given
from hypothesis import strategies as st

from commands.event_store import LoggedEvent
from domain import engagement as en
from domain import social as so
from domain import stories as sto
from projections.redis_schema import Keys, hash_tag
from projections.redis_views import HANDLERS, BatchWrites, RedisViewStore, redis_command
from stories.backends import cluster_options, connect_redis, is_cluster_url, slot_groups

K = Keys("p:")
T = datetime(2026, 1, 1, 12, tzinfo=UTC)


def test_every_key_of_a_user_or_a_story_carries_its_id_as_the_hash_tag():
    for key in (
        K.following("u"),
        K.followers("u"),
        K.close_friends("u"),
        K.close_friend_of("u"),
        K.live("u"),
        K.seen("u"),
        K.stamps("u"),
    ):
        assert hash_tag(key) == "u"
    assert {hash_tag(key) for key in K.story_keys("s")} == {"s"}
    assert hash_tag(K.expiry_due) == "~expiry" and hash_tag(K.seen_due) is None
    assert hash_tag("a{}b") is None and hash_tag("a{x}{y}") == "x"  # as Redis Cluster reads them


@given(st.text(alphabet=st.characters(blacklist_characters="{}", blacklist_categories=("Cs",)), min_size=1))
def test_a_tag_decides_the_slot_whatever_the_id(user):
    slots = {redis.cluster.key_slot(key.encode()) for key in (K.live(user), K.seen(user), K.following(user))}
    assert len(slots) == 1


def _created(sid: str, user: str) -> sto.StoryCreated:
    return sto.StoryCreated(
        originator_id=uuid4(),
        originator_version=1,
        occurred_at=T,
        story_id=sid,
        user_id=user,
        story_type="text",
        media_id=None,
        media_url=None,
        thumbnail_url=None,
        text_content="hi",
        background_color=None,
        background_gradient=None,
        duration=5.0,
        stickers=[],
        privacy="followers",
        allowed_viewer_ids=[],
        hidden_from_ids=[],
        allow_replies="everyone",
        expires_at=(T + timedelta(hours=24)).isoformat(),
    )


def _viewed(sid: str, viewer: str) -> en.StoryViewed:
    return en.StoryViewed(
        originator_id=uuid4(),
        originator_version=2,
        occurred_at=T + timedelta(minutes=1),
        story_id=sid,
        owner_id="alice",
        viewer_id=viewer,
        view_number=1,
    )


def test_a_batch_becomes_one_stamped_script_per_tag_and_one_command_per_untagged_key():
    store = RedisViewStore(client=None, prefix="p:")
    events = [
        LoggedEvent(1, _created("s1", "alice")),
        LoggedEvent(2, _viewed("s1", "bob")),
        LoggedEvent(3, _viewed("s1", "carol")),
        LoggedEvent(
            4,
            so.UserFollowed(
                originator_id=uuid4(), originator_version=1, occurred_at=T, follower_id="bob", followee_id="alice"
            ),
        ),
    ]
    writes = BatchWrites(grace_ms=0)
    for logged in events:
        writes.at = logged.position
        HANDLERS[type(logged.event)](writes, K, logged.event)
    writes.set_expiries()
    groups, plain = store._group(writes)
    assert set(groups) == {"s1", "alice", "bob", "carol"}
    # a story's stamps live in its counters (they go with it); a user's in a key of their own
    assert groups["s1"].stamp_key == K.counters("s1") and not groups["s1"].make_stamp
    assert groups["bob"].stamp_key == K.stamps("bob") and groups["bob"].make_stamp
    for tag, group in groups.items():
        assert {hash_tag(key) for key in group.keys} == {tag}
    # the two viewers' due times: one ZADD GT for the batch
    due = int((T + timedelta(hours=24)).timestamp() * 1000)
    assert plain == [("ZADD", K.seen_due, ["GT", due, "bob", due, "carol"])]


def test_recorded_calls_become_redis_commands():
    assert redis_command(("zadd", ("k", {"m": 1.5}), {"gt": True})) == [("ZADD", "k", ["GT", "1.5", "m"])]
    assert redis_command(("pexpire", ("k", 10), {"nx": True})) == [("PEXPIRE", "k", [10, "NX"])]
    assert redis_command(("unlink", ("a{s}", "b{s}"))) == [("UNLINK", "a{s}", []), ("UNLINK", "b{s}", [])]
    assert redis_command(("hincrbyfloat", ("k", "f", 0.1))) == [("HINCRBYFLOAT", "k", ["f", "0.1"])]


def test_the_url_names_one_server_or_a_cluster():
    assert is_cluster_url("redis+cluster://a:1,b:2") and not is_cluster_url("redis://a:1")
    assert cluster_options("redis+cluster://u:pw@a:7000,[::1]:7001/?read_from_replicas=true") == (
        [("a", 7000), ("::1", 7001)],
        {"username": "u", "password": "pw", "read_from_replicas": True},
    )
    assert isinstance(connect_redis("redis://127.0.0.1:1"), redis.Redis)  # no connection until used


def test_multi_key_reads_are_split_by_slot_only_on_a_cluster():
    keys = [K.live(f"u{i}") for i in range(50)]
    assert slot_groups(redis.Redis(), keys) == [keys]
    cluster = object.__new__(redis.cluster.RedisCluster)  # the type alone decides
    groups = slot_groups(cluster, keys)
    assert sorted(k for g in groups for k in g) == sorted(keys)
    assert all(len({redis.cluster.key_slot(k.encode()) for k in g}) == 1 for g in groups)


def test_a_change_notice_names_the_stories_the_authors_and_the_one_user_changes():
    from projections.redis_views import change_notice

    events = [
        LoggedEvent(1, _created("s1", "alice")),
        LoggedEvent(2, _viewed("s1", "bob")),
        LoggedEvent(
            3,
            so.CloseFriendAdded(
                originator_id=uuid4(), originator_version=1, occurred_at=T, user_id="alice", friend_id="carol"
            ),
        ),
    ]
    assert change_notice(events, 9) == {
        "position": 9,
        "stories": ["s1"],
        "authors": ["alice"],
        "pairs": [["bob", "alice"], ["carol", "alice"]],
    }
