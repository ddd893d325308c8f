"""The data generator: MovieLens-shaped releases from a latent model, with the floor a perfect model scores.

streams (random streams), shapes (the real releases' sizes and the counts), catalogue (ids,
titles, genres), latent (the rating model), sampling (who rates what), timestamps, choices (taste
and the ranking estimate), oracle (the Floor), layouts and release (the files), generate (the
parts put together), parts (a table as a folder of Parquet parts, block by block), cli (`movielens synth`).
"""

from movielens.synth.catalogue import generate_movies, movie_ids, user_ids
from movielens.synth.cli import main
from movielens.synth.generate import (
    RatingsOptions,
    floor_path,
    generate_ratings,
    generate_ratings_and_floor,
    generate_release,
)
from movielens.synth.latent import expected_rating, log_relevant
from movielens.synth.oracle import Floor
from movielens.synth.parts import write_parts
from movielens.synth.release import write_release
from movielens.synth.shapes import RELEASE_SHAPES, ReleaseShape, default_counts, time_range

__all__ = [
    "RELEASE_SHAPES",
    "Floor",
    "RatingsOptions",
    "ReleaseShape",
    "default_counts",
    "expected_rating",
    "floor_path",
    "generate_movies",
    "generate_ratings",
    "generate_ratings_and_floor",
    "generate_release",
    "log_relevant",
    "main",
    "movie_ids",
    "time_range",
    "user_ids",
    "write_parts",
    "write_release",
]
