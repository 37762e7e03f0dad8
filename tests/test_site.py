"""The static leaderboard site: written beside the Markdown pages, browsable from disk."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from click.testing import CliRunner

from mssbench.cli import main
from mssbench.errors import DataError
from mssbench.leaderboard import build
from mssbench.site import write_site

REPO = Path(__file__).resolve().parent.parent
RUNS = REPO / "leaderboards" / "runs" / "census-income"
REPORTED = REPO / "leaderboards" / "reported"
MODELS = ("mmoe", "shared_bottom", "star")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A site built by the CLI from 6 committed census-income records (3 models, 2 seeds)."""
    if not RUNS.is_dir():
        pytest.skip("the committed run records (leaderboards/runs) are not in this checkout")
    tmp = tmp_path_factory.mktemp("lb")
    runs = tmp / "runs"
    runs.mkdir()
    for path in sorted(RUNS.glob("*.json")):
        model, seed = re.fullmatch(r".*_census-income_(.+)_s(\d+)", path.stem).groups()
        if model in MODELS and seed in ("0", "1"):
            shutil.copy(path, runs / path.name)
    assert len(list(runs.iterdir())) == 6
    result = CliRunner().invoke(
        main,
        ["leaderboard", "build", str(runs), "--out", str(tmp / "lb"), "--reported", str(REPORTED)],
    )
    assert result.exit_code == 0, result.output
    assert "Site: " in result.output
    return tmp / "lb" / "site"


def _links(html: str) -> list[str]:
    return re.findall(r'(?:href|src)="([^"#]+)"', html)


def test_every_link_of_every_page_resolves(site: Path):
    pages = list(site.rglob("*.html"))
    assert len(pages) == 1 + 1 + 6 + 1  # index, track, one per run, reported
    for page in pages:
        for link in _links(page.read_text()):
            assert (page.parent / unquote(link)).resolve().is_file(), f"{page}: {link}"


def test_index_lists_the_track_and_a_page_per_run(site: Path):
    index = (site / "index.html").read_text()
    assert "census-income/bundled/v1" in index and "Reported elsewhere" in index
    (track,) = site.glob("census-income/*/index.html")
    text = track.read_text()
    assert text.count('href="runs/') == 6
    assert text.count("<img ") == 4  # AUC by scenario per task, AUC against cost, learning curves
    run = next(track.parent.glob("runs/*.html")).read_text()
    for part in ("Test metrics", "Validation curve", "<svg", "Configuration", "Environment"):
        assert part in run


def test_a_track_page_opens_with_the_budget_box_and_says_each_runs_convergence(site: Path):
    (track,) = site.glob("census-income/*/index.html")
    html = track.read_text()
    box = re.search(r'<p class="budget"><strong>Budget.</strong> (.*?)</p>', html, re.S)
    assert box is not None
    for part in ("Rows: train ", "epochs run", "Hyperparameters: ", "Convergence: ", "Hardware: "):
        assert part in box.group(1)
    assert "\\" not in box.group(1)  # no Markdown escapes in HTML
    runs = html.split('<table id="runs"')[1]
    assert "<th>converged</th>" in runs
    assert len(re.findall(r"<td>(?:yes|no|—)(?:, at the base rate)?</td>", runs)) == 6


def test_a_run_page_shows_the_command_rebuilt_from_its_config(site: Path):
    pages = sorted(site.glob("*/**/runs/*.html"))
    assert len(pages) == 6
    for page in pages:
        html = page.read_text()
        command = re.search(r"<h2>Command</h2>.*?<pre>(.*?)</pre>", html, re.S).group(1)
        seed = re.search(r"_s(\d+)\.html$", page.name)
        # The records say they came from one `mssbench suite` line: the page shows the one
        # `mssbench run` of this run instead, never text the record carries.
        assert command.startswith("mssbench run ") and "--jobs" not in command, command
        assert seed is not None and command.endswith(f"--seed {seed.group(1)}"), command


def test_a_directory_not_written_by_the_build_is_never_replaced(tmp_path: Path, site: Path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "mine.txt").write_text("keep")
    with pytest.raises(DataError, match="refusing to replace"):
        write_site(build(site.parent.parent / "runs", tmp_path / "lb", plots=False), tmp_path)
    assert (tmp_path / "site" / "mine.txt").read_text() == "keep"


# --- in a real headless browser ----------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(
            "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--allow-file-access-from-files",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    yield driver
    driver.quit()


def _column(driver, table_id: str, index: int) -> list[str]:
    script = (
        "return Array.from(document.getElementById(arguments[0]).tBodies[0].rows)"
        ".filter(r => !r.hidden).map(r => r.cells[arguments[1]].textContent.trim());"
    )
    return driver.execute_script(script, table_id, index)


def test_in_a_browser_tables_sort_filter_and_links_resolve(browser, site: Path):
    from selenium.webdriver.common.by import By

    browser.get((site / "index.html").as_uri())
    assert browser.title.startswith("Leaderboards")
    browser.find_element(By.CSS_SELECTOR, "#tracks tbody a").click()
    assert browser.current_url.endswith("/index.html") and "census-income" in browser.current_url
    # the runs table sorts on a header click, both ways
    header = browser.find_elements(By.CSS_SELECTOR, "#runs thead th")[1]  # seed
    header.click()
    assert _column(browser, "runs", 1) == sorted(_column(browser, "runs", 1))
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    assert _column(browser, "runs", 1) == sorted(_column(browser, "runs", 1), reverse=True)
    browser.find_elements(By.CSS_SELECTOR, "#runs thead th")[0].click()
    assert _column(browser, "runs", 0) == sorted(_column(browser, "runs", 0))
    # filtering hides the other rows
    box = browser.find_element(By.CSS_SELECTOR, 'input[data-filter="runs"]')
    box.send_keys("star")
    assert set(_column(browser, "runs", 0)) == {"star"}
    # every image loaded, every link points to a file
    loaded = browser.execute_script(
        "return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0);"
    )
    assert loaded and all(loaded)
    hrefs = [a.get_attribute("href") for a in browser.find_elements(By.TAG_NAME, "a")]
    for href in hrefs:
        assert Path(unquote(urlparse(href).path)).is_file(), href
    # a run page opens from the table
    browser.find_element(By.CSS_SELECTOR, "#runs tbody tr:not([hidden]) a").click()
    assert "Validation curve" in browser.page_source
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
