"""The data generator: MovieLens-shaped releases with a known floor."""

from movielens.synth.generate import *  # noqa: F403  (split by job below)
