"""The `movielens` command: what users run by hand, beside the pipeline's stages.

movielens recommend --user 1 [-n 10] [--json]    top-n movies for a user: will watch x will like
movielens recommend --all-users -n 10 --out F    every user's list into F (.csv or .parquet)
movielens recommend --ratings FILE [--user ID]   a list for anyone: ratings given now, folded in
movielens similar 1 [-n 10] [--json]             the movies most like a movieId
movielens serve [--host H] [--port P] [--workers N]  the models over HTTP, and a page to try them
movielens synth --dataset ml-25m --out DIR ...   MovieLens-shaped generated data, with its floor
"""

from __future__ import annotations

import sys

from movielens.plumbing.runtime import set_up

USAGE = __doc__.split("\n\n", 1)[1].rstrip()


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; exit status 1 with one `error:` line on bad input, as the stages do."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage:\n{USAGE}")
        return 0 if argv else 1
    command, rest = argv[0], argv[1:]
    set_up()
    if command == "synth":
        from movielens import synth

        return synth.main(rest)
    if command in ("recommend", "similar"):
        from movielens.plumbing.errors import run_stage
        from movielens.serve import command as serve

        if command == "similar" and rest and not rest[0].startswith("-"):
            rest = ["--similar-to", rest[0], *rest[1:]]
        run_stage(lambda: serve.main(rest, prog=f"movielens {command}"))
        return 0
    if command == "serve":
        from movielens.plumbing.errors import run_stage
        from movielens.serve.http import server

        run_stage(lambda: server.main(rest))
        return 0
    print(f"error: unknown command {command!r}; run `movielens --help`", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
