"""One run = one config, one fold, one seed: data -> features -> fit -> predictions -> run folder.

Neural models train with `Trainer`; scikit-learn estimators (`pianolab.models.classic`) are fitted
directly; both leave the same run folder, so they meet in the same A/B tables. Normalisation
(vector scaling, target standardisation, top-k selection) is fitted on the training items only.
A config with `tuning.trials` first picks its hyperparameters with an Optuna search on inner folds of
its training items (`pianolab.ab.tuning`), which fits through `make_cell` and `fit_cell` like a run.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pianolab import track
from pianolab.config import RunConfig, to_dict
from pianolab.data.percepiano import N_DIMS, Dataset, load_dataset
from pianolab.data.splits import get_split
from pianolab.errors import PianolabError
from pianolab.features.stack import save_stack
from pianolab.train.inputs import Inputs, VectorScaler, hears_audio, load_file_inputs, load_inputs, with_peer_columns

SUMMARY_METRICS = ("pearson", "r2", "within_excerpt_pearson")


@dataclass
class Roles:
    """Item indices (into the dataset) of the training, validation and test parts of a fold; with
    few-shot adaptation (`adapt.k`), `support` holds the rated test items given to the model and
    `test` the query (`pianolab.adapt.fewshot.draw_support`)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    support: np.ndarray = field(default_factory=lambda: np.array([], dtype=int))
    # with a domain shift (`domain.target`): the target's unlabelled items of the training part
    unlabelled: np.ndarray = field(default_factory=lambda: np.array([], dtype=int))


def fold_roles(cfg: RunConfig, dataset: Dataset, val_fraction: float) -> tuple[Roles, dict]:
    """Indices of this run's fold; the validation carve-out takes whole excerpt groups of train."""
    d = cfg.data
    split = get_split(dataset, d.split, d.folds, d.repeats, d.split_seed)
    if d.repeat >= split.n_repeats or d.fold >= split.folds:
        raise PianolabError(f"split {split.id} has {split.n_repeats} repeat(s) x {split.folds} folds; "
                            f"asked for repeat {d.repeat} fold {d.fold}")
    fold = split.repeats[d.repeat][d.fold]
    keep = (lambda s: not dataset.items[dataset.index[s]].deadpan) if d.humans_only else (lambda s: True)
    train = np.array([dataset.index[s] for s in fold.train if keep(s)])
    test = np.array([dataset.index[s] for s in fold.test if keep(s)])
    unlabelled, domain_meta = np.array([], dtype=int), {}
    if cfg.domain.target:  # train on the source domain, rate the target's items (pianolab.adapt.domain)
        from pianolab.adapt.domain import domain_roles

        dom = domain_roles(cfg.domain, dataset, train, test)
        train, test, unlabelled, domain_meta = dom.train, dom.test, dom.unlabelled, dom.meta()
    train, val = carve_val(dataset, train, val_fraction, np.random.default_rng(cfg.train.seed + 7919 * d.fold))
    support, few = np.array([], dtype=int), {}
    if cfg.adapt.k:
        support, test, few = _support(cfg, dataset, test)
    meta = {"split": split.id, "split_digest": split.digest, "split_description": split.description,
            "fold": d.fold, "repeat": d.repeat, "data_version": dataset.version,
            "feature_versions": feature_versions(cfg), "n_train": len(train), "n_val": len(val),
            "n_test": len(test), **few}
    roles = Roles(train, val, test, support)
    roles.unlabelled = unlabelled
    return roles, {**meta, **domain_meta}


def _support(cfg: RunConfig, dataset: Dataset, test: np.ndarray):
    """(support, query, meta) of the test items for few-shot adaptation (`cfg.adapt`)."""
    from pianolab.adapt.fewshot import TASKS, draw_support

    a, d = cfg.adapt, cfg.data
    tasks = dataset.column(TASKS.get(a.tasks).column)[test]
    human = ~dataset.column("deadpan")[test]
    s, q = draw_support(tasks, human, a.k, d.split_seed, d.repeat, d.fold)
    meta = {"n_support": len(s), "n_tasks": len(np.unique(tasks[q])), "n_test_before_support": len(test)}
    return test[s], test[q], meta


def feature_versions(cfg: RunConfig) -> dict[str, int]:
    """The version of every feature kind the config reads (bumped when a kind's computation changes)."""
    from pianolab.features.kinds import get_kind

    kinds = [k for k in (cfg.features.spectrogram, *cfg.features.vector) if k]
    return {k: get_kind(k).version for k in kinds}


