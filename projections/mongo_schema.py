"""The MongoDB read models' layout shared by the projector (writes) and the query API (reads).

Documents are written by ``projections.mongo_views`` and read by ``read_api.queries``; what
both sides must agree on beyond the collections' names lives here.
"""

from __future__ import annotations

from typing import Any, Final

POSITIONS: Final = "projection_positions"  # one document per view store (and partition): its log position

GONE: Final = "_gone"  # a tombstone's flag: the document was deleted (readers skip such documents)
NOT_GONE: Final[dict[str, Any]] = {GONE: {"$ne": True}}  # what a reader adds to its filter on a tombstoned collection
