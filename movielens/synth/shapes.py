"""The real releases' shapes, and the user, movie and per-user counts a synthetic release takes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReleaseShape:
    """The size and time span of a real release, which synthetic ones imitate by default."""

    ratings: int
    users: int
    movies: int
    first_timestamp: int
    last_timestamp: int


RELEASE_SHAPES = {
    "ml-latest-small": ReleaseShape(100_836, 610, 9_742, 828_124_615, 1_537_799_250),
    "ml-latest": ReleaseShape(33_832_162, 330_975, 86_537, 789_652_009, 1_689_842_142),
    "ml-100k": ReleaseShape(100_000, 943, 1_682, 874_724_710, 893_286_638),
    "ml-1m": ReleaseShape(1_000_209, 6_040, 3_883, 956_703_932, 1_046_454_590),
    "ml-10m": ReleaseShape(10_000_054, 69_878, 10_681, 823_185_196, 1_231_131_736),
    "ml-20m": ReleaseShape(20_000_263, 138_493, 27_278, 789_652_009, 1_427_784_002),
    "ml-25m": ReleaseShape(25_000_095, 162_541, 62_423, 789_652_009, 1_574_327_703),
    "ml-32m": ReleaseShape(32_000_204, 200_948, 87_585, 789_652_009, 1_697_164_147),
}
# The span generate_ratings' timestamps take when it is given none.
DEFAULT_TIME_SHAPE = "ml-25m"

# Movies per release grow slower than ratings: movies ~ ratings ** MOVIE_SCALE_EXPONENT.
MOVIE_SCALE_EXPONENT = 0.6
# A user rates at most a share of all movies.
MAX_USER_SHARE = 0.5
MIN_USER_RATINGS = (5, 20)  # the floor for small samples, and the releases' own guarantee


def time_range(dataset_name: str) -> tuple[int, int]:
    """The first and last unix timestamp of a real release, seconds."""
    shape = RELEASE_SHAPES[dataset_name]
    return shape.first_timestamp, shape.last_timestamp


def default_counts(dataset_name: str, n_ratings: int) -> tuple[int, int]:
    """Users and movies for `n_ratings` ratings, scaled from the real release.

    Users scale linearly (the release's ratings per user are kept), movies sub-linearly; users
    are then raised if needed so that no user must rate more than MAX_USER_SHARE of the movies.

    Returns:
        (n_users, n_movies); the real counts when `n_ratings` is the real number of ratings.

    Raises:
        ValueError: for n_ratings below 1.
    """
    if n_ratings < 1:
        raise ValueError(f"n_ratings={n_ratings} must be at least 1")
    shape = RELEASE_SHAPES[dataset_name]
    scale = n_ratings / shape.ratings
    n_movies = max(2 * MIN_USER_RATINGS[0], round(shape.movies * scale**MOVIE_SCALE_EXPONENT))
    n_users = max(1, round(shape.users * scale))
    n_users = max(n_users, -(-n_ratings // max_user_ratings(n_movies, MIN_USER_RATINGS[0])))
    return n_users, n_movies


def max_user_ratings(n_movies: int, min_user_ratings: int) -> int:
    """The most ratings one user gives: MAX_USER_SHARE of the movies, at least the least."""
    return min(n_movies, max(min_user_ratings, int(n_movies * MAX_USER_SHARE)))


def default_min_user_ratings(n_ratings: int, n_users: int) -> int:
    """The least ratings per user: 20 where the sample allows it, down to 5 for small samples."""
    low, high = MIN_USER_RATINGS
    return min(high, max(low, n_ratings // (low * n_users)))


def check_counts(
    n_ratings: int, n_users: int, n_movies: int, seed: int, min_user_ratings: int | None
) -> int:
    """Validate the counts and return the least ratings per user.

    Raises:
        ValueError: for counts that cannot be met, naming the count to change.
    """
    for name, value in (("n_ratings", n_ratings), ("n_users", n_users), ("n_movies", n_movies)):
        if value < 1:
            raise ValueError(f"{name}={value} must be at least 1")
    if seed < 0:
        raise ValueError(f"seed={seed} must be non-negative")
    if min_user_ratings is None:
        min_user_ratings = default_min_user_ratings(n_ratings, n_users)
    if not 1 <= min_user_ratings <= n_movies:
        raise ValueError(f"min_user_ratings={min_user_ratings} must be in 1..n_movies={n_movies}")
    if n_users * min_user_ratings > n_ratings:
        raise ValueError(
            f"n_ratings={n_ratings} is too few for n_users={n_users} with at least "
            f"{min_user_ratings} ratings each; use at most {n_ratings // min_user_ratings} users"
        )
    most = n_users * max_user_ratings(n_movies, min_user_ratings)
    if n_ratings > most:
        raise ValueError(
            f"n_ratings={n_ratings} is more than n_users={n_users} can give when each rates at "
            f"most {MAX_USER_SHARE:g} of n_movies={n_movies}; use more users or movies"
        )
    return min_user_ratings
