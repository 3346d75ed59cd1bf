"""The HTML reports in a real browser: Debian's headless Chromium (installed by .ci/run), driven by
Playwright without its own browser download. Checked on the committed quickstart report and on a report
and an evaluation rendered now from a tiny experiment, at a desktop and a narrow window."""

import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "docs" / "results" / "quickstart" / "report.html"
EVALUATION = REPO / "docs" / "results" / "quickstart_evaluation" / "evaluation.html"
CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
PAGE_WIDTH = 1100  # the reports' max-width: a figure wider than this would be scaled down

# Everything the assertions need, measured in the page.
PROBE = """() => {
  const boxes = [...document.body.querySelectorAll('*')].map(e => [e.tagName, e.getBoundingClientRect()])
    .filter(([, r]) => r.width > 0 && r.height > 0);
  return {
    scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
    outside: boxes.filter(([, r]) => r.left < -0.5 || r.right > window.innerWidth + 0.5)
      .map(([t, r]) => `${t} ${r.left.toFixed(0)}..${r.right.toFixed(0)}`),
    tables: [...document.querySelectorAll('table')].map(t => ({
      head: t.querySelectorAll('thead tr').length, body: t.querySelectorAll('tbody tr').length,
      cells: t.querySelectorAll('tbody td').length})),
    images: [...document.images].map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth,
                                            shown: i.getBoundingClientRect().width})),
    text: document.body.innerText,
    question: document.querySelector('#question + .question')?.innerText ?? null,
    verdicts: [...document.querySelectorAll('ul.verdicts > li')].map(li => li.innerText),
    glossary: [...document.querySelectorAll('dl.glossary dt')].map(dt => dt.innerText),
  };
}"""


def open_pages(paths: list[Path], widths=(1280, 760)) -> list[dict]:
    """PROBE of each page at each window width, in headless Debian Chromium."""
    sync_api = pytest.importorskip("playwright.sync_api")
    assert CHROMIUM.is_file(), "Debian's chromium is missing: apt-get install -y --no-install-recommends chromium"
    found = []
    with sync_api.sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
        browser = pw.chromium.launch_persistent_context(profile, executable_path=str(CHROMIUM), headless=True,
                                                        args=FLAGS)
        try:
            page = browser.new_page()
            for path in paths:
                for width in widths:
                    page.set_viewport_size({"width": width, "height": 900})
                    page.goto(path.resolve().as_uri(), wait_until="load")
                    found.append({"path": path, "width": width, **page.evaluate(PROBE)})
        finally:
            browser.close()
    return found


def check_rendered(p: dict) -> None:
    """Tables have rows, no Markdown markers are left, every image loaded and fits, nothing is too wide."""
    where = f"{p['path'].name} at {p['width']} px"
    assert p["tables"], where
    for t in p["tables"]:
        assert t["head"] == 1 and t["body"] >= 1 and t["cells"] >= 2 * t["body"], (where, t)
    text = p["text"]
    for marker in ("|---", "| --- |", "**", "`", "![", "]("):
        assert marker not in text, (where, marker)
    assert not [line for line in text.splitlines() if line.lstrip().startswith(("- ", "# ", "### "))], where
    assert p["images"], where
    for img in p["images"]:
        assert img["complete"] and 0 < img["width"] <= PAGE_WIDTH, (where, img)
        assert img["shown"] <= p["innerWidth"], (where, img)
    assert p["scrollWidth"] <= p["innerWidth"], where
    assert not p["outside"], (where, p["outside"][:5])


def check_ab_top(p: dict, hypothesis: str, variants: list[str]) -> None:
    """The question first, one plain-words verdict per variant, then the glossary of every label."""
    assert " ".join(p["question"].split()) == " ".join(hypothesis.split())
    from pianolab.ab.stats import VERDICTS

    heads = [line.splitlines()[0].split(": ", 1) for line in p["verdicts"]]
    assert sorted(v for v, _ in heads) == sorted(variants) and all(label in VERDICTS for _, label in heads), heads
    assert all(len(line.split()) > 12 for line in p["verdicts"])  # the label, a sentence and the numbers
    assert all(any(label in term for term in p["glossary"]) for label in VERDICTS), p["glossary"]
    text = p["text"]
    assert text.index("Question") < text.index("Verdict") < text.index("Evidence") < text.index("What the verdict")


