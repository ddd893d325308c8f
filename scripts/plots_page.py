"""Render `dvc plots show` (or `dvc plots diff`) as a page that works offline; optionally screenshot it.

DVC's own page loads vega, vega-lite and vega-embed from cdn.jsdelivr.net. This script fetches pinned
builds from the npm registry into a cache once, copies them next to the page and hands DVC an HTML
template that loads those copies, so the page renders from file:// with no network at all.

Unless --no-check, the page is then opened in headless chromium and its DOM checked: each plot DVC
wrote must have been drawn by vega-embed (a canvas or svg), and no script may have failed.

    python scripts/plots_page.py                                  # plots/index.html, checked
    python scripts/plots_page.py --diff                           # workspace versus HEAD
    python scripts/plots_page.py --diff HEAD~1 HEAD               # dvc plots diff HEAD~1 HEAD
    python scripts/plots_page.py --screenshot plots/screenshot.png
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from html.parser import HTMLParser
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = ROOT / ".cache" / "vega"

# The major versions DVC's page loads (vega 5, vega-lite 5, vega-embed 6); the newest of each that
# agree with one another (DVC's own pins do not: vega-lite 5.2.0 needs vega >= 5.21).
VEGA_PACKAGES = {"vega": "5.33.1", "vega-lite": "5.23.0", "vega-embed": "6.29.0"}
BUILD_FILES = {
    "vega": "build/vega.min.js",
    "vega-lite": "build/vega-lite.min.js",
    "vega-embed": "build/vega-embed.min.js",
}
SCRIPTS_DIR = "vega"  # where the builds are copied, relative to the page

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Headless, offline and with a throwaway profile; --user-data-dir, --window-size and the action
# (--screenshot or --dump-dom) are added per run. No host name resolves, so a page that still reached
# for a CDN would show a load error even on a machine that is online.
CHROMIUM_FLAGS = (
    "--headless",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=10000",
)
CHROMIUM_TIMEOUT_S = 120
ERROR_CLASS = "plots-page-error"

# A script error would otherwise reach only the console; this puts it on the page, where a screenshot
# or a DOM dump shows it. Capturing "error" also catches a <script src> that failed to load.
ERROR_HANDLER = """<script>
  var plotsErrors = [];
  function showPlotsErrors() {
    while (plotsErrors.length) {
      var line = document.createElement("pre");
      line.className = "ERROR_CLASS";
      line.textContent = "error: " + plotsErrors.shift();
      document.body.appendChild(line);
    }
  }
  // Errors in <head> (a build that did not load) wait for <body>, then come first, in order.
  function showPlotsError(message) {
    plotsErrors.push(message);
    if (document.body) { showPlotsErrors(); }
  }
  document.addEventListener("DOMContentLoaded", showPlotsErrors);
  window.addEventListener("error", function (event) {
    var target = event.target;
    showPlotsError(target && target.src ? "could not load " + target.src : event.message);
  }, true);
  window.addEventListener("unhandledrejection", function (event) {
    var reason = event.reason;
    showPlotsError(reason && reason.message ? reason.message : String(reason));
  });
</script>""".replace("ERROR_CLASS", ERROR_CLASS)

# Errors thrown inside vega's scripts are "muted" for a file:// page (every file is its own origin),
# so no unhandledrejection event reports a spec that vega-lite rejects; catch vegaEmbed's promise.
EMBED_GUARD = """<script>
  if (window.vegaEmbed) {
    var vegaEmbedUnguarded = window.vegaEmbed;
    window.vegaEmbed = function (element, spec, options) {
      return vegaEmbedUnguarded(element, spec, options).catch(function (error) {
        showPlotsError(element + ": " + (error && error.message ? error.message : String(error)));
      });
    };
  }
