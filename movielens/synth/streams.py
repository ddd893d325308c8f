"""The generator's random streams: one per job, so movies and ratings agree without sharing draws."""

from __future__ import annotations

import numpy as np

# A stream per job: changing how one job draws leaves the others' draws as they were.
MOVIE_IDS, USER_IDS, TITLES, MODEL, PAIRS, NOISE, TIMES, RANKING, CHOICE = range(9)


def rng(seed: int, stream: int, *block: int) -> np.random.Generator:
    """The generator of `stream` (one of the constants above) for `seed`, and of one block of
    users within it when `block` (its index) is given: the parts writer draws each block from
    its own stream, so a block's draws do not depend on how many came before it."""
    return np.random.default_rng([seed, stream, *block])
