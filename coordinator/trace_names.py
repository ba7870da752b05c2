"""Names beside ids in the plain-sentence explanation of a decision.

The engine's trace says ids (it is pure and hot: no names to look up); a person reading
"short of SKU-0042" at 3 a.m. wants "SKU-0042 (鲜肉42)". This rewrites the sentences when a
decision is shown, from the names of the warehouses and of the order's SKUs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Names:
    """Warehouse names and SKU names by id; ``named`` writes them beside the ids."""

    warehouses: Mapping[str, str]
    skus: Mapping[str, str]
    _pattern: re.Pattern[str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        ids = [i for i, n in (*self.warehouses.items(), *self.skus.items()) if n]
        if ids:
            # longest first, and never inside a longer id (WH-1 within WH-10)
            alternatives = "|".join(re.escape(i) for i in sorted(ids, key=len, reverse=True))
            pattern = re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])")
            object.__setattr__(self, "_pattern", pattern)

    def named(self, text: str) -> str:
        """``text`` with ``WH-04 杭州滨江仓`` for a warehouse id, ``SKU-1 (酸奶1)`` for a SKU."""
        if self._pattern is None:
            return text
        return self._pattern.sub(self._one, text)

    def _one(self, match: re.Match[str]) -> str:
        item = match.group(0)
        sku = self.skus.get(item)
        if sku:
            return f"{item} ({sku})"
        return f"{item} {self.warehouses[item]}"
