"""Shared fixtures: small MovieLens-shaped data made on the spot, never downloaded."""

from pathlib import Path

import pytest

from movielens.synth import generate_release


@pytest.fixture(scope="session")
def small_mirror(tmp_path_factory) -> Path:
    """A directory laid out like the GroupLens server: ml-latest-small.zip and its .md5, synthetic."""
    mirror = tmp_path_factory.mktemp("mirror")
    generate_release("ml-latest-small", 6000, 80, 160, seed=0, out_dir=mirror)
    return mirror
