"""The names params.yaml's choice keys take, in one leaf module: params.py's schema offers them and
the library modules that act on them dispatch on them, so neither imports the other (and a stage
script's dependencies stay its own). tests/test_params.py checks that each module implements
exactly these names."""

# data.dataset: the MovieLens releases movielens.data.releases reads, or a table of your own
# (data.custom, movielens.data.custom).
RELEASES = (
    "ml-latest-small",
    "ml-latest",
    "ml-100k",
    "ml-1m",
    "ml-10m",
    "ml-20m",
    "ml-25m",
    "ml-32m",
)
CUSTOM = "custom"
DATASETS = (*RELEASES, CUSTOM)
# preprocess.split: the split rules of movielens.data.splits.
SPLITS = ("random", "user", "time", "heldout_users")
# watch.model: the will-watch models movielens.model.watch fits.
WATCH_MODELS = ("ease", "als")
# compute.engine: where the stages that read and write rating tables run (movielens.spark).
COMPUTE_ENGINES = ("pandas", "spark")