def carve_val(dataset: Dataset, train: np.ndarray, fraction: float,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(train, val): `fraction` of the excerpt groups of `train` (at least one) become validation."""
    if fraction <= 0:
        return train, np.array([], dtype=int)
    groups = dataset.column("group")[train]
    names = np.unique(groups)
    chosen = rng.choice(names, size=max(1, int(round(fraction * len(names)))), replace=False)
    is_val = np.isin(groups, chosen)
    return train[~is_val], train[is_val]


def val_fraction(cfg: RunConfig) -> float:
    """The validation carve-out of a training part: none for estimators (no early stopping)."""
    return 0.0 if is_estimator(cfg.model.name) else cfg.regularize.val_fraction


def summarise(y: np.ndarray, pred: np.ndarray, groups: np.ndarray) -> dict:
    from pianolab.evaluate.metrics import compute_metrics

    res = compute_metrics(list(SUMMARY_METRICS), y, pred, groups=groups)
    return {name: float(r.value) for name, r in res.items()}


def is_estimator(name: str) -> bool:
    from pianolab.models.classic import ESTIMATORS

    return name in ESTIMATORS


@dataclass
class Cell:
    """One run's prepared data: its fold roles, normalised inputs per role and training targets.
    `folder` is None for a tuning trial's inner fit, which writes nothing."""

    cfg: RunConfig
    folder: Path | None
    dataset: Dataset
    roles: Roles
    part: dict[str, Inputs]
    targets: dict[str, np.ndarray]
    norm: dict
    weights: np.ndarray | None = None  # per training row (`train.sample_weights`), estimators only

    @property
    def estimator(self) -> bool:
        return is_estimator(self.cfg.model.name)


def execute(cfg: RunConfig, folder: Path, experiment: str = "single", variant: str = "",
            progress: bool = False, loaded: Loaded | None = None) -> dict:
    """Run (or resume) one cell and write its folder; returns the test-set summary metrics. `loaded`:
    the inputs of every item, read once for several cells (see `prepare_cell`)."""
    from pianolab.train.trainer import deterministic_kernels, pick_device

    device = pick_device(cfg.train.device)
    cell = prepare_cell(cfg, folder, experiment, variant, device, progress, loaded)
    with deterministic_kernels(cfg.train.deterministic):
        return finish_cell(cell, fit_cell(cell, device))


_GLOBAL_RNG = threading.Lock()  # held while the global generators are seeded and a model drawn from them


@dataclass
class Loaded:
    """The inputs of some dataset items, read once from the feature store."""

    dataset: Dataset
    inputs: Inputs
    pos: dict[int, int]  # dataset index -> row of `inputs`

    def rows(self, idx: np.ndarray) -> Inputs:
        return self.inputs.subset(np.array([self.pos[int(i)] for i in idx], dtype=int))


def load_items(cfg: RunConfig, dataset: Dataset, idx: np.ndarray, device: torch.device,
               progress: bool = False, paths: list[Path] | None = None) -> Loaded:
    """Features of the items `idx` (dataset indices), read from their PercePiano MIDI or from `paths`
    (one MIDI file or recording per index, e.g. another domain's: `load_file_inputs`); one failed item
    is an error."""
    paths = [dataset.items[i].midi_path for i in idx] if paths is None else paths
    return _loaded(dataset, idx, load_file_inputs(cfg.features, paths, device=str(device), progress=progress))


def _loaded(dataset: Dataset, idx: np.ndarray, inputs: Inputs) -> Loaded:
    if not inputs.ok.all():
        bad = [dataset.items[i].stem for i, good in zip(idx, inputs.ok, strict=True) if not good]
        raise PianolabError(f"features failed for {len(bad)} item(s), e.g. {bad[0]!r}")
    return Loaded(dataset, inputs, {int(i): k for k, i in enumerate(idx)})


def load_all_items(cfg: RunConfig, device: torch.device) -> Loaded:
    """Every item of `cfg`'s dataset, read once for several cells that share its feature settings."""
    dataset = load_dataset(cfg.data.root, midi=cfg.data.midi)
    return load_items(cfg, dataset, np.arange(len(dataset)), device)


def _load_domain(cfg: RunConfig, dataset: Dataset, roles: Roles, device: torch.device, progress: bool):
    """A domain cell's inputs (`pianolab.adapt.domain.DomainLoaded`): the training part from the
    source's files (the target's for `train_on: target`), test items and unlabelled pool from the
    target's, plus the target's files that name no item. Recordings are transcribed to MIDI first,
    except for a config whose kinds all read audio (`hears_audio`), which hears them as they are. A corpus is
    read whole, once per process for the cells of an experiment (recordings' spectrograms are not
    kept in the feature store)."""
    from pianolab.adapt.domain import DomainLoaded, corpora

    source, target = corpora(cfg.domain, dataset, transcribe=not hears_audio(cfg.features))
    labelled = target if cfg.domain.train_on == "target" else source

    def read(corpus, extra: tuple = ()) -> tuple[Loaded, Inputs]:
        """The corpus's items (`Loaded`) and the inputs of `extra` (failed ones included)."""
        idx = np.array([dataset.index[s] for s in corpus.items], dtype=int)
        inputs = _files_once(cfg.features, (*corpus.items.values(), *extra), str(device), progress)
        n = len(idx)
        return _loaded(dataset, idx, inputs.subset(np.arange(n))), inputs.subset(np.arange(n, len(inputs.ok)))

    tgt, extra = read(target, target.extra)
    src = tgt if labelled is target else read(labelled)[0]
    return DomainLoaded(dataset, src, tgt, extra.subset(np.flatnonzero(extra.ok)) if target.extra else None)


def _files_once(features, files: tuple[Path, ...], device: str, progress: bool) -> Inputs:
    """`load_file_inputs` of `files`, kept for the process's next cells while the files are unchanged."""
    stamps = tuple((p.stat().st_size, p.stat().st_mtime_ns) for p in map(Path, files))
    return _read_files(features, tuple(files), stamps, device, progress)


@functools.lru_cache(maxsize=2)  # a domain experiment's source and target
def _read_files(features, files: tuple[Path, ...], stamps: tuple, device: str, progress: bool) -> Inputs:
    return load_file_inputs(features, list(files), device=device, progress=progress)


def prepare_cell(cfg: RunConfig, folder: Path, experiment: str, variant: str, device: torch.device,
                 progress: bool = False, loaded: Loaded | None = None) -> Cell:
    """Start (or resume) the run folder, load this cell's inputs (or take them from `loaded`, read
    once for several cells), tune its hyperparameters when the config asks for it (on the training
    fold only), then split and normalise the inputs."""
    from pianolab.train.trainer import seed_everything

    _check_features(cfg)
    with _GLOBAL_RNG:  # never between another thread's seeding and its model initialisation
        seed_everything(cfg.train.seed)
    dataset = load_dataset(cfg.data.root, midi=cfg.data.midi)
    roles, meta = fold_roles(cfg, dataset, val_fraction(cfg))
    if not (folder / "meta.json").is_file() or not (folder / "state.pt").is_file():
        track.start_run(folder, cfg, {**meta, "experiment": experiment, "variant": variant,
                                      "threads": torch.get_num_threads()})
    if cfg.domain.target:  # other files than the dataset's: read per cell
        loaded = _load_domain(cfg, dataset, roles, device, progress)
    if loaded is None:
        loaded = load_items(cfg, dataset, np.concatenate([roles.train, roles.val, roles.test, roles.support]),
                            device, progress)
    if cfg.tuning.trials:
        from pianolab.ab.tuning import tune

        cfg = tune(cfg, loaded.dataset, np.concatenate([roles.train, roles.val]), folder, experiment, variant,
                   _trial_fitting(loaded, device))
    return make_cell(cfg, loaded, roles, folder, device)


def _trial_fitting(loaded: Loaded, device: torch.device):
    """How a tuning trial carves and fits its inner folds: through `carve_val`, `make_cell` and
    `fit_cell`, like a run (`pianolab.ab.tuning` receives it and imports nothing from here)."""
    from pianolab.ab.tuning import Fitting

    def fit(cfg: RunConfig, train: np.ndarray, val: np.ndarray, test: np.ndarray) -> np.ndarray:
        return fit_cell(make_cell(cfg, loaded, Roles(train, val, test), None, device), device)["test"]

    return Fitting(carve=lambda cfg, train, rng: carve_val(loaded.dataset, train, val_fraction(cfg), rng), fit=fit)


def _check_features(cfg: RunConfig) -> None:
    """Feature options that cannot work together, refused before any feature is loaded."""
    for option in ("peer_centred", "stack"):
        if getattr(cfg.features, option) and not cfg.features.vector:
            raise PianolabError(f"features.{option} needs vector features (features.vector)")
    if cfg.features.peer_centred and _copies(cfg) > 1:
        raise PianolabError("features.peer_centred does not combine with features.augment_factor > 1")


def make_cell(cfg: RunConfig, loaded: Loaded, roles: Roles, folder: Path | None, device: torch.device) -> Cell:
    """A cell on `roles`: inputs per role (training items with their augmented copies), scaling and
    target standardisation fitted on the training part."""
    part = loaded.parts(roles) if cfg.domain.target else \
        {r: loaded.rows(getattr(roles, r)) for r in ("train", "val", "test")}
    if len(roles.support):
        part["support"] = loaded.rows(roles.support)
    if cfg.features.peer_centred:
        part = _with_peers(cfg, loaded.dataset, roles, part)
    part["train"] = _with_augmented_copies(cfg, loaded.dataset, roles.train, part["train"], str(device))
    y_all = loaded.dataset.labels
    y_fold = _fold_targets(cfg, loaded.dataset, roles)
    targets = {"train": np.concatenate([y_fold["train"]] * _copies(cfg)), "val": y_fold["val"],
               "support": y_all[roles.support]}
    group = loaded.dataset.column("group")
    groups = {"train": np.concatenate([group[roles.train]] * _copies(cfg)), "val": group[roles.val]}
    prepared, norm = _prepare(cfg, part, targets, groups)
    if cfg.domain.target:  # standardise / coral: on the scaled vectors
        from pianolab.adapt.domain import align_features

        prepared = align_features(cfg.domain, prepared)
    return Cell(cfg, folder, loaded.dataset, roles, prepared, targets, norm, _fold_weights(cfg, loaded.dataset, roles))


def _fold_targets(cfg: RunConfig, dataset: Dataset, roles: Roles) -> dict[str, np.ndarray]:
    """The 'train' and 'val' targets by `data.targets` (`pianolab.data.rater_effects`): a rater model is
    fitted on the individual ratings of the training fold's items only (train and val), never a test
    item's; test metrics always use the official labels (`finish_cell`)."""
    if cfg.data.targets == "mean":
        return {"train": dataset.labels[roles.train], "val": dataset.labels[roles.val]}
    from pianolab.data.rater_effects import training_targets

    y = training_targets(cfg.data.targets, dataset, np.concatenate([roles.train, roles.val]))
    return {"train": y[:len(roles.train)], "val": y[len(roles.train):]}


def _fold_weights(cfg: RunConfig, dataset: Dataset, roles: Roles) -> np.ndarray | None:
    """Per-row weights of the training part by `train.sample_weights`, from its items' ratings only."""
    if cfg.train.sample_weights == "none":
        return None
    from pianolab.data.rater_effects import training_weights

    return np.concatenate([training_weights(cfg.train.sample_weights, dataset, roles.train)] * _copies(cfg))


def fit_cell(cell: Cell, device: torch.device) -> dict[str, np.ndarray]:
    """Fit the cell's model on its training part (saved in its folder, if any); returns the
    de-standardised predictions of its 'val' and 'test' items."""
    fit = _fit_estimator if cell.estimator else _fit_neural
    if cell.cfg.domain.method == "self_training":  # first pseudo-label the unlabelled target pool
        from pianolab.adapt.domain import method_params, self_train

        rounds = int(method_params(cell.cfg.domain)["rounds"])
        cell = self_train(cell, lambda c: fit(c, device), rounds)
    return fit(cell, device)


def finish_cell(cell: Cell, preds: dict[str, np.ndarray]) -> dict:
    """Write the test and validation predictions and the summary; returns the test summary."""
    dataset, roles, cfg = cell.dataset, cell.roles, cell.cfg
    stems, role_names, pred, true = [], [], [], []
    for r in ("test", "val", "support"):  # support: the model's predictions before adaptation
        idx = getattr(roles, r)
        if r == "support" and not len(idx):
            continue
        stems += [dataset.items[i].stem for i in idx]
        role_names += [r] * len(idx)
        pred.append(preds[r])
        true.append(dataset.labels[idx])
    pred, true = np.concatenate(pred), np.concatenate(true)
    track.write_predictions(cell.folder / "predictions.parquet", stems, role_names, pred, true,
                            cfg.data.fold, cfg.train.seed, cfg.data.repeat)
    n_test = len(roles.test)
    summary = summarise(true[:n_test], pred[:n_test], dataset.column("group")[roles.test])
    track.finish_run(cell.folder, summary)
    (cell.folder / "state.pt").unlink(missing_ok=True)
    return summary


def _with_peers(cfg: RunConfig, dataset: Dataset, roles: Roles, part: dict[str, Inputs]) -> dict[str, Inputs]:
    """Each role's vectors plus their deviations from the same excerpt's mean within that role."""
    groups = dataset.column("group")
    return {r: with_peer_columns(inp, groups[getattr(roles, r)]) for r, inp in part.items()}


def _copies(cfg: RunConfig) -> int:
    return max(1, cfg.features.augment_factor)


def _with_augmented_copies(cfg, dataset, train_idx, train: Inputs, device: str) -> Inputs:
    """Training inputs plus `augment_factor - 1` MIDI-augmented renderings of every training item."""
    if _copies(cfg) == 1:
        return train
    preset = cfg.augment.preset if cfg.augment.preset != "none" else "medium"
    paths = [dataset.items[i].midi_path for i in train_idx]
    parts = [train] + [load_inputs(cfg.features, paths, device=device, copy=c, augment=preset)
                       for c in range(1, _copies(cfg))]
    cat = lambda xs: None if xs[0] is None else np.concatenate(xs)  # noqa: E731
    return Inputs(cat([p.spec for p in parts]), cat([p.vector for p in parts]), train.vector_names,
                  np.concatenate([p.ok for p in parts]))


def _prepare(cfg: RunConfig, part: dict[str, Inputs], targets: dict[str, np.ndarray],
             groups: dict[str, np.ndarray]):
    """Fit vector scaling, top-k selection and target standardisation on the training part, and the
    stacked predictions on the training fold (`targets`, `groups`: labels and excerpts of 'train' and
    'val' rows)."""
    y_train = targets["train"]
    norm: dict = {"y_mean": y_train.mean(0), "y_std": y_train.std(0) + 1e-8}
    if part["train"].vector is not None:
        scaler = VectorScaler.fit(part["train"].vector)
        norm["scaler"] = scaler
        cols = np.arange(part["train"].vector.shape[1])
        if cfg.features.top_k:
            from pianolab.features.select import select_top_k

            cols = np.asarray(select_top_k(scaler.transform(part["train"].vector), y_train,
                                           cfg.features.top_k, cfg.train.seed))
        norm["columns"] = cols
        norm["vector_names"] = [part["train"].vector_names[c] for c in cols]
        for r, inp in part.items():
            if inp.vector is not None and len(inp.vector):
                part[r] = Inputs(inp.spec, scaler.transform(inp.vector)[:, cols], norm["vector_names"], inp.ok)
        if cfg.features.stack:
            part = _stacked(cfg, part, targets, groups, norm)
    # spectrogram statistics of the training part; `neural_parts` standardises on the device (arrays stay raw)
    if part["train"].spec is not None:
        spec = part["train"].spec
        norm["spec_mean"] = float(spec.mean())
        norm["spec_std"] = float(spec.std() + 1e-6)
    return part, norm


def _stacked(cfg: RunConfig, part: dict[str, Inputs], targets: dict[str, np.ndarray],
             groups: dict[str, np.ndarray], norm: dict) -> dict[str, Inputs]:
    """Append `cfg.features.stack`'s predictions to every role's scaled vectors (see features.stack):
    out-of-fold over the training fold ('train' and 'val' rows), from one estimator fitted on all of
    it for 'test'."""
    from pianolab.features.stack import STACK_NAMES, fit_stack, with_stack

    fold = [r for r in ("train", "val") if part[r].vector is not None and len(part[r].vector)]
    x = np.concatenate([part[r].vector for r in fold])
    z = (np.concatenate([targets[r] for r in fold]) - norm["y_mean"]) / norm["y_std"]
    oof, norm["stack"] = fit_stack(cfg.features.stack, x, z, np.concatenate([groups[r] for r in fold]),
                                   cfg.train.seed)
    norm["vector_names"] = norm["vector_names"] + STACK_NAMES
    out, start = {}, 0
    for r in part:  # train, val, test (and support)
        inp = part[r]
        if r in fold:
            n = len(inp.vector)
            vec, start = np.hstack([inp.vector, oof[start:start + n]]), start + n
        elif inp.vector is None or not len(inp.vector):
            vec = np.empty((0, len(norm["vector_names"])), np.float32)
        else:
            vec = with_stack(inp.vector, norm["stack"])
        out[r] = Inputs(inp.spec, vec, norm["vector_names"], inp.ok)
    return out


def _standardise(y: np.ndarray, norm: dict, shrink: float) -> np.ndarray:
    z = (y - norm["y_mean"]) / norm["y_std"]
    return z * (1.0 - shrink)  # label smoothing for regression: shrink toward the training mean


def _fit_estimator(cell: Cell, device) -> dict[str, np.ndarray]:
    from pianolab.models.classic import create_estimator
    from pianolab.models.persist import MODEL_FILE, save_model

    cfg, part, targets, norm, folder = cell.cfg, cell.part, cell.targets, cell.norm, cell.folder
    if part["train"].vector is None:
        raise PianolabError(f"model {cfg.model.name!r} needs vector features (features.vector)")
    est = create_estimator(cfg.model.name, seed=cfg.train.seed, bagging=cfg.ensemble.bagging, **cfg.model.params)
    groups = np.concatenate([cell.dataset.column("group")[cell.roles.train]] * _copies(cfg))  # inner folds
    est.fit(part["train"].vector, _standardise(targets["train"], norm, cfg.objective.label_smoothing), groups,
            sample_weight=cell.weights)
    if folder is not None:
        save_model({"estimator": est, "norm": _norm_state(norm), "config": to_dict(cfg)}, folder / MODEL_FILE)
        save_stack(norm, folder)
    out = {}
    for r in ("val", "test", "support"):
        x = part[r].vector if r in part else np.empty((0, 0))
        out[r] = (est.predict(x) * norm["y_std"] + norm["y_mean"]) if len(x) else np.empty((0, 19))
    if cfg.ensemble.tta > 1 and len(cell.roles.test):
        out["test"] = _tta(cell, lambda inp: est.predict(inp.vector), device) * norm["y_std"] + norm["y_mean"]
    return adapt_predictions(cell, out)


def _tta(cell: Cell, predict: Callable[[Inputs], np.ndarray], device) -> np.ndarray:
    """Standardised test predictions averaged over each test item and its `ensemble.tta - 1`
    MIDI-augmented copies (`pianolab.advanced.tta`), every copy prepared like the original."""
    from pianolab.advanced.tta import tta_mean
    from pianolab.features.stack import with_stack

    cfg, norm = cell.cfg, cell.norm
    paths = [cell.dataset.items[i].midi_path for i in cell.roles.test]
    copies = [cell.part["test"]]
    for c in range(1, cfg.ensemble.tta):
        inp = load_inputs(cfg.features, paths, device=str(device), copy=c, augment=cfg.ensemble.tta_preset)
        if not inp.ok.all():
            raise PianolabError(f"features failed for {int((~inp.ok).sum())} test-time copies (copy {c})")
        vec = inp.vector
        if vec is not None:
            vec = norm["scaler"].transform(vec)[:, norm["columns"]]
            vec = with_stack(vec, norm["stack"]) if "stack" in norm else vec.astype(np.float32)
        copies.append(Inputs(inp.spec, vec, norm.get("vector_names", inp.vector_names), inp.ok))
    return tta_mean(predict, copies)


def adapt_predictions(cell: Cell, preds: dict[str, np.ndarray], model=None, device: str = "cpu") -> dict:
    """`preds` with its 'test' (query) predictions adapted on the support by `cfg.adapt.strategy`
    (`pianolab.adapt.fewshot`); unchanged without support items. `model`: the fitted neural model."""
    if not len(cell.roles.support):
        return preds
    from pianolab.adapt.fewshot import TASKS, Episode, adapt

    a, ds, roles, part = cell.cfg.adapt, cell.dataset, cell.roles, cell.part
    tasks = ds.column(TASKS.get(a.tasks).column)
    vec = lambda r: part[r].vector if r in part else None  # noqa: E731
    ep = Episode(support_task=tasks[roles.support], support_y=cell.targets["support"], support_pred=preds["support"],
                 query_task=tasks[roles.test], query_pred=preds["test"], support_x=vec("support"),
                 query_x=vec("test"), train_x=vec("train"), train_y=cell.targets["train"],
                 train_task=np.concatenate([tasks[roles.train]] * _copies(cell.cfg)),
                 train_human=np.concatenate([~ds.column("deadpan")[roles.train]] * _copies(cell.cfg)),
                 y_mean=cell.norm["y_mean"], y_std=cell.norm["y_std"], model=model, device=str(device), k=a.k,
                 shrinkage=a.shrinkage, steps=a.steps, lr=a.lr, meta_steps=a.meta_steps, meta_batch=a.meta_batch,
                 meta_lr=a.meta_lr, seed=cell.cfg.train.seed)
    return {**preds, "test": adapt(a.strategy, ep)}


def _to_device(inp: Inputs, device: torch.device, norm: dict, spec: bool = True) -> dict[str, torch.Tensor]:
    """`inp` on `device`, spectrograms standardised there; `spec` False leaves them out."""
    batch = {}
    if inp.spec is not None and spec:
        from pianolab.train.trainer import standardise

        raw = torch.from_numpy(np.ascontiguousarray(inp.spec)).to(device)
        batch["spec"] = standardise(raw, norm["spec_mean"], norm["spec_std"])
    if inp.vector is not None:
        batch["vector"] = torch.from_numpy(np.ascontiguousarray(inp.vector)).to(device)
    return batch


def build_model(cfg: RunConfig, part_train: Inputs):
    from pianolab.models import create_model

    kw = {}
    if part_train.spec is not None:
        kw.update(in_channels=part_train.spec.shape[1], n_freq=part_train.spec.shape[2],
                  n_frames=part_train.spec.shape[3])
    if part_train.vector is not None:
        kw["in_features"] = part_train.vector.shape[1]
    if cfg.features.stack:  # the stacked predictions, last in the vector, become the model's prior
        kw["prior_columns"] = N_DIMS
    return create_model(cfg.model.name, **kw, **cfg.model.params), kw


@dataclass
class SharedSpec:
    """Every item's raw spectrogram, once on the device for several cells, and the row of each dataset
    index."""

    spec: torch.Tensor
    row_of: dict[int, int]


@dataclass
class Neural:
    """A neural cell's model, trainer and device-resident inputs (standardised targets)."""

    model: torch.nn.Module
    shape_kw: dict
    trainer: object
    train: object
    val: object
    test: object


def neural_parts(cell: Cell, device: torch.device, shared: SharedSpec | None = None) -> Neural:
    """Build the model (initialised from the cell's seed) and its trainer, move the inputs to `device`;
    with `shared`, the spectrograms are the cell's rows of that device tensor instead of a copy."""
    from pianolab.train.trainer import SharedRows, Tensors, Trainer, seed_everything

    cfg, part, targets, norm = cell.cfg, cell.part, cell.targets, cell.norm
    with _GLOBAL_RNG:  # cells trained as threads: no other one draws from the seeded generator meanwhile
        seed_everything(cfg.train.seed)
        model, shape_kw = build_model(cfg, part["train"])
    model.to(device)
    y = {"train": _standardise(targets["train"], norm, cfg.objective.label_smoothing),
         "val": _standardise(targets["val"], norm, 0.0)}
    roles = {}
    for r in ("train", "val", "test"):
        target = torch.from_numpy(y[r]).float().to(device) if r in y else None
        batch = _to_device(part[r], device, norm, spec=shared is None)
        if shared is None or part[r].spec is None:
            roles[r] = Tensors(batch, target)
        else:
            rows = torch.tensor([shared.row_of[int(i)] for i in getattr(cell.roles, r)], device=device)
            roles[r] = SharedRows(batch, target, shared.spec, rows, norm["spec_mean"], norm["spec_std"])
    if cfg.pretrain.method != "none":  # self-supervised, on the training fold's inputs (issue 23 §4)
        from pianolab.adapt.pretrain import pretrain

        pretrain(cell, model, [roles["train"], roles["val"]], device)
    train = roles["train"]
    trainer = Trainer(cfg, model, device, steps_per_epoch=max(1, len(train) // cfg.train.batch_size))
    return Neural(model, shape_kw, trainer, train, roles["val"], roles["test"])


def _fit_neural(cell: Cell, device) -> dict[str, np.ndarray]:
    if cell.cfg.ensemble.snapshots:  # the cyclic schedule the snapshots need
        import dataclasses

        cell = dataclasses.replace(cell, cfg=snapshot_config(cell.cfg))
    cfg, folder = cell.cfg, cell.folder
    net = neural_parts(cell, device)
    if cfg.domain.method == "dann":  # adversarial alignment with the unlabelled target pool
        net = _with_dann(cell, net, device)
    trainer, train, val = net.trainer, net.train, net.val
    log = _resume(folder, trainer) if folder is not None else (lambda rec: None)
    if cfg.continual.strategy != "none":  # two phases, old then new dimensions (issue 23 §3)
        from pianolab.adapt.continual import fit_continual

        fit_continual(cell, net, device, log, _mean_pearson)
        return save_neural(cell, net)
    budget = cfg.train.max_seconds
    started = time.perf_counter()
    snap = _Snapshots(cfg, folder, net.model)  # ensemble.snapshots (none when 0)
    net.snapshots = snap.states
    while trainer.epoch < cfg.train.epochs and not trainer.should_stop:
        rec = trainer.train_epoch(train)
        snap.after_epoch(trainer.epoch)
        if len(val) and trainer.epoch % cfg.train.eval_every == 0:
            rec.update(trainer.validate(val, _mean_pearson))
        log(rec)
        if folder is not None and trainer.epoch % cfg.train.checkpoint_every == 0 \
                and trainer.epoch < cfg.train.epochs:
            trainer.save_state(folder / "state.pt")
        if budget is not None and time.perf_counter() - started > budget:
            break  # equal wall time for every variant (plan budget); not bit-reproducible by nature
    return save_neural(cell, net)



def _with_dann(cell: Cell, net: Neural, device: torch.device) -> Neural:
    """`net` with a trainer whose model carries DANN's domain classifier (`pianolab.adapt.domain`);
    `net.model` stays the task model (what the checkpoint holds)."""
    from pianolab.adapt.domain import attach_dann, method_params
    from pianolab.train.trainer import Trainer

    pool = _to_device(cell.part["unlabelled"], device, cell.norm)
    steps = max(1, len(net.train) // cell.cfg.train.batch_size)
    return attach_dann(net, pool, method_params(cell.cfg.domain),
                       lambda model: Trainer(cell.cfg, model, device, steps_per_epoch=steps))

def _resume(folder: Path, trainer) -> Callable[[dict], None]:
    """Load the folder's state.pt if any, drop metrics records past it; returns the record writer."""
    state_path, metrics_path = folder / "state.pt", folder / "metrics.jsonl"
    if state_path.is_file():
        trainer.load_state(state_path)
    recs = [r for r in track.read_metrics(folder) if r["epoch"] <= trainer.epoch]
    metrics_path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return lambda rec: append_record(folder, rec)


def append_record(folder: Path, rec: dict) -> None:
    """Append one epoch record to the run folder's metrics.jsonl, stamped with the time it ended
    (`finished_at`, Unix seconds: when each run trained, e.g. for a benchmark's training window)."""
    with (folder / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({**rec, "finished_at": round(time.time(), 3)}) + "\n")


class _Snapshots:
    """`ensemble.snapshots`: the model's weights at the end of each learning-rate cycle
    (`pianolab.advanced.snapshots`), kept in `snapshots.pt` of the run folder so a resumed run has them."""

    def __init__(self, cfg: RunConfig, folder: Path | None, model: torch.nn.Module):
        from pianolab.advanced.snapshots import cycle_ends

        self.model, self.path = model, None if folder is None else folder / "snapshots.pt"
        self.ends = cycle_ends(cfg.train.epochs, cfg.ensemble.snapshots) if cfg.ensemble.snapshots else []
        self.states: list[dict] = []
        if self.ends and self.path is not None and self.path.is_file():
            self.states = torch.load(self.path, map_location="cpu", weights_only=True)

    def after_epoch(self, epoch: int) -> None:
        from pianolab.advanced.snapshots import cpu_copy

        if epoch in self.ends and len(self.states) < self.ends.index(epoch) + 1:
            self.states.append(cpu_copy(self.model.state_dict()))
            if self.path is not None:
                torch.save(self.states, self.path)


def snapshot_config(cfg: RunConfig) -> RunConfig:
    """`cfg` with the cyclic schedule of `ensemble.snapshots` (one cosine cycle per snapshot)."""
    if not cfg.ensemble.snapshots:
        return cfg
    from pianolab.config import replace

    return replace(cfg, optim={"schedule": "cyclic_cosine", "schedule_params": {"cycles": cfg.ensemble.snapshots}})


def _snapshot_predict(cell: Cell, net: Neural) -> Callable:
    """Standardised predictions of a role: the mean over the snapshots' predictions with
    `ensemble.snapshots`, else the model's (`net.model` ends with the last snapshot's weights)."""
    states = getattr(net, "snapshots", None)
    if not cell.cfg.ensemble.snapshots or not states:
        return net.trainer.predict

    def predict(t):
        out = []
        for state in states:
            net.model.load_state_dict(state)
            out.append(net.trainer.predict(t))
        return np.mean(out, axis=0)

    return predict


def save_neural(cell: Cell, net: Neural) -> dict[str, np.ndarray]:
    """Restore the best weights, write checkpoint.pt (with a folder), return de-standardised val/test
    predictions (with `ensemble.snapshots`: the mean over the snapshots; with `ensemble.tta`: over
    test-time copies)."""
    cfg, norm = cell.cfg, cell.norm
    net.trainer.restore_best()
    if cell.folder is not None:
        torch.save({"model": net.model.state_dict(), "model_name": cfg.model.name,
                    "model_kwargs": {**net.shape_kw, **cfg.model.params}, "norm": _norm_state(norm),
                    "config": json.dumps(to_dict(cfg))}, cell.folder / "checkpoint.pt")
        save_stack(norm, cell.folder)
    predict = _snapshot_predict(cell, net)
    preds = {r: predict(t) * norm["y_std"] + norm["y_mean"] if len(t) else np.empty((0, 19))
             for r, t in (("val", net.val), ("test", net.test))}
    if cfg.ensemble.tta > 1 and len(net.test):
        from pianolab.train.trainer import Tensors

        tensors = lambda inp: Tensors(_to_device(inp, net.trainer.device, norm), None)  # noqa: E731
        preds["test"] = _tta(cell, lambda inp: predict(tensors(inp)), net.trainer.device) * norm["y_std"] \
            + norm["y_mean"]
    if len(cell.roles.support):  # few-shot: the support items' predictions (packed cells have none)
        from pianolab.train.trainer import Tensors

        support = Tensors(_to_device(cell.part["support"], net.trainer.device, norm), None)
        preds["support"] = net.trainer.predict(support) * norm["y_std"] + norm["y_mean"]
    return adapt_predictions(cell, preds, net.model, net.trainer.device)


def _mean_pearson(y: np.ndarray, p: np.ndarray) -> float:
    """Mean per-dimension Pearson r (constant columns left out), the early-stopping score."""
    from pianolab.evaluate.metrics import nanmean, pearson_cols

    return nanmean(pearson_cols(y, p))


def _norm_state(norm: dict) -> dict:
    out = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in norm.items()
           if k not in ("scaler", "stack")}  # the stack estimator is saved beside the model (save_stack)
    if "scaler" in norm:
        out["scaler"] = norm["scaler"].state()
    return out
