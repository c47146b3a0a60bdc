"""Seeded randomness that is identical on every machine and run.

Python's `hash()` is salted per process and dict/set order can depend on insertion history, so every
random choice in ASD derives its seed from SHA-256 of explicit parts (seed, task, record id, turn, purpose).
"""

from __future__ import annotations

import hashlib
import random


def digest(*parts: object) -> bytes:
    """SHA-256 over the parts, unambiguously joined (type-tagged, NUL-separated)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(f"{type(p).__name__}:{p}".encode())
        h.update(b"\x00")
    return h.digest()


def seeded_rng(*parts: object) -> random.Random:
    """A `random.Random` seeded from the parts; Mersenne Twister with an int seed is platform independent."""
    return random.Random(int.from_bytes(digest(*parts)[:16], "big"))


def sample(rng: random.Random, population: list[str], k: int) -> list[str]:
    """k distinct items in seeded order; built on `random()` only, whose stream is stable across versions."""
    pool = list(population)
    out: list[str] = []
    while pool and len(out) < k:
        out.append(pool.pop(int(rng.random() * len(pool))))
    return out


def randint_below(rng: random.Random, n: int) -> int:
    """Uniform integer in [0, n) from `random()`, whose output stream is fixed across Python versions."""
    return min(int(rng.random() * n), n - 1)
