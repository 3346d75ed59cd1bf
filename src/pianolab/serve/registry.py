"""A file-based model registry: named run folders behind the aliases `champion` and `challenger`.

`<registry>/registry.json` (default folder: $PIANOLAB_REGISTRY, else `registry/`) holds
`models` (name -> run folder, when it was registered, the offline verdict/report that chose it),
`aliases` (alias -> name) and `history` (every alias move). Writes are serialised with a file lock
and replace the file atomically. Registering records a path only: nothing is loaded or executed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from filelock import FileLock

from pianolab.atomic import atomic_path
from pianolab.errors import PianolabError, fail

REGISTRY_ENV = "PIANOLAB_REGISTRY"
ALIASES = ("champion", "challenger")
FILE = "registry.json"


def default_registry() -> Path:
    return Path(os.environ.get(REGISTRY_ENV, "registry"))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class ModelRegistry:
    """The registry kept in `folder` (created on the first write)."""

    def __init__(self, folder: Path | None = None):
        self.folder = Path(folder or default_registry())
        self.path = self.folder / FILE

    def read(self) -> dict:
        if not self.path.is_file():
            return {"models": {}, "aliases": {}, "history": []}
        try:
            return json.loads(self.path.read_text())
        except json.JSONDecodeError as e:
            raise fail(self.path, f"not valid JSON ({e})") from None

    def _write(self, change) -> dict:
        self.folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            data = self.read()
            change(data)
            with atomic_path(self.path) as tmp:
                tmp.write_text(json.dumps(data, indent=1) + "\n")
        return data

    def register(self, name: str, run: Path, verdict: Path | None = None, alias: str | None = None) -> dict:
        """Record run folder `run` as model `name` (with the offline verdict that chose it), optionally
        pointing `alias` at it."""
        run = Path(run).resolve()
        if not (run / "config.yaml").is_file():
            raise fail(run, "not a run folder (no config.yaml)")
        if verdict is not None and not Path(verdict).is_file():
            raise fail(verdict, "verdict/report file not found")
        if alias is not None and alias not in ALIASES:
            raise PianolabError(f"unknown alias {alias!r}; valid: {', '.join(ALIASES)}")

        def change(data):
            data["models"][name] = {"path": str(run), "registered": _now(),
                                    "verdict": None if verdict is None else str(Path(verdict).resolve())}
            if alias:
                _move(data, alias, name, "registered")

        return self._write(change)

    def set_alias(self, alias: str, name: str, reason: str) -> dict:
        if alias not in ALIASES:
            raise PianolabError(f"unknown alias {alias!r}; valid: {', '.join(ALIASES)}")
        return self._write(lambda data: _move(data, alias, _known(data, name, self.path), reason))

    def promote(self, reason: str) -> tuple[str | None, str]:
        """Move `champion` to the model `challenger` points at and clear `challenger`; returns
        (old champion, new champion)."""
        out = {}

        def change(data):
            new = data["aliases"].get("challenger")
            if new is None:
                raise fail(self.path, "no challenger to promote")
            out["old"] = data["aliases"].get("champion")
            _move(data, "champion", new, reason)
            _move(data, "challenger", None, f"promoted to champion ({reason})")
            out["new"] = new

        self._write(change)
        return out["old"], out["new"]

    def resolve(self, ref: str) -> tuple[str, Path]:
        """(name, run folder) of an alias, a registered name, a shipped model (`pianolab.predict.SHIPPED_MODELS`),
        or a run folder path; `champion` without a registered champion is the shipped default model."""
        from pianolab.predict import SHIPPED_MODELS

        data = self.read()
        name = data["aliases"].get(ref, ref)
        if name in data["models"]:
            return name, Path(data["models"][name]["path"])
        if ref == "champion":
            ref = "default"
        if ref in SHIPPED_MODELS:
            return ref, SHIPPED_MODELS[ref]
        if Path(ref).is_dir():
            return Path(ref).resolve().name, Path(ref).resolve()
        raise PianolabError(f"{ref}: no such alias, registered model or run folder in {self.path} "
                            f"(aliases: {', '.join(sorted(data['aliases'])) or 'none'})")

    def entry(self, name: str) -> dict:
        return self.read()["models"].get(name, {})


def _known(data: dict, name: str, path: Path) -> str:
    if name not in data["models"]:
        raise fail(path, f"no registered model {name!r}; registered: {', '.join(sorted(data['models'])) or 'none'}")
    return name


def _move(data: dict, alias: str, name: str | None, reason: str) -> None:
    data["history"].append({"at": _now(), "alias": alias, "from": data["aliases"].get(alias), "to": name,
                            "reason": reason})
    if name is None:
        data["aliases"].pop(alias, None)
    else:
        data["aliases"][alias] = name
