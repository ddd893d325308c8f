"""Every file the pipeline reads or writes, relative to the project root; dvc.yaml declares the same."""

from pathlib import Path

PARAMS = Path("params.yaml")

RAW_DIR = Path("data/raw")
PROCESSED_DIR = Path("data/processed")
TRAIN = PROCESSED_DIR / "train.parquet"
TEST = PROCESSED_DIR / "test.parquet"
# heldout_users: the held-out users' given ratings (columns as TEST); no rows under other splits
HISTORY = PROCESSED_DIR / "history.parquet"
USER_IDS = PROCESSED_DIR / "user_ids.parquet"
MOVIE_IDS = PROCESSED_DIR / "movie_ids.parquet"
MOVIES = PROCESSED_DIR / "movies.parquet"
RATINGS = PROCESSED_DIR / "ratings.parquet"  # every kept rating, before the split: crossvalidate's
PREPROCESS_SUMMARY = PROCESSED_DIR / "summary.json"
# A custom table's rating scale (data.custom.rating_scale), which the rating model's output spans:
# preprocess writes it in TRAIN's and RATINGS' pandas attrs (Parquet metadata) under this key,
# where train and crossvalidate read it; a release's files carry none (the training ratings' range).
RATING_SCALE_ATTR = "rating_scale"
# Where a custom table lives (data.custom.ratings and items): preprocess depends on the folder.
CUSTOM_DIR = Path("data/custom")

MODELS_DIR = Path("models")
MODEL = MODELS_DIR / "model.keras"
MODEL_PLOT = MODELS_DIR / "model.png"
MODEL_DOT = MODELS_DIR / "model.dot"
BASELINE = MODELS_DIR / "baseline.npz"  # the user+movie bias model (movielens.model.baseline)
WATCH_MODEL = MODELS_DIR / "watch.npz"  # the will-watch model (movielens.model.watch)

METRICS_DIR = Path("metrics")
TRAIN_METRICS = METRICS_DIR / "train.json"
CV_METRICS = METRICS_DIR / "cv.json"
SCORES = METRICS_DIR / "scores.json"
WATCH_METRICS = METRICS_DIR / "watch.json"
# dvclive's folders (movielens.training.live): its summary metrics.json and its step plots' folder
LIVE_TRAIN = METRICS_DIR / "live" / "train"  # every epoch of the train stage's fits
LIVE_TRAIN_METRICS = LIVE_TRAIN / "metrics.json"
LIVE_TRAIN_PLOTS = LIVE_TRAIN / "plots" / "metrics"
LIVE_CV = METRICS_DIR / "live" / "crossvalidate"  # every fold of crossvalidate
LIVE_CV_METRICS = LIVE_CV / "metrics.json"
LIVE_CV_PLOTS = LIVE_CV / "plots" / "metrics"
PLOTS_DIR = METRICS_DIR / "plots"
PREDICTIONS = PLOTS_DIR / "predictions.csv"
RMSE_BY_ACTIVITY = PLOTS_DIR / "rmse_by_activity.csv"

EVALUATION_DIR = Path("data/evaluation")
TOPN = EVALUATION_DIR / "topn.parquet"  # the top-k lists the evaluate stage scored
PER_USER = EVALUATION_DIR / "per_user.parquet"  # each ranked user's metrics, for paired comparisons


def raw_dir(dataset: str) -> Path:
    """The folder the download stage writes for one MovieLens release."""
    return RAW_DIR / dataset
