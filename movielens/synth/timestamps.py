"""When each rating was given: every user is active over a log-normal span of days."""

from __future__ import annotations

import numpy as np

# A user's ratings start at a uniform time and spread over a log-normal number of days.
ACTIVE_DAYS_MEDIAN = 2.0
ACTIVE_DAYS_SIGMA = 2.5
DAY_S = 86_400


def timestamps(
    users: np.ndarray, n_users: int, time_range: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """Unix seconds, (n,) int64: each user is active over a log-normal span inside time_range."""
    return place(users, activity_windows(n_users, time_range, rng), rng)


def activity_windows(
    n_users: int, time_range: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's first second, (n_users,) int64, and active span in seconds, (n_users,) float64.

    Raises:
        ValueError: for a time_range that ends before it starts.
    """
    first, last = time_range
    if last < first:
        raise ValueError(f"time_range={time_range} must not end before it starts")
    start = rng.integers(first, last + 1, size=n_users)
    span = rng.lognormal(np.log(ACTIVE_DAYS_MEDIAN * DAY_S), ACTIVE_DAYS_SIGMA, n_users)
    return start, np.minimum(span, last - start)


def place(
    users: np.ndarray, windows: tuple[np.ndarray, np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    """Unix seconds, (n,) int64: a uniform time in the window of each row's user (user indices)."""
    start, span = windows
    return start[users] + (rng.random(len(users)) * span[users]).astype(np.int64)
