"""`python -m stages.recommend`: the old spelling of `movielens recommend`, kept for one release."""

from movielens.plumbing.errors import run_stage
from movielens.recommend import main

if __name__ == "__main__":
    run_stage(lambda: main(prog="python -m stages.recommend"))
