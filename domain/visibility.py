"""Who may see a story: one pure rule for the command side and the query side alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection


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
        return self.friends if audience == "friends" else self.follows_owner


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
    if privacy == "public":
        return True
    if privacy == "followers":
        return relationship.follows_owner
    if privacy == "friends":
        return relationship.friends
    if privacy == "close_friends":
        return relationship.close_friend
    if privacy == "custom":
        return viewer_id in allowed_viewer_ids
    return False  # an unknown value hides rather than leaks
