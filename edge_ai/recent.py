"""A bounded map that forgets the least recently used: the memos on edge-ai's hot paths (prompt tokens,
stored entries, query vectors, hit decisions) are all this, each with its own size."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class Recent(OrderedDict):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def recall(self, key: Any) -> Any:
        """The value, now the most recently used; None if it is not kept."""
        value = self.get(key)
        if value is not None:
            self.move_to_end(key)
        return value

    def remember(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)
