"""Final models: one config fitted on every labelled item (`pianolab train CONFIG --all`).

No test fold: every labelled performance trains the model, except the validation carve-out of a
model that early-stops on one (neural models; estimators take none). `exclude_groups` leaves whole
excerpt groups out (a test that checks such a model on music it never saw). The folder is a run
folder like any other (config, meta, model) that `predict --model` takes, plus a model card.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pianolab import track
from pianolab.config import RunConfig
from pianolab.data.percepiano import load_dataset
from pianolab.errors import PianolabError
from pianolab.train.run import Roles, _check_features, carve_val, fit_cell, load_items, make_cell, val_fraction


def train_all(cfg: RunConfig, folder: Path, card: Path | None = None, exclude_groups: tuple[str, ...] = (),
              progress: bool = False) -> dict:
    """Fit `cfg` on every labelled item (but `exclude_groups`) into `folder`, write its model card
    (`card`: the card sidecar YAML, see train.card) and return the meta's summary."""
    from pianolab.train.card import write_card
    from pianolab.train.trainer import deterministic_kernels, pick_device, seed_everything

    _check_features(cfg)
    device = pick_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    dataset = load_dataset(cfg.data.root, midi=cfg.data.midi)
    groups = dataset.column("group")
    unknown = sorted(set(exclude_groups) - set(groups))
    if unknown:
        raise PianolabError(f"no excerpt group(s) {', '.join(unknown)} in the data")
    keep = ~np.isin(groups, list(exclude_groups))
    if cfg.data.humans_only:
        keep &= ~dataset.column("deadpan").astype(bool)
    rng = np.random.default_rng(cfg.train.seed + 7919 * cfg.data.fold)
    train, val = carve_val(dataset, np.flatnonzero(keep), val_fraction(cfg), rng)
    roles = Roles(train, val, np.array([], dtype=int))
    meta = {"split": "all", "split_description": "every labelled item (no test fold)"
            + (f" except excerpt groups {', '.join(exclude_groups)}" if exclude_groups else ""),
            "data_version": dataset.version, "n_train": len(train), "n_val": len(val), "n_test": 0,
            "excluded_groups": list(exclude_groups)}
    folder = Path(folder)
    track.start_run(folder, cfg, {**meta, "experiment": "final", "variant": ""})
    loaded = load_items(cfg, dataset, np.concatenate([train, val]), device, progress)
    if cfg.tuning.trials:
        from pianolab.ab.tuning import tune

        cfg = tune(cfg, loaded, np.concatenate([train, val]), folder, "final", "", device)
    cell = make_cell(cfg, loaded, roles, folder, device)
    with deterministic_kernels(cfg.train.deterministic):
        fit_cell(cell, device)
    summary = {"n_train": float(len(train)), "n_val": float(len(val))}
    track.finish_run(folder, summary)
    (folder / "state.pt").unlink(missing_ok=True)
    write_card(folder, cfg, card)
    return summary
