"""The download stage: fetch the release that data.dataset names (or MOVIELENS_MIRROR's copy), check it, extract it;
for a custom table, nothing (preprocess reads data/custom in place)."""

from __future__ import annotations

import logging
import os

from movielens.data.download import download_dataset
from movielens.data.fetch import MIRROR_ENV, TRUST_MD5_ENV, resolve_base, trusts_mirror_md5
from movielens.data.releases import get_dataset
from movielens.params import load_params
from movielens.plumbing import paths
from movielens.plumbing.choices import CUSTOM
from movielens.plumbing.errors import run_stage

log = logging.getLogger(__name__)


def main() -> None:
    params = load_params()
    if params["data"]["dataset"] == CUSTOM:  # dvc.yaml's out data/raw/custom: an empty folder
        paths.raw_dir(CUSTOM).mkdir(parents=True, exist_ok=True)
        log.info(
            "custom: nothing to download; preprocess reads data.custom in %s", paths.CUSTOM_DIR
        )
        return
    dataset = get_dataset(params["data"]["dataset"])
    mirror = os.environ.get(MIRROR_ENV)
    trust = trusts_mirror_md5(os.environ.get(TRUST_MD5_ENV), mirror)
    base = resolve_base(mirror)
    files = download_dataset(dataset, base, paths.raw_dir(dataset.name), trust_mirror_md5=trust)
    sizes = ", ".join(f"{file.name} ({file.stat().st_size} bytes)" for file in files)
    log.info("%s ready in %s: %s", dataset.name, paths.raw_dir(dataset.name), sizes)


if __name__ == "__main__":
    run_stage(main)
