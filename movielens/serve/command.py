"""`movielens recommend` and `movielens similar`: arguments, and the answers printed as a table or JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from movielens.data.custom import source_of
from movielens.params import load_params
from movielens.plumbing.errors import PipelineError
from movielens.serve import answers as recommend
from movielens.serve.answers import ServeSettings
from movielens.serve.folded import ratings_list
from movielens.serve.http.state import ServiceSettings
from movielens.serve.load import rating_scale
from movielens.serve.text import Neighbour, Recommendation, format_table

EXAMPLES = """examples:
  movielens recommend --user 1 -n 10
  movielens recommend --user 1 -n 10 --json
  movielens recommend --ratings my_ratings.csv -n 10   (movieId,rating rows under a header, or JSON)
  cat my_ratings.json | movielens recommend --ratings - --json
  movielens recommend --user 1 --ratings newest.csv   (user 1's training ratings and these, folded in)
  movielens recommend --all-users -n 10 --out lists.parquet   (or lists.csv)
  movielens similar 1 -n 10"""
TARGETS = "--user --all-users --similar-to --ratings"
MAX_NAMED = 10  # ids a note line names; the JSON answer lists them all


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
        description=(
            "A user's top-N movies not yet rated, the same for ratings given now (folded into "
            "the models, no retraining), every user's lists, or the movies most like one."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--user", type=int, help="recommend for this userId (as in the ratings)")
    target.add_argument("--all-users", action="store_true", help="every user's list, into --out")
    target.add_argument(
        "--similar-to", type=int, metavar="MOVIE_ID", help="list the movies most like this movieId"
    )
    parser.add_argument(
        "--ratings",
        metavar="FILE",
        help="recommend for these ratings (CSV movieId,rating with a header, or JSON; - reads "
        "stdin), folded in; with --user, added to that user's training ratings",
    )
    parser.add_argument("-n", type=positive_int, default=10, help="how many movies (default 10)")
    parser.add_argument("--out", type=Path, help="with --all-users: a .csv or .parquet file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.all_users != (args.out is not None):
        parser.error("--all-users and --out go together")
    if args.ratings is not None and (args.all_users or args.similar_to is not None):
        other = "--all-users" if args.all_users else "--similar-to"
        parser.error(f"argument --ratings: not allowed with argument {other}")
    if not args.all_users and all(v is None for v in (args.user, args.similar_to, args.ratings)):
        parser.error(f"one of the arguments {TARGETS} is required")
    return args


def serve_settings() -> ServeSettings:
    """The params.yaml keys the answers read, read here once: the CLI is the door to params."""
    params = load_params()
    return ServeSettings(
        like_weight=params["ranking"]["like_weight"],
        block_size=params["evaluate"]["block_size"],
        batch_size=params["evaluate"]["batch_size"],
        dataset=source_of(params["data"]),
        refit=params["train"]["refit"],
        validation_size=params["train"]["validation_size"],
    )


def service_settings() -> ServiceSettings:
    """params.yaml's `serve` section: the HTTP service's limits and reload timing."""
    return ServiceSettings(**load_params()["serve"])


def whose(answer: dict, n_rows: int) -> str:
    """Whose list it is and what it leaves out: a trained user's, or ratings folded in."""
    folded = answer.get("folded_in")
    if folded is None:
        return (
            f"Top {n_rows} movies for user {answer['userId']} among those it has not rated "
            f"({answer['rated']} rated)"
        )
    if answer["userId"] is None:
        return (
            f"Top {n_rows} movies for the {folded['movies_given']} ratings given, none of their "
            f"movies listed ({folded['ratings_folded_in']} folded into the models, no retraining)"
        )
    given = folded["ratings_folded_in"] - folded["training_ratings"]
    return (
        f"Top {n_rows} movies for user {answer['userId']} among those it has not rated "
        f"({answer['rated']} rated; {folded['training_ratings']} training ratings and {given} "
        "given, folded into the models, no retraining)"
    )


def user_header(answer: dict, n_rows: int) -> str:
    """The table's first line: whose list it is, what it leaves out, how it is ranked."""
    who = whose(answer, n_rows)
    if answer["personalised"]:
        lo, hi = rating_scale()
        return (
            f"{who}, ranked by {answer['ranked_by']}; predicted rating on the {lo:g}-{hi:g} scale"
        )
    why = answer["reason"]
    if "folded_in" not in answer:
        why = f"the models do not know this user ({why})"
    return f"{who}. NOT PERSONALISED: {why}; ranked by {answer['ranked_by']}"


def some(ids: list[int]) -> str:
    """The first MAX_NAMED ids, and how many more."""
    named = ", ".join(str(i) for i in ids[:MAX_NAMED])
    return named if len(ids) <= MAX_NAMED else f"{named} and {len(ids) - MAX_NAMED} more"


def notes(answer: dict) -> list[str]:
    """What was done with the given ratings that the list alone does not show, one line each."""
    folded = answer.get("folded_in") or {}
    unknown, repeated = folded.get("unknown_movies"), folded.get("repeated_movies")
    replaced = folded.get("replaced_training_ratings")
    lines = []
    if unknown:
        lines.append(
            f"note: {len(unknown)} movie(s) the models do not know, skipped: {some(unknown)}"
        )
    if repeated:
        lines.append(
            f"note: {len(repeated)} movie(s) given more than once, the last rating kept: "
            f"{some(repeated)}"
        )
    if replaced:
        lines.append(
            f"note: the given rating replaces user {answer['userId']}'s training rating of "
            f"{len(replaced)} movie(s): {some(replaced)}"
        )
    return lines


def write_out(text: str) -> None:
    """Print the answer; a reader that stops early (`| head`) ends the command quietly.

    Python's own recipe for SIGPIPE: stdout goes to devnull so that the interpreter's final
    flush does not fail a second time, and the exit status is 1, as for any output not delivered.
    """
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


def write_all_users(args: argparse.Namespace) -> None:
    recommend.check_list_path(args.out)
    frame, how = recommend.all_user_lists(args.n, serve_settings())
    recommend.write_lists(frame, args.out)
    summary = {"out": str(args.out), "users": int(frame["userId"].nunique()), "rows": len(frame)}
    summary["ranked_by"] = how
    print(json.dumps(summary) if args.json else f"wrote {summary['rows']} rows "
          f"({summary['users']} users) to {args.out}, ranked by {how}")  # fmt: skip


def main(argv: list[str] | None = None, prog: str = "movielens recommend") -> None:
    args = parse_args(argv, prog)
    if args.all_users:
        write_all_users(args)
        return
    if args.ratings is not None or args.user is not None:
        if args.ratings is not None:
            answer = ratings_list(args.ratings, args.user, args.n, serve_settings())
        else:
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
        write_out(json.dumps(answer, indent=2, ensure_ascii=False))
    else:
        write_out(f"{header}\n\n{format_table(rows, values)}")
    for line in notes(answer):
        print(line, file=sys.stderr)
