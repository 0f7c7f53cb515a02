"""Independent random streams from one user seed.

Two steps that both call `np.random.default_rng(seed)` with the user's default
seed draw the same numbers. That once made the reward model's held-out split
(u < 0.2) exactly the images simulated annotator 0 had flipped (u < 0.1), so
held-out agreement measured the noise, not the model. Each purpose gets its own
stream: numpy mixes the seed and the purpose's hash through SeedSequence.
"""

from __future__ import annotations

import zlib

import numpy as np


def stream(seed: int, purpose: str) -> np.random.Generator:
    """A generator for `purpose` ('annotate', 'reward-split', ...) that shares no draws with another purpose's."""
    return np.random.default_rng([seed, zlib.crc32(purpose.encode())])
