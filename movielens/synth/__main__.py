"""`python -m movielens.synth`: the generator's command line, as an entry point of its own."""

import sys

from movielens.plumbing.runtime import set_up
from movielens.synth.cli import main

if __name__ == "__main__":
    set_up()
    sys.exit(main())
