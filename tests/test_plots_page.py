"""scripts/plots_page.py: the offline template, the dvc command, the DOM check, and real pages.

The end-to-end tests render dvc.yaml's own `plots:` section from small CSVs in a temporary git+DVC
repository with the real dvc and check the page in the real headless chromium. They need the
pinned vega builds in .cache/vega (fetched once from the npm registry) and skip, saying why, only
when chromium is absent or that fetch fails.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc_render.html import HTML
from dvc_render.vega import VegaRenderer
from dvc_render.vega_templates import TEMPLATES

from scripts import plots_page

ROOT = Path(__file__).resolve().parents[1]
PLOTS = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
BUILTIN_TEMPLATES = {template.DEFAULT_NAME for template in TEMPLATES}


def plot_div(element_id: str) -> str:
    """One plot as DVC writes it into the page."""
    return VegaRenderer.DIV.format(id=element_id, partial="{}")


def dvc_id(title: str) -> str:
    """The element id DVC gives a plot: its title with every non-word character as `_`."""
    return re.sub(r"\W", "_", title)


# The template ---------------------------------------------------------------------------------


def test_template_loads_the_local_builds_in_dependency_order():
    template = plots_page.make_template("dvc plots show")
    sources = re.findall(r'<script src="([^"]+)"', template)
    assert sources == ["vega/vega.min.js", "vega/vega-lite.min.js", "vega/vega-embed.min.js"]
    assert "http" not in template
    assert "{scripts}" not in template  # DVC would put its CDN script tags there


def test_template_is_filled_by_dvc_render_and_reports_errors_on_the_page():
    page = HTML(plots_page.make_template("dvc plots diff HEAD")).with_element(plot_div("a")).embed()
    assert "{plot_divs}" not in page
    assert "vegaEmbed('#a', spec)" in page
    assert "<h1>dvc plots diff HEAD</h1>" in page
    assert f'line.className = "{plots_page.ERROR_CLASS}"' in page
    assert page.index("window.vegaEmbed = function") < page.index("vegaEmbed('#a', spec)")


# The dvc command --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("diff", "action"),
    [
        (None, ["show"]),
        ([], ["diff"]),
        (["HEAD"], ["diff", "HEAD"]),
        (["v1", "v2"], ["diff", "v1", "v2"]),
    ],
)
def test_dvc_plots_command(diff, action):
    command = plots_page.dvc_plots_command(Path("out"), Path("t.html"), diff)
    assert command == [
        sys.executable,
        *["-m", "dvc", "plots", *action],
        *["--html-template", "t.html", "-o", "out"],
    ]


def test_main_reports_a_missing_npm_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plots_page.shutil, "which", lambda name: None)
    assert plots_page.main(["--no-check", "--cache", str(tmp_path / "vega")]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_find_chromium_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(plots_page.shutil, "which", lambda name: None)
    with pytest.raises(plots_page.PlotsPageError, match="make deps"):
        plots_page.find_chromium()


@pytest.mark.parametrize(("vega_version", "expected"), [("5.33.1", True), ("5.20.2", False)])
def test_installed_wants_the_pinned_versions(tmp_path, vega_version, expected):
    for package, version in plots_page.VEGA_PACKAGES.items():
        folder = tmp_path / "node_modules" / package
        (folder / "build").mkdir(parents=True)
        (folder / plots_page.BUILD_FILES[package]).write_text("")
        pinned = vega_version if package == "vega" else version
        (folder / "package.json").write_text(f'{{"version": "{pinned}"}}')
    assert plots_page.installed(tmp_path) is expected


# The DOM check --------------------------------------------------------------------------------

DRAWN = '<div id="{}" class="vega-embed has-actions"><div><{} class="marks"></{}></div></div>'


def test_plot_ids_are_read_from_the_page_dvc_writes():
    page = HTML("{plot_divs}").with_element(plot_div("a_1")).with_element(plot_div("b")).embed()
    assert plots_page.plot_ids(page) == ["a_1", "b"]


def test_check_dom_passes_when_every_plot_is_drawn():
    dom = (
        DRAWN.format("a", "canvas", "canvas")
        + '<input type="range">'
        + DRAWN.format("b", "svg", "svg")
    )
    plots_page.check_dom(f"<html><body>{dom}</body></html>", ["a", "b"])


@pytest.mark.parametrize(
    ("dom", "message"),
    [
        (DRAWN.format("a", "canvas", "canvas"), "1 of 2 plots were not drawn by vega-embed: b"),
        (
            DRAWN.format("a", "canvas", "canvas") + '<div id="b" class="vega-embed"></div>',
            "1 of 2 plots were not drawn by vega-embed: b",
        ),
        (  # drawn, but not by vega-embed
            DRAWN.format("a", "canvas", "canvas").replace("vega-embed ", "")
            + DRAWN.format("b", "svg", "svg"),
            "not drawn by vega-embed: a$",
        ),
        (
            DRAWN.format("a", "canvas", "canvas")
            + DRAWN.format("b", "svg", "svg")
            + f'<pre class="{plots_page.ERROR_CLASS}">error: could not\n load vega.min.js</pre>',
            "1 script error.*first: error: could not load vega.min.js",
        ),
    ],
)
def test_check_dom_names_what_is_wrong(dom, message):
    with pytest.raises(plots_page.PlotsPageError, match=message):
        plots_page.check_dom(f"<html><body>{dom}</body></html>", ["a", "b"])


def test_check_dom_wants_at_least_one_plot():
    with pytest.raises(plots_page.PlotsPageError, match="no vega plots"):
        plots_page.check_dom("<html></html>", [])


# dvc.yaml's plots -----------------------------------------------------------------------------


@pytest.mark.parametrize("plot", PLOTS, ids=lambda plot: next(iter(plot)))
def test_each_plot_has_axis_labels_and_a_template_dvc_can_find(plot):
    (props,) = plot.values()
    assert {"x_label", "y_label"} <= set(props)
    template = props["template"]
    assert template in BUILTIN_TEMPLATES or (ROOT / ".dvc" / "plots" / f"{template}.json").is_file()


# Real pages: dvc and chromium ---------------------------------------------------------------

# dvclive's step files (movielens.training.live): the selection fit's steps, then the refit's
LIVE = "metrics/live/train/plots/metrics"
HISTORY_V1 = {
    f"{LIVE}/select/train/rmse.tsv": "step\trmse\n0\t1.25\n1\t1.03\n2\t0.89\n",
    f"{LIVE}/select/eval/rmse.tsv": "step\trmse\n0\t1.21\n1\t0.99\n2\t0.91\n",
    f"{LIVE}/refit/train/rmse.tsv": "step\trmse\n3\t1.22\n4\t1.01\n",
}
HISTORY_V2 = {
    f"{LIVE}/select/train/rmse.tsv": "step\trmse\n0\t1.20\n1\t0.98\n2\t0.85\n",
    f"{LIVE}/select/eval/rmse.tsv": "step\trmse\n0\t1.18\n1\t0.95\n2\t0.88\n",
    f"{LIVE}/refit/train/rmse.tsv": "step\trmse\n3\t1.19\n4\t0.97\n",
}
PREDICTIONS = "actual,predicted\n5,4.6\n3,3.2\n1,2.1\n4.5,3.9\n"
RMSE_BY_ACTIVITY = "user_activity,rmse,test_pairs\n<20,1.15,10\n20-49,0.91,40\n>=50,0.85,90\n"


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def vega_cache() -> Path:
    """.cache/vega with the pinned builds, fetched with npm the first time."""
    try:
        plots_page.find_chromium()
    except plots_page.PlotsPageError as error:
        pytest.skip(str(error))
    try:
        plots_page.fetch_vega(plots_page.DEFAULT_CACHE)
    except plots_page.PlotsPageError as error:
        pytest.skip(f"the vega builds could not be fetched from the npm registry: {error}")
    return plots_page.DEFAULT_CACHE


@pytest.fixture(scope="module")
def plots_repo(tmp_path_factory, vega_cache) -> Path:
    """A git+DVC repository whose dvc.yaml is the project's `plots:` section; tags v1 and v2."""
    repo = tmp_path_factory.mktemp("plots-repo")
    git(repo, "init", "-q")
    dvc = [sys.executable, "-m", "dvc"]
    offline = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run([*dvc, "init", "-q"], cwd=repo, env=offline, check=True)
    subprocess.run([*dvc, "config", "core.analytics", "false"], cwd=repo, env=offline, check=True)
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"plots": PLOTS}, sort_keys=False))
    data = repo / "metrics" / "plots"
    data.mkdir(parents=True)
    (data / "predictions.csv").write_text(PREDICTIONS)
    (data / "rmse_by_activity.csv").write_text(RMSE_BY_ACTIVITY)
    for tag, history in [("v1", HISTORY_V1), ("v2", HISTORY_V2)]:
        for path, text in history.items():
            (repo / path).parent.mkdir(parents=True, exist_ok=True)
            (repo / path).write_text(text)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", tag)
        git(repo, "tag", tag)
    return repo


