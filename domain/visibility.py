"""Who may see a story: one pure rule for the command side and the query side alike."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum


class Privacy(StrEnum):
    """Who may see a story (``StoryCreated.privacy``). ``FOLLOWERS`` is vignette's audience,
    ``FRIENDS`` entativa's (``Platform.audience``); ``CUSTOM`` lists its viewers."""

    PUBLIC = "public"
    FOLLOWERS = "followers"
    FRIENDS = "friends"
    CLOSE_FRIENDS = "close_friends"
    CUSTOM = "custom"


@dataclass(frozen=True)
class Relationship:
    """What the owner's social graph says about one viewer."""

    follows_owner: bool = False  # viewer -> owner
    followed_by_owner: bool = False  # owner -> viewer
    close_friend: bool = False  # viewer is on the owner's close-friends list

    @property
    def friends(self) -> bool:
        return self.follows_owner and self.followed_by_owner

    def in_audience(self, audience: str) -> bool:
        """Is the viewer in the owner's audience (``followers`` or ``friends``)?"""
        return self.friends if audience == Privacy.FRIENDS else self.follows_owner


def audience_allows(
    *,
    owner_id: str,
    privacy: str,
    allowed_viewer_ids: Collection[str],
    hidden_from_ids: Collection[str],
    viewer_id: str,
    relationship: Relationship,
) -> bool:
    """May ``viewer_id`` see a story with these settings, leaving liveness aside?

    Highlights use this alone (their stories outlive expiry); live views add liveness.
    """
    if viewer_id == owner_id:
        return True
    if viewer_id in hidden_from_ids:
        return False
    if privacy == Privacy.PUBLIC:
        return True
    if privacy == Privacy.FOLLOWERS:
        return relationship.follows_owner
    if privacy == Privacy.FRIENDS:
        return relationship.friends
    if privacy == Privacy.CLOSE_FRIENDS:
        return relationship.close_friend
    if privacy == Privacy.CUSTOM:
        return viewer_id in allowed_viewer_ids
    return False  # an unknown value hides rather than leaks
