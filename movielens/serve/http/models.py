"""The service's request and response bodies, as pydantic models (they make the OpenAPI docs).

Field names are the JSON ones `movielens recommend --json` prints (camelCase ids, as in the
ratings files). Requests refuse unknown fields and values of the wrong type; the limits that
depend on settings (list length, history size) are checked by the app against ServiceSettings.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictInt


class Rating(BaseModel):
    """One rating a person gives."""

    model_config = ConfigDict(extra="forbid")

    movieId: StrictInt
    rating: float = Field(allow_inf_nan=False, description="on the model's scale, e.g. 0.5 to 5")


class RatingsRequest(BaseModel):
    """POST /recommendations: the ratings a person gives, and how long a list to return."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "ratings": [{"movieId": 1, "rating": 4.5}, {"movieId": 2571, "rating": 5}],
                    "n": 10,
                }
            ]
        },
    )

    ratings: list[Rating]
    n: StrictInt = 10


class Error(BaseModel):
    """Every refused request: one line saying what was wrong."""

    error: str


class Recommendation(BaseModel):
    movieId: int
    title: str
    genres: str
    score: float = Field(description="the served score, will-watch x will-like (0-1)")
    predicted: float = Field(description="the rating model's predicted rating")


class UserRecommendations(BaseModel):
    """A list as `movielens recommend --user ID --json` prints it."""

    userId: int | None
    personalised: bool = Field(description="false: the models do not know the user (see reason)")
    reason: str | None
    ranked_by: str
    rated: int = Field(description="movies the person rated")
    recommendations: list[Recommendation]


class FoldedIn(BaseModel):
    """What was done with the ratings given (as `movielens recommend --ratings --json`)."""

    ratings_given: int
    movies_given: int
    ratings_folded_in: int
    training_ratings: int
    unknown_movies: list[int] = Field(description="movieIds the models do not know: skipped")
    repeated_movies: list[int] = Field(description="given more than once: the last rating kept")
    replaced_training_ratings: list[int]


class FoldedRecommendations(UserRecommendations):
    """A list for ratings given in the request, folded into the models (no retraining)."""

    folded_in: FoldedIn


class Neighbour(BaseModel):
    movieId: int
    title: str
    genres: str
    similarity: float


class SimilarMovies(BaseModel):
    """As `movielens similar ID --json` prints it."""

    movieId: int
    title: str
    genres: str
    similar_by: str
    similar: list[Neighbour]


class Movie(BaseModel):
    movieId: int
    title: str
    genres: str
    ratings: int = Field(description="training ratings of the movie")
    known: bool = Field(description="whether the models can rank it and fold its ratings in")


class MovieSearch(BaseModel):
    q: str
    found: int = Field(description="titles that matched; `movies` holds the most rated of them")
    movies: list[Movie]


class ServedFile(BaseModel):
    path: str
    md5: str | None
    size: int | None
    stage: str | None = Field(description="the dvc.lock stage that wrote it")
    lock_md5: str | None = Field(description="its hash in dvc.lock")
    matches_lock: bool
    params: dict = Field(description="the params.yaml values that stage ran with (dvc.lock)")


class Serving(BaseModel):
    users: int
    movies: int
    watch_model: str
    ranked_by: str
    like_weight: float
    rating_scale: list[float]
    fold_in: bool


class Health(BaseModel):
    status: str
    pid: int
    loaded_at: str
    reloads: int
    failed_reloads: int
    last_reload_error: str | None
    models: list[ServedFile]
    serving: Serving