@pytest.fixture(scope="module")
def shown_page(plots_repo, vega_cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shown")
    return plots_page.render_page(out, vega_cache, repo=plots_repo)


@pytest.mark.slow
def test_show_page_draws_every_plot_offline(shown_page):
    expected = [dvc_id(next(iter(plot))) for plot in PLOTS]
    assert "cdn.jsdelivr.net" not in shown_page.read_text()
    assert plots_page.check_page(shown_page) == expected


@pytest.mark.slow
def test_diff_page_draws_both_revisions(plots_repo, vega_cache, tmp_path):
    page = plots_page.render_page(tmp_path, vega_cache, ["v1", "v2"], plots_repo)
    html = page.read_text()
    assert "<h1>dvc plots diff v1 v2</h1>" in html
    assert '"rev": "v1"' in html
    assert '"rev": "v2"' in html
    assert len(plots_page.check_page(page)) == len(PLOTS)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("copy_vega", "bad_mark", "message"),
    [
        (False, "bar", r"first: error: could not load file://.*/vega/vega.min.js$"),
        (True, "nosuchmark", r"first: error: #Test_RMSE_by_user_activity\w*: \w+"),
    ],
    ids=["vega not beside the page", "a spec vega-lite rejects"],
)
def test_check_page_reports_the_first_error(shown_page, tmp_path, copy_vega, bad_mark, message):
    broken = tmp_path / "index.html"
    broken.write_text(shown_page.read_text().replace('"type": "bar"', f'"type": "{bad_mark}"'))
    if copy_vega:
        shutil.copytree(
            shown_page.parent / plots_page.SCRIPTS_DIR, tmp_path / plots_page.SCRIPTS_DIR
        )
    with pytest.raises(plots_page.PlotsPageError, match=message):
        plots_page.check_page(broken)


@pytest.mark.slow
def test_screenshot_is_a_png(shown_page, tmp_path):
    png = tmp_path / "shot.png"
    plots_page.screenshot(shown_page, png, "800,600")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000  # a blank page is ~2 KB
