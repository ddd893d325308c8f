"""What the training benchmark prints: the results table, the targets, the seed study and the
cross-validation, each as lines of text."""

from __future__ import annotations

from benchmarks.names import COMPILED, KERAS, OURS

RMSE_TARGET = 0.845  # issue #10: both engines' test RMSE at most this
ENGINE_RMSE_GAP = 0.003  # and within this of each other
KERAS_FIT_RATIO_TARGET = (
    8.0  # the Keras engine's fit time at most this many times the compiled one's
)
TRAIN_STAGE_TARGET_S = 15.0  # issue #3: `python -m stages.train`, process start to exit


def format_table(rows: list[dict]) -> str:
    """The rows as an aligned text table, one line per model."""
    header = (
        f"{'model':<24} {'test RMSE':>9} {'MAE':>7} {'fit s':>7} {'epochs':>6} {'ratings/s':>11}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['model']:<24} {r['rmse']:>9.4f} {r['mae']:>7.4f} {r['fit_seconds']:>7.2f} "
            f"{r['epochs']:>6d} {r['ratings_per_second']:>11,.0f}"
        )
    return "\n".join(lines)


def verdict(value: float, target: float) -> str:
    """ "within" when `value` is at most `target`, else "over"."""
    return "within" if value <= target else "over"


def summary_lines(rows: list[dict]) -> list[str]:
    """The train stage's time against its target and our fit time against Surprise SVD's."""
    by_model = {r["model"]: r for r in rows}
    lines = []
    stage = by_model.get(COMPILED, {}).get("train_stage_seconds")
    if stage is not None:
        lines.append(
            f"train stage (python -m stages.train, process start to exit): {stage:.1f} s, "
            f"{verdict(stage, TRAIN_STAGE_TARGET_S)} the {TRAIN_STAGE_TARGET_S:g} s target"
        )
    compiled, keras = by_model.get(COMPILED), by_model.get(KERAS)
    if compiled and "SVD" in by_model:
        ratio = compiled["fit_seconds"] / by_model["SVD"]["fit_seconds"]
        lines.append(f"{COMPILED} fit time / Surprise SVD fit time (this run): {ratio:.2f}x")
    if compiled and keras:
        ratio = keras["fit_seconds"] / compiled["fit_seconds"]
        lines.append(
            f"{KERAS} fit time / {COMPILED} fit time (this run): {ratio:.2f}x, "
            f"{verdict(ratio, KERAS_FIT_RATIO_TARGET)} the {KERAS_FIT_RATIO_TARGET:g}x target"
        )
        gap = abs(keras["rmse"] - compiled["rmse"])
        lines.append(
            f"test RMSE: keras {keras['rmse']:.4f}, compiled {compiled['rmse']:.4f} (target "
            f"<= {RMSE_TARGET}); gap {gap:.4f}, {verdict(gap, ENGINE_RMSE_GAP)} {ENGINE_RMSE_GAP}"
        )
    return lines


def seed_lines(check: dict) -> list[str]:
    """The seed study: each other split's RMSE beside the pipeline's, then the spread."""
    lines = [
        f"seed check: test RMSE of {check['model']} per preprocess seed, tolerance "
        f"{check['tolerance']:g} of seed {check['reference_seed']}'s {check['reference_rmse']:.4f} "
        f"(its test ratings' std {check['reference_test_rating_std']:.4f})"
    ]
    for run in check["runs"]:
        ok = "ok" if run["within_tolerance"] else "OUTSIDE tolerance"
        lines.append(
            f"  seed {run['seed']:>3}: {run['rmse']:.4f} ({run['delta']:+.4f}) {ok}; "
            f"BaselineOnly on the same split {run['baseline_only_rmse']:.4f} "
            f"({run['baseline_only_delta']:+.4f}); test ratings' std {run['test_rating_std']:.4f}"
        )
    if "spread" in check:
        lines.extend(spread_lines(check["spread"], check["reference_seed"], check["tolerance"]))
    return lines


def spread_lines(spread: dict, reference_seed: int, tolerance: float) -> list[str]:
    """How the test RMSE varies over the random splits, and where the pipeline's ranks."""
    n = len(spread["seeds"])
    correlation = spread["correlation_with_baseline_only"]
    return [
        f"split spread over {n} random splits (preprocess seeds {spread['seeds'][1]}.."
        f"{spread['seeds'][-1]} and {reference_seed}): test RMSE mean {spread['rmse_mean']:.4f}, "
        f"std {spread['rmse_std']:.4f}, from {spread['rmse_min']:.4f} to {spread['rmse_max']:.4f}",
        f"  seed {reference_seed}'s split ranks {spread['reference_rank']} of {n} by test RMSE "
        f"(1 = hardest); {spread['within_tolerance']} of the {n - 1} others are within "
        f"{tolerance:g} of it",
        f"  BaselineOnly on the same splits: mean {spread['baseline_only_rmse_mean']:.4f}, std "
        f"{spread['baseline_only_rmse_std']:.4f}; correlation with ours "
        f"{'n/a' if correlation is None else format(correlation, '.2f')}",
    ]


def cv_lines(result: dict, spread: dict | None) -> list[str]:
    """The cross-validation table, the paired differences and ours' fold std beside the split spread."""
    p = result["protocol"]
    lines = [
        f"{p['folds']}-fold cross-validation (split={p['split']}, seed {p['seed']}) of "
        f"{p['ratings']:,} ratings; every model on the same folds",
        f"{'model':<14} {'RMSE mean':>9} {'std':>7} {'MAE mean':>9} {'fit s':>7}  RMSE per fold",
    ]
    for name, row in result["models"].items():
        folds = " ".join(f"{r['rmse']:.4f}" for r in row["per_fold"])
        lines.append(
            f"{name:<14} {row['rmse_mean']:>9.4f} {row['rmse_std']:>7.4f} {row['mae_mean']:>9.4f} "
            f"{row['fit_seconds_mean']:>7.2f}  {folds}"
        )
    for name, diff in result.get("ours_minus_peer", {}).items():
        lines.append(
            f"  {OURS} - {name}: {diff['rmse_mean']:+.4f} (std {diff['rmse_std']:.4f}), lower on "
            f"{diff['folds_lower']} of {p['folds']} folds"
        )
    if OURS in result["models"] and spread is not None:
        lines.append(
            f"{OURS}: std of the test RMSE over the {p['folds']} folds "
            f"{result['models'][OURS]['rmse_std']:.4f}, over {len(spread['seeds'])} random "
            f"90/10 splits {spread['rmse_std']:.4f}"
        )
    return lines
