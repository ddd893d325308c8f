"""The generator's random streams: one per job, so movies and ratings agree without sharing draws."""

from __future__ import annotations

import numpy as np

# A stream per job: changing how one job draws leaves the others' draws as they were.
MOVIE_IDS, USER_IDS, TITLES, MODEL, PAIRS, NOISE, TIMES, RANKING, CHOICE = range(9)


def rng(seed: int, stream: int) -> np.random.Generator:
    """The generator of `stream` (one of the constants above) for `seed`."""
    return np.random.default_rng([seed, stream])
