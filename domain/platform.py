"""The two product profiles that share one codebase."""

from __future__ import annotations

from enum import StrEnum


class Platform(StrEnum):
    VIGNETTE = "vignette"  # Instagram-like: one-way followers
    ENTATIVA = "entativa"  # Facebook-like: friends are mutual follows

    @property
    def audience(self) -> str:
        """The privacy value meaning "my audience": followers or friends."""
        return "followers" if self is Platform.VIGNETTE else "friends"

    @property
    def privacy_values(self) -> tuple[str, ...]:
        return ("public", self.audience, "close_friends", "custom")
