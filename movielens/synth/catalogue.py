"""The catalogue: sparse user and movie ids, and the movies' titles and genres."""

from __future__ import annotations

import numpy as np
import pandas as pd

from movielens.data.releases import ML100K_GENRES
from movielens.synth import streams

# Ids are sorted random draws from 1..ceil(count * spread), so they have gaps like real ones.
USER_ID_SPREAD = 1.02
MOVIE_ID_SPREAD = 3.3

TITLE_ADJECTIVES = (
    "Silent", "Last", "Broken", "Golden", "Dark", "Lost", "Wild", "Little", "Secret", "Long",
    "Red", "Final", "Hidden", "Crazy", "Lonely", "Electric", "Frozen", "Sweet", "Bitter", "Big",
)  # fmt: skip
TITLE_NOUNS = (
    "Night", "River", "Kingdom", "Stranger", "Summer", "Heart", "City", "Road", "Garden", "Ghost",
    "Detective", "Island", "Dream", "Machine", "Mountain", "Letter", "Empire", "Wedding", "Storm",
    "Journey", "Planet", "Witness", "Shadow", "Window", "Horizon",
)  # fmt: skip
LATIN1_WORDS = (
    "Café", "Amélie", "Señor", "Über", "Naïve", "Garçon", "Mañana", "Fräulein", "Déjà Vu",
    "Smörgås",
)  # fmt: skip
ARTICLES = ("The", "A", "An")
FIRST_YEAR, LAST_YEAR = 1915, 2019
NO_GENRES = ML100K_GENRES[0]
GENRES = ML100K_GENRES[1:]
NO_GENRES_SHARE = 0.015
# Title patterns; the first movies take them in this order so that even a tiny release has each.
_LATIN1, _ARTICLE, _QUOTED, _SUBTITLE, _PLAIN = range(5)
_PATTERN_SHARES = (0.08, 0.12, 0.03, 0.12, 0.65)


def sparse_ids(count: int, spread: float, rng: np.random.Generator) -> np.ndarray:
    """`count` sorted distinct ids from 1..ceil(count * spread), int32."""
    population = int(np.ceil(count * spread))
    return np.sort(rng.choice(population, size=count, replace=False)).astype(np.int32) + 1


def movie_ids(n_movies: int, seed: int) -> np.ndarray:
    """The movieIds generate_movies and generate_ratings share for a seed, (n_movies,) int32."""
    return sparse_ids(n_movies, MOVIE_ID_SPREAD, streams.rng(seed, streams.MOVIE_IDS))


def user_ids(n_users: int, seed: int) -> np.ndarray:
    """The userIds of generate_ratings for a seed, (n_users,) int32."""
    return sparse_ids(n_users, USER_ID_SPREAD, streams.rng(seed, streams.USER_IDS))


def generate_movies(n_movies: int, seed: int) -> pd.DataFrame:
    """A movies table: titles with years, '|'-joined genres drawn from ML100K_GENRES.

    Titles use Latin-1 characters only, so every layout can encode them; the first few movies
    cover the awkward cases (accented letters, a comma as in "Heart, The (1990)", double quotes
    and a colon), the rest draw a pattern at random. No title contains '::', '|' or a newline.

    Args:
        n_movies: number of movies, at least 1.
        seed: the same seed as generate_ratings gives the same movieIds.

    Returns:
        movieId (int32, sorted, with gaps), title (str), genres (str), n_movies rows.
    """
    if n_movies < 1:
        raise ValueError(f"n_movies={n_movies} must be at least 1")
    rng = streams.rng(seed, streams.TITLES)
    patterns = rng.choice(len(_PATTERN_SHARES), size=n_movies, p=_PATTERN_SHARES)
    first = min(n_movies, len(_PATTERN_SHARES))
    patterns[:first] = np.arange(first)
    words = np.column_stack([
        rng.integers(len(TITLE_ADJECTIVES), size=n_movies),
        rng.integers(len(TITLE_NOUNS), size=n_movies),
        rng.integers(len(TITLE_NOUNS), size=n_movies),
        rng.integers(len(LATIN1_WORDS), size=n_movies),
        rng.integers(len(ARTICLES), size=n_movies),
    ])  # fmt: skip
    years = rng.integers(FIRST_YEAR, LAST_YEAR + 1, size=n_movies)
    titles = [_title(p, w, y) for p, w, y in zip(patterns, words, years, strict=True)]
    return pd.DataFrame({
        "movieId": movie_ids(n_movies, seed), "title": titles, "genres": _genres(n_movies, rng),
    })  # fmt: skip


def _title(pattern: int, words: np.ndarray, year: int) -> str:
    adjective, noun = TITLE_ADJECTIVES[words[0]], TITLE_NOUNS[words[1]]
    body = {
        _LATIN1: f"{LATIN1_WORDS[words[3]]} {noun}",
        _ARTICLE: f"{adjective} {noun}, {ARTICLES[words[4]]}",
        _QUOTED: f'"{adjective}" {noun}',
        _SUBTITLE: f"{noun}: {adjective} {TITLE_NOUNS[words[2]]}",
        _PLAIN: f"{adjective} {noun}",
    }[pattern]
    return f"{body} ({year})"


def _genres(n_movies: int, rng: np.random.Generator) -> list[str]:
    """1 to 3 distinct genres per movie, or NO_GENRES for a few."""
    order = np.argsort(rng.random((n_movies, len(GENRES))), axis=1)
    counts = rng.choice([1, 2, 3], size=n_movies, p=[0.45, 0.35, 0.2])
    unknown = rng.random(n_movies) < NO_GENRES_SHARE
    names = np.array(GENRES, dtype=object)
    return [
        NO_GENRES if none else "|".join(names[np.sort(row[:k])])
        for row, k, none in zip(order, counts, unknown, strict=True)
    ]
