"""`movielens recommend` and `movielens similar`: arguments, and the answers printed as a table or JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from movielens.params import load_params
from movielens.plumbing.errors import PipelineError
from movielens.serve import answers as recommend
from movielens.serve.answers import ServeSettings
from movielens.serve.load import rating_scale
from movielens.serve.text import Neighbour, Recommendation, format_table

EXAMPLES = """examples:
  movielens recommend --user 1 -n 10
  movielens recommend --user 1 -n 10 --json
  movielens recommend --all-users -n 10 --out lists.parquet   (or lists.csv)
  movielens similar 1 -n 10"""


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors become a PipelineError: one `error:` line and exit 1."""

    def error(self, message: str):
        raise PipelineError(f"{message} (see --help)")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def parse_args(
    argv: list[str] | None = None, prog: str = "movielens recommend"
) -> argparse.Namespace:
    parser = _Parser(
        prog=prog,
        description="A user's top-N movies not yet rated, every user's lists, or the movies most like one.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--user", type=int, help="recommend for this userId (as in the ratings)")
    target.add_argument("--all-users", action="store_true", help="every user's list, into --out")
    target.add_argument(
        "--similar-to", type=int, metavar="MOVIE_ID", help="list the movies most like this movieId"
    )
    parser.add_argument("-n", type=positive_int, default=10, help="how many movies (default 10)")
    parser.add_argument("--out", type=Path, help="with --all-users: a .csv or .parquet file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.all_users != (args.out is not None):
        parser.error("--all-users and --out go together")
    return args


def serve_settings() -> ServeSettings:
    """The params.yaml keys the answers read, read here once: the CLI is the door to params."""
    params = load_params()
    return ServeSettings(
        like_weight=params["ranking"]["like_weight"],
        block_size=params["evaluate"]["block_size"],
        batch_size=params["evaluate"]["batch_size"],
        dataset=params["data"]["dataset"],
    )


def user_header(answer: dict, n_rows: int) -> str:
    """The table's first line: whose list it is, what it leaves out, how it is ranked."""
    who = f"Top {n_rows} movies for user {answer['userId']} among those it has not rated"
    if answer["personalised"]:
        lo, hi = rating_scale()
        return (
            f"{who} ({answer['rated']} rated), ranked by {answer['ranked_by']}; predicted "
            f"rating on the {lo:g}-{hi:g} scale"
        )
    return (
        f"{who} ({answer['rated']} rated). NOT PERSONALISED: the models do not know this user "
        f"({answer['reason']}); ranked by {answer['ranked_by']}"
    )


def main(argv: list[str] | None = None, prog: str = "movielens recommend") -> None:
    args = parse_args(argv, prog)
    if args.all_users:
        recommend.check_list_path(args.out)
        frame, how = recommend.all_user_lists(args.n, serve_settings())
        recommend.write_lists(frame, args.out)
        summary = {
            "out": str(args.out),
            "users": int(frame["userId"].nunique()),
            "rows": len(frame),
        }
        summary["ranked_by"] = how
        print(json.dumps(summary) if args.json else f"wrote {summary['rows']} rows "
              f"({summary['users']} users) to {args.out}, ranked by {how}")  # fmt: skip
        return
    if args.user is not None:
        answer = recommend.user_list(args.user, args.n, serve_settings())
        rows = [Recommendation(**r) for r in answer["recommendations"]]
        header, values = user_header(answer, len(rows)), {"score": 4, "predicted": 2}
    else:
        answer = recommend.similar_list(args.similar_to, args.n, serve_settings())
        rows = [Neighbour(**r) for r in answer["similar"]]
        values = {"similarity": 3}
        header = (
            f"{len(rows)} movies most similar to {answer['movieId']} {answer['title']} "
            f"({answer['genres']}), by {answer['similar_by']}"
        )
    if args.json:
        print(json.dumps(answer, indent=2, ensure_ascii=False))
        return
    print(f"{header}\n")
    print(format_table(rows, values))
