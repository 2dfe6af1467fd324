"""The two product profiles that share one codebase."""

from __future__ import annotations

from enum import StrEnum

from domain.visibility import Privacy


class Platform(StrEnum):
    VIGNETTE = "vignette"  # Instagram-like: one-way followers
    ENTATIVA = "entativa"  # Facebook-like: friends are mutual follows

    @property
    def audience(self) -> Privacy:
        """The privacy value meaning "my audience": followers or friends."""
        return Privacy.FOLLOWERS if self is Platform.VIGNETTE else Privacy.FRIENDS

    @property
    def privacy_values(self) -> tuple[Privacy, ...]:
        return (Privacy.PUBLIC, self.audience, Privacy.CLOSE_FRIENDS, Privacy.CUSTOM)