</script>"""

STYLE = """<style>
  body { font-family: sans-serif; display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
  h1 { flex-basis: 100%; margin: 0; font-size: 16px; font-weight: normal; color: #555; }
  .ERROR_CLASS { flex-basis: 100%; color: #b00020; white-space: pre-wrap; }
</style>""".replace("ERROR_CLASS", ERROR_CLASS)


class PlotsPageError(Exception):
    """An expected failure (a missing tool, a failed command); its message is one line for the user."""


def make_template(heading: str) -> str:
    """An HTML template for `dvc plots --html-template` that loads vega from SCRIPTS_DIR.

    It has no `{scripts}` placeholder, so DVC's CDN script tags are left out.

    Args:
        heading: one line shown above the plots, e.g. the dvc command that made the page.

    Returns:
        The template, with DVC's `{plot_divs}` placeholder.
    """
    scripts = "\n".join(
        f'<script src="{SCRIPTS_DIR}/{Path(build).name}"></script>'
        for build in BUILD_FILES.values()
    )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            "<html>",
            "<head>",
            '<meta charset="utf-8">',
            "<title>DVC plots</title>",
            ERROR_HANDLER,
            scripts,
            STYLE,
            "</head>",
            "<body>",
            f"<h1>{html.escape(heading)}</h1>",
            EMBED_GUARD,
            "{plot_divs}",
            "</body>",
            "</html>",
            "",
        ]
    )


def installed(cache: Path) -> bool:
    """Whether `cache` holds exactly the VEGA_PACKAGES versions and their builds."""
    for package, version in VEGA_PACKAGES.items():
        manifest = cache / "node_modules" / package / "package.json"
        build = cache / "node_modules" / package / BUILD_FILES[package]
        if not (manifest.is_file() and build.is_file()):
            return False
        if json.loads(manifest.read_text())["version"] != version:
            return False
    return True


def fetch_vega(cache: Path) -> dict[str, Path]:
    """Install VEGA_PACKAGES into `cache` with npm unless they are there already.

    Args:
        cache: npm prefix directory; created if missing.

    Returns:
        Package name -> path of its minified browser build.

    Raises:
        PlotsPageError: npm is not installed or `npm install` failed.
    """
    if not installed(cache):
        npm = shutil.which("npm")
        if npm is None:
            raise PlotsPageError(
                "npm not found: install Node.js and npm (Debian: sudo apt-get install npm; "
                "elsewhere see https://nodejs.org) and retry"
            )
        cache.mkdir(parents=True, exist_ok=True)
        manifest = {"name": "plots-page-vega", "private": True, "dependencies": VEGA_PACKAGES}
        (cache / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
        log.info("fetching %s into %s with npm", ", ".join(VEGA_PACKAGES), cache)
        command = [npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund"]
        command += ["--prefer-offline", "--loglevel=error"]
        done = subprocess.run(command, check=False)
        if done.returncode != 0 or not installed(cache):
            raise PlotsPageError(
                f"npm install into {cache} failed (exit {done.returncode}); see npm's output above"
            )
    return {
        package: cache / "node_modules" / package / BUILD_FILES[package] for package in BUILD_FILES
    }


def dvc_plots_command(out: Path, template: Path, diff: Sequence[str] | None) -> list[str]:
    """The `dvc plots show` command, or `dvc plots diff REV...` when `diff` is not None."""
    action = ["show"] if diff is None else ["diff", *diff]
    command = [sys.executable, "-m", "dvc", "plots", *action]
    return [*command, "--html-template", str(template), "-o", str(out)]


def render_page(
    out: Path, cache: Path, diff: Sequence[str] | None = None, repo: Path | None = None
) -> Path:
    """Run `dvc plots show` (or `diff`) in `repo` into `out`, with the page loading local vega.

    Args:
        out: output directory (relative to the current directory, not to `repo`); gets index.html
            and SCRIPTS_DIR/ with the three builds.
        cache: npm prefix holding vega (see `fetch_vega`).
        diff: revisions for `dvc plots diff`; None for `dvc plots show`.
        repo: the DVC repository to run in; None for the current directory.

    Returns:
        The page, `out`/index.html.

    Raises:
        PlotsPageError: npm is missing, dvc failed or wrote no page.
    """
    builds = fetch_vega(cache)
    out = out.resolve()
    heading = "dvc plots " + ("show" if diff is None else " ".join(["diff", *diff]))
    log.info("running %s into %s", heading, out)
    with tempfile.TemporaryDirectory(prefix="plots-page-") as tmp:
        template = Path(tmp) / "template.html"
        template.write_text(make_template(heading))
        # dvc prints the page's file:// address on stdout; keep it off ours, which is for the log.
        done = subprocess.run(
            dvc_plots_command(out, template, diff), cwd=repo, stdout=subprocess.DEVNULL, check=False
        )
    page = out / "index.html"
    if done.returncode != 0:
        raise PlotsPageError(f"{heading} failed (exit {done.returncode}); see dvc's output above")
    if not page.is_file():
        raise PlotsPageError(f"{heading} wrote no {page}: does dvc.yaml declare any plots?")
    scripts_dir = out / SCRIPTS_DIR
    scripts_dir.mkdir(parents=True, exist_ok=True)
    for build in builds.values():
        shutil.copyfile(build, scripts_dir / build.name)
    return page


def plot_ids(page_html: str) -> list[str]:
    """The element ids DVC's page hands to vegaEmbed, in page order: one per vega plot."""
    return re.findall(r"vegaEmbed\(\s*['\"]#([^'\"]+)['\"]", page_html)


class _DomSummary(HTMLParser):
    """Which of `ids` hold a drawn vega view (a canvas or svg of class "marks"), and any error lines."""

    def __init__(self, ids: Sequence[str]):
        super().__init__()
        self.ids = set(ids)
        self.found: set[str] = set()
        self.drawn: set[str] = set()
        self.errors: list[str] = []
        self._open: list[tuple[str, str | None, bool]] = []  # (tag, id, is an error element)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        element_id = attributes.get("id")
        if element_id in self.ids and "vega-embed" in classes:
            self.found.add(element_id)
        if tag in ("canvas", "svg") and "marks" in classes:
            self.drawn.update(i for _, i, _ in self._open if i in self.found)
        is_error = ERROR_CLASS in classes
        if is_error:
            self.errors.append("")
        # Void elements (<meta>, <input>) never close; left on the stack they go with their parent.
        self._open.append((tag, element_id, is_error))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self._open) - 1, -1, -1):
            if self._open[depth][0] == tag:
                del self._open[depth:]
                return

    def handle_data(self, data: str) -> None:
        if any(is_error for _, _, is_error in self._open):
            self.errors[-1] += data


def check_dom(dom: str, ids: Sequence[str]) -> None:
    """Check a page's rendered DOM (chromium's --dump-dom): every plot in `ids` drawn, no errors.

    Args:
        dom: the serialised DOM after the page's scripts ran.
        ids: the element ids of the plots the page should show (see `plot_ids`).

    Raises:
        PlotsPageError: `ids` is empty, the page shows an error, or a plot was not drawn.
    """
    if not ids:
        raise PlotsPageError("the page has no vega plots: does dvc.yaml declare any plots?")
    summary = _DomSummary(ids)
    summary.feed(dom)
    summary.close()
    if summary.errors:
        first = " ".join(summary.errors[0].split())
        raise PlotsPageError(
            f"the page shows {len(summary.errors)} script error(s), first: {first}"
        )
    missing = [i for i in ids if i not in summary.drawn]
    if missing:
        raise PlotsPageError(
            f"{len(missing)} of {len(ids)} plots were not drawn by vega-embed: {', '.join(missing)}"
        )


def check_page(page: Path, window_size: str = "1000,1000") -> list[str]:
    """Open `page` in headless chromium and check that every vega plot on it was drawn.

    Returns:
        The ids of the plots, all drawn.

    Raises:
        PlotsPageError: chromium is missing or failed, or `check_dom` failed (the page is named).
    """
    ids = plot_ids(page.read_text(encoding="utf-8"))
    dom = run_chromium(page, "--dump-dom", window_size)
    try:
        check_dom(dom, ids)
    except PlotsPageError as error:
        raise PlotsPageError(f"{page}: {error}") from None
    return ids


def find_chromium() -> str:
    """The path of a Chromium (or Chrome) binary.

    Raises:
        PlotsPageError: none is on PATH.
    """
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path is not None:
            return path
    raise PlotsPageError(
        "chromium not found: run `make deps` (it installs Debian's chromium) "
        "or install Chromium and put it on PATH"
    )


def run_chromium(page: Path, action: str, window_size: str) -> str:
    """Open `page` in headless chromium with a throwaway profile and perform `action`.

    Args:
        page: an HTML file.
        action: a chromium flag such as `--dump-dom` or `--screenshot=/abs/path.png`.
        window_size: viewport as "WIDTH,HEIGHT" in pixels.

    Returns:
        Chromium's stdout (the DOM, for `--dump-dom`).

    Raises:
        PlotsPageError: chromium is missing, failed or timed out.
    """
    chromium = find_chromium()
    with tempfile.TemporaryDirectory(prefix="plots-page-chromium-") as profile:
        command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
        command += [f"--window-size={window_size}", action, page.resolve().as_uri()]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as error:
            raise PlotsPageError(f"chromium took over {CHROMIUM_TIMEOUT_S} s on {page}") from error
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise PlotsPageError(f"chromium failed on {page} (exit {done.returncode}): {last[0]}")
    return done.stdout


def screenshot(page: Path, png: Path, window_size: str) -> None:
    """Save a PNG of `page` as headless chromium draws it in a `window_size` viewport."""
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    run_chromium(page, f"--screenshot={png.resolve()}", window_size)
    if not png.is_file():
        raise PlotsPageError(f"chromium wrote no screenshot to {png}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("plots"), help="output directory")
    parser.add_argument(
        "--diff",
        nargs="*",
        metavar="REV",
        help="run `dvc plots diff REV...` instead of `dvc plots show` (no REV: workspace vs HEAD)",
    )
    parser.add_argument("--screenshot", type=Path, metavar="PNG", help="also save a screenshot")
    parser.add_argument("--window-size", default="1000,820", help="screenshot viewport W,H")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="npm cache for vega")
    parser.add_argument(
        "--no-check", action="store_true", help="skip opening the page in headless chromium"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    try:
        if not args.no_check or args.screenshot is not None:
            find_chromium()  # fail before the slow part, not after it
        page = render_page(args.out, args.cache, args.diff)
        log.info("wrote %s", page)
        if not args.no_check:
            log.info("checking %s in headless chromium", page)
            ids = check_page(page, args.window_size)
            log.info("all %d plots drawn: %s", len(ids), ", ".join(ids))
        if args.screenshot is not None:
            screenshot(page, args.screenshot, args.window_size)
            log.info("wrote %s", args.screenshot)
    except PlotsPageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
