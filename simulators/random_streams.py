"""Seeded random streams: one per seed and name, so adding a stream never shifts another."""

from __future__ import annotations

import hashlib
import random


def rng_for(seed: int, *parts: object) -> random.Random:
    """A random stream derived from the seed and a name; stable across runs and Pythons."""
    digest = hashlib.sha256("|".join(map(str, (seed, *parts))).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))