def test_committed_quickstart_report_and_evaluation_in_chromium():
    exp = yaml.safe_load((REPO / "experiments" / "quickstart.yaml").read_text())
    pages = open_pages([EXAMPLE, EVALUATION])
    for p in pages:
        check_rendered(p)
    for p in pages[:2]:
        check_ab_top(p, exp["hypothesis"], list(exp["variants"]))
        assert len(p["images"]) >= 3
    for p in pages[2:]:  # every section's figure, and a table for every variant of the sections with tables
        assert len(p["images"]) >= 10 and len(p["tables"]) >= 20


HYPOTHESIS = "Less *ridge* shrinkage fits the `symbolic` features better | or not."


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """A tiny experiment run and reported now: (experiment, analysis, results, report folder)."""
    from pianolab.ab.collect import collect
    from pianolab.ab.report import analyse, write_report
    from pianolab.ab.runner import run_experiment
    from pianolab.ab.spec import load_experiment

    tmp = tmp_path_factory.mktemp("browser")
    # under mse (lower is better) ridge alpha 1e8 predicts about the training mean: the futility rule
    # stops it after 2 seeds, so the report shows a stopped variant beside a decided one
    data = {"name": "browser_tiny", "hypothesis": HYPOTHESIS,
            "baseline": {"features": {"vector": ["symbolic"]}, "model": {"name": "ridge", "params": {"alpha": 1000.0}},
                         "track": {"tracker": "none"}},
            "variants": {"awful": {"model.params.alpha": 1.0e8}, "close": {"model.params.alpha": 1.0}},
            "seeds": 3, "split": {"name": "excerpt", "folds": 2}, "primary_metric": "mse", "rope": 0.002,
            "early_stop": {"min_seeds": 2}, "evaluation": ["metrics", "error_analysis"]}
    path = tmp / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    exp, root = load_experiment(path), tmp / "runs"
    run_experiment(exp, root=root, tracker="none", echo=lambda s: None)
    report = write_report(exp, root, echo=lambda s: None)["html"]
    res = collect(exp, root)
    return exp, analyse(exp, res), res, report.parent


def test_fresh_report_and_evaluation_in_chromium(fresh):
    exp, _, _, folder = fresh
    report, evaluation = folder / "report.html", folder.parent / "evaluation" / "evaluation.html"
    assert "<script" not in report.read_text() and 'src="data:image/png;base64,' in report.read_text()
    pages = open_pages([report, evaluation])
    for p in pages:
        check_rendered(p)
    for p in pages[:2]:  # the hypothesis's Markdown is rendered (emphasis, code), not shown as markers
        check_ab_top(p, HYPOTHESIS.replace("*", "").replace("`", ""), ["awful", "close"])
        assert any(line.startswith("awful: stopped early") for line in p["verdicts"]), p["verdicts"]
    for p in pages[2:]:
        assert {"metrics_per_dimension", "errors_by_metadata"} <= {i["alt"] for i in p["images"]}
        assert len(p["tables"]) >= 10  # metrics per variant and per dimension, errors by each column


def test_fresh_report_figures_have_legends_and_fit(fresh):
    from test_report_plots import texts_outside

    from pianolab.ab.report import cells_power_figure, dimensions_figure, forest_figure
    from pianolab.evaluate import plots

    exp, a, res, _ = fresh
    for make in (forest_figure, cells_power_figure, dimensions_figure):
        fig = make(exp, res, a)
        assert fig.get_figwidth() <= plots.MAX_WIDTH_IN and not texts_outside(fig), make.__name__
        if make is not dimensions_figure:
            assert all(ax.get_legend() is not None for ax in fig.axes), make.__name__
    power = cells_power_figure(exp, res, a).axes[1]
    assert {t.get_text() for t in power.get_legend().get_texts()} >= {"close", "power 0.8"}
    heat = dimensions_figure(exp, res, a).axes[0]
    low, high = heat.images[0].get_clim()
    assert low == -high and high >= exp.rope  # centred on 0; a difference inside the ROPE stays pale


def test_fresh_terminal_table_says_which_interval(fresh):
    from pianolab.ab.report import terminal_table

    exp, a, _, _ = fresh
    lines = terminal_table(a).splitlines()
    assert "95% CI (corrected)" in lines[0]
    awful = next(line for line in lines if line.startswith("awful"))
    assert "stopped early" in awful and "(CI unadjusted: outside Holm's family)" in awful
    close = next(line for line in lines if line.startswith("close"))
    vd = a["variants"]["close"]["verdict"]
    assert vd.family == 1 and f"[{vd.ci_low:+8.4f}, {vd.ci_high:+8.4f}]" in close and "(CI" not in close
