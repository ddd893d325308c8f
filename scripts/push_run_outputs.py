"""Push every file DVC's run-cache records name to a DVC remote, `cache: false` files included.

Run it after `dvc push --run-cache`, in the checkout where the runs were made:

    python scripts/push_run_outputs.py              # the default remote
    python scripts/push_run_outputs.py -r storage   # another one

Why: in DVC 3.67, `dvc push --run-cache` uploads the run records only (dvc/repo/push.py:
`used_run_cache = self.stage_cache.push(remote)`, and the objects pushed after it are the
workspace's), and `dvc push` never uploads a `cache: false` file (dvc/output.py,
Output.get_used_objs: `if not self.use_cache: return {}`). But a record restores a stage only
when every file it names is in the cache, `cache: false` ones too: StageCache._create_stage
(dvc/stage/cache.py) rebuilds the stage's outputs from the record without their `cache: false`,
and restore() then asks `outs_cached()`. So in a fresh clone, `dvc repro --pull` restored nothing
of train, evaluate and crossvalidate (their metrics and plots are `cache: false`, in git) and ran
them again. This uploads what the records name, the objects DVC 2's `push --run-cache` uploaded
(StageCache.get_used_objs, still in DVC); a teammate's `dvc pull --run-cache` and
`dvc repro --pull` then restore any param set run here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def run_records(runs_dir: Path) -> list[tuple[str, str]]:
    """The (key, value) of every record under .dvc/cache/runs (runs/<key[:2]>/<key>/<value>)."""
    return sorted(
        (entry.parent.name, entry.name) for entry in runs_dir.glob("*/*/*") if entry.is_file()
    )


def push_run_outputs(remote: str | None = None, root: str = ".") -> int:
    """Upload the objects of every local run record to `remote`; return how many were sent."""
    from dvc.repo import Repo

    with Repo(root) as repo:
        records = run_records(Path(repo.stage_cache.cache_dir))
        objects = set()
        for used in repo.stage_cache.get_used_objs(records).values():
            objects |= used
        result = repo.cloud.push(objects, remote=remote)
    if result.failed:
        raise RuntimeError(f"{len(result.failed)} of {len(objects)} objects could not be pushed")
    return len(result.transferred)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-r", "--remote", help="a DVC remote's name (default: the default remote)")
    args = parser.parse_args(argv)
    from dvc.exceptions import DvcException

    try:
        sent = push_run_outputs(args.remote)
    except (DvcException, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{sent} files pushed for the run-cache's records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
