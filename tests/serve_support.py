"""Helpers of the production tests (test_serve, test_monitor, test_deploy): tiny models trained once per
test session with `pianolab train`, a registry, and `pianolab serve` started on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from filelock import FileLock

REPO = Path(__file__).resolve().parents[1]
MIDI = REPO / "data" / "percepiano" / "midi"
CONFIGS = {  # symbolic features, the shipped model's holdout split; small enough to train in seconds
    "ridge": "data: {split: holdout}\nfeatures: {vector: [symbolic]}\nmodel: {name: ridge}\ntrack: {tracker: none}\n",
    "forest": "data: {split: holdout}\nfeatures: {vector: [symbolic]}\n"
              "model: {name: random_forest, params: {n_estimators: 24, min_samples_leaf: 5}}\n"
              "track: {tracker: none}\n",
}


def cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pianolab", *args], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **(env or {})}, timeout=timeout)


def trained_models() -> dict[str, Path]:
    """Run folders of the tiny models, trained once per test session (shared by the test modules)."""
    root = Path(os.environ["PIANOLAB_RUNS"]).parent / "serve-models"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".lock")):
        procs = {}
        for name, text in CONFIGS.items():
            if not (root / name / "model.skops").is_file():
                (root / f"{name}.yaml").write_text(text)
                procs[name] = subprocess.Popen([sys.executable, "-m", "pianolab", "train", str(root / f"{name}.yaml"),
                                                "--out", str(root / name)], cwd=REPO, stdout=subprocess.PIPE,
                                               stderr=subprocess.STDOUT, text=True)
        for proc in procs.values():
            out, _ = proc.communicate(timeout=300)
            assert proc.returncode == 0, out
    return {name: root / name for name in CONFIGS}


def make_registry(folder: Path, champion: str, challenger: str | None = None, verdict: Path | None = None) -> Path:
    """A registry in `folder` with the tiny models behind champion (and challenger)."""
    from pianolab.serve.registry import ModelRegistry

    models, reg = trained_models(), ModelRegistry(folder)
    reg.register(champion, models[champion], alias="champion")
    if challenger:
        reg.register(challenger, models[challenger], verdict, alias="challenger")
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`pianolab serve ARGS` on a free loopback port, until `stop`."""

    def __init__(self, *args: str, startup_s: float = 120):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        opts = dict(zip(args[::2], args[1::2], strict=False))
        self.log_path = Path(opts.get("--log") or Path(opts["--registry"]) / "predictions.sqlite")
        self.proc = subprocess.Popen([sys.executable, "-m", "pianolab", "serve", "--port", str(self.port), *args],
                                     cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + startup_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.proc.stdout.read()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.3)
        self.stop()
        raise AssertionError("server did not start")

    def post_midi(self, path: Path, client: str | None = None, explain: bool = False,
                  data: bytes | None = None) -> httpx.Response:
        files = {"performance": (path.name, path.read_bytes() if data is None else data, "audio/midi")}
        headers = {"X-Client-Id": client} if client else {}
        return httpx.post(self.url + "/predict", params={"explain": explain}, files=files, headers=headers,
                          timeout=60)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def wait_for(condition, timeout: float = 30.0, step: float = 0.2):
    """Poll `condition()` until it returns a truthy value (shadow predictions land after the answer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")


CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def in_chromium(urls: list[str], probe: str, width: int = 900) -> list:
    """`probe` (a JavaScript function) evaluated on each page in Debian's headless Chromium (Playwright)."""
    import tempfile

    import pytest

    sync_api = pytest.importorskip("playwright.sync_api")
    assert CHROMIUM.is_file(), "Debian's chromium is missing: apt-get install -y --no-install-recommends chromium"
    found = []
    with sync_api.sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
        browser = pw.chromium.launch_persistent_context(profile, executable_path=str(CHROMIUM), headless=True,
                                                        args=FLAGS)
        try:
            page = browser.new_page()
            page.set_viewport_size({"width": width, "height": 900})
            for url in urls:
                page.goto(url, wait_until="load")
                found.append(page.evaluate(probe))
        finally:
            browser.close()
    return found
