"""dvc.yaml agrees with the code: each stage lists the files it imports, the params it reads,
and the paths that movielens/plumbing/paths.py names."""

import ast
from pathlib import Path

import pytest
import yaml

from movielens.params import params_schema
from movielens.plumbing import paths

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
STAGES = list(DVC["stages"])


def render(path: str) -> str:
    """dvc.yaml's ${data.dataset} templating, resolved from params.yaml."""
    return path.replace("${data.dataset}", PARAMS["data"]["dataset"])


PACKAGES = ("stages", "movielens")


def module_file(name: str) -> Path | None:
    """The project file of a dotted module name (a module or a package), else None."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_files(path: Path, seen: set[str] | None = None) -> set[str]:
    """The project files that running `path` imports: its modules, theirs, and their packages'
    __init__.py files, found by following the import statements (relative paths)."""
    seen = set() if seen is None else seen
    seen.add(str(path.relative_to(ROOT)))
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] in PACKAGES
        ):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] in PACKAGES]
        for name in names:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # the packages on the way are imported too
                found = module_file(".".join(parts[:i]))
                if found is not None and str(found.relative_to(ROOT)) not in seen:
                    imported_files(found, seen)
    return seen


def imported_stage_modules(stage: str) -> set[str]:
    """Every project file `python -m stages.<stage>` imports, the script itself included."""
    return imported_files(ROOT / "stages" / f"{stage}.py") | {"stages/__init__.py"}


def as_paths(entries) -> set[str]:
    out = set()
    for entry in entries or []:
        out |= {render(k) for k in entry} if isinstance(entry, dict) else {render(entry)}
    return out


def test_stages_are_the_six_in_order():
    assert STAGES == ["download", "preprocess", "train", "train_watch", "evaluate", "crossvalidate"]


# The params section each stage reads, where it is not named after the stage.
SECTION = {"train_watch": "watch"}
# What a stage reads beyond its own section: download and preprocess the dataset's name, and
# preprocess a custom table's mapping (data.custom; its rating scale reaches train and
# crossvalidate through train.parquet and ratings.parquet, not params); preprocess, train_watch
# and evaluate where they run (compute.engine: pandas or Spark, Spark's master and memory);
# evaluate scores the served lists (every ranking.* key), which train_watch does not read (so
# changing ranking.like_weight reruns evaluate only), and folds held-out users into the bias
# baseline with its L2 (the rating model's L2s it reads from the saved model); crossvalidate fits
# the train stage's models (every train.* key) under the split rule, heldout_users' with its
# history_size.
OTHER_SECTIONS = {"evaluate": ("ranking",), "crossvalidate": ("train",), "preprocess": ("compute",)}
SPARK_KEYS = {"compute.engine", "compute.spark_master", "compute.spark_memory"}
OTHER_KEYS = {
    "download": {"data.dataset"},
    "preprocess": {"data.dataset", "data.custom"},
    "train_watch": SPARK_KEYS,
    "evaluate": {"train.baseline_reg_users"} | SPARK_KEYS,
    "crossvalidate": {"preprocess.split", "preprocess.history_size"},
}
# What a stage does not read of those sections: crossvalidate fits its folds in one process.
NOT_READ = {"crossvalidate": {"train.processes"}}


@pytest.mark.parametrize("stage", STAGES)
def test_deps_list_every_module_the_stage_imports(stage):
    code_deps = {d for d in as_paths(DVC["stages"][stage]["deps"]) if d.endswith(".py")}
    assert code_deps == imported_stage_modules(stage)


@pytest.mark.parametrize("stage", STAGES)
def test_params_are_exactly_the_stage_section_of_the_schema(stage):
    schema = params_schema()
    listed = set(DVC["stages"][stage].get("params", []))
    reads = OTHER_KEYS.get(stage, set()) | {
        f"{section}.{key}"
        for section in (SECTION.get(stage, stage), *OTHER_SECTIONS.get(stage, ()))
        for key in schema.get(section, {})
    }
    reads -= NOT_READ.get(stage, set())
    assert listed == reads


def test_only_evaluate_reads_the_served_formulas_weight():
    """The watch fit does not read it: changing ranking.like_weight reruns evaluate alone."""
    readers = [name for name in STAGES if "ranking.like_weight" in DVC["stages"][name]["params"]]
    assert readers == ["evaluate"]


def test_crossvalidate_reads_no_evaluate_param_and_not_the_test_split():
    """So that an evaluate.* change, or another test split, never reruns the K fits."""
    stage = DVC["stages"]["crossvalidate"]
    preprocess_keys = {key for key in stage["params"] if key.startswith("preprocess.")}
    assert preprocess_keys == {"preprocess.split", "preprocess.history_size"}
    assert not any(key.startswith("evaluate.") for key in stage["params"])
    data = {d for d in as_paths(stage["deps"]) if not d.endswith(".py")}
    assert data == {str(paths.RATINGS)}


def test_outputs_match_the_paths_module():
    declared = set()
    for stage in DVC["stages"].values():
        for kind in ("outs", "metrics", "plots"):
            declared |= as_paths(stage.get(kind))
    named = {
        str(v) for k, v in vars(paths).items() if k.isupper() and isinstance(v, Path) and v.suffix
    } - {str(paths.PARAMS)}
    named.add(str(paths.raw_dir(PARAMS["data"]["dataset"])))
    named |= {str(paths.LIVE_TRAIN_PLOTS), str(paths.LIVE_CV_PLOTS)}  # dvclive's plot folders
    assert declared == named


def test_every_consumed_file_is_produced_upstream():
    """Every data dependency is an earlier stage's output, or the custom table's folder, which
    the user fills (docs/custom-data.md) and git keeps (its .gitignore)."""
    produced: set[str] = {str(paths.CUSTOM_DIR)}
    assert (ROOT / paths.CUSTOM_DIR / ".gitignore").is_file()
    for name in STAGES:
        stage = DVC["stages"][name]
        data_deps = {d for d in as_paths(stage["deps"]) if not d.endswith(".py")}
        assert data_deps <= produced, (
            f"{name} reads {data_deps - produced} that no earlier stage writes"
        )
        for kind in ("outs", "metrics", "plots"):
            produced |= as_paths(stage.get(kind))


def test_metrics_and_plots_live_in_git():
    for stage in DVC["stages"].values():
        for kind in ("metrics", "plots"):
            for entry in stage.get(kind, []):
                for options in entry.values():
                    assert options["cache"] is False
