"""The documentation site builds strictly, and the Python API example runs as documented."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]


def test_docs_site_builds_strictly_with_api_reference(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                         cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    reference = (tmp_path / "site" / "reference" / "index.html").read_text()
    assert "predict_files" in reference and "results_table" in reference
    example = (tmp_path / "site" / "python_api" / "index.html").read_text()
    assert "groupby" in example and "results_table" in example  # the snippet was included, not a marker
    assert "--8&lt;--" not in example


def test_python_api_example_runs_and_table_matches_run_folders(tmp_path):
    from pianolab import track
    from pianolab.ab.table import results_table

    exp = {"name": "api_example", "hypothesis": "ridge vs a stronger ridge penalty",
           "baseline": {"features": {"vector": ["symbolic"]}, "model": {"name": "ridge"}},
           "variants": {"strong": {"model.params.alpha": 100.0}},
           "seeds": 1, "split": {"name": "excerpt", "folds": 2}}
    path = tmp_path / "api_example.yaml"
    path.write_text(yaml.safe_dump(exp))
    ran = subprocess.run([sys.executable, "-m", "pianolab", "ab", "run", str(path), "--tracker", "none"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr[-2000:]

    table = results_table(path)
    assert sorted(set(table["variant"])) == ["baseline", "strong"] and len(table) == 4
    for row in table.itertuples():
        summary = track.read_meta(Path(row.folder))["summary"]
        for metric in ("pearson", "r2", "within_excerpt_pearson"):
            assert np.isclose(getattr(row, metric), summary[metric], atol=1e-6)

    midi = [p for p in sorted((REPO / "data" / "percepiano" / "midi").glob("*.mid")) if p.name[0] != " "][:2]
    out = subprocess.run([sys.executable, str(REPO / "docs" / "examples" / "python_api.py"), str(path),
                          *map(str, midi)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert midi[0].stem in out.stdout and "strong" in out.stdout and "within_excerpt_pearson" in out.stdout
