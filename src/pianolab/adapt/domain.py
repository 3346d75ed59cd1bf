"""Domain adaptation (plan E2, issue 23 section 2): learn from a labelled source domain, rate a target.

A run config's `domain` section (`pianolab.config.DomainConfig`) names a **target** corpus and
optionally a **source** corpus (default `percepiano`, the project's performance MIDI), each a registered
domain (`DOMAINS`: `percepiano`, `beethoven`, `schubert`) or a folder of MIDI and/or audio. A model whose
features all come from audio (`pianolab.train.inputs.hears_audio`: `ast_ultra_tiny` on `log_mel`, trees on
`all_traditional`) hears the recordings as they are (their own log-mel or audio descriptors: one renderer
or SoundFont -> another); for any other
model they are transcribed to MIDI first (`pianolab.transcribe`, cached). MIDI files are rendered by
`features.renderer` as usual. A file named by a PercePiano stem (`<stem>.mid`, `<stem>.flac`) stands for
that item; other files are unlabelled extras of the target.

Inside each CV fold (so every variant of an experiment rates the same target items and stays paired):
- training items: the source corpus's files of the fold's training items (labelled), or with
  `train_on: target` the target's (the upper bound: the target domain's own labels);
- unlabelled target pool: the target's files of the fold's training items plus the extras (features
  only; their labels are never read);
- test items: the target's files of the fold's test items (labels used only for scoring).

Methods (`METHODS`, `domain.method`): `none`; `standardise` (target vectors standardised with the
target pool's own statistics); `coral` (source vectors recoloured to the pool's covariance and mean,
Sun et al. 2016); `self_training` (pseudo-labels for the pool from a model fitted on the source, then a
refit on both); `dann` (gradient-reversal domain classifier on the neural model's embedding, Ganin et
al. 2016; neural models with an `embed` only). A method that cannot act for the config's model is
refused at load time (`check_domain`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pianolab.errors import PianolabError
from pianolab.registry import Registry

MIDI_SUFFIXES = (".mid", ".midi")


# ---- corpora ---------------------------------------------------------------------------------------

DOMAINS: Registry[Callable] = Registry("domain")  # name -> (dataset -> {stem: MIDI path})
DOMAINS.add("percepiano", lambda ds: {it.stem: it.midi_path for it in ds.items})
for _composer in ("beethoven", "schubert"):
    DOMAINS.add(_composer, lambda ds, c=_composer: {it.stem: it.midi_path for it in ds.items
                                                    if it.composer.lower() == c})


@dataclass(frozen=True)
class Corpus:
    """A domain's files: `items` PercePiano stem -> file, `extra` files that name no item (unlabelled)."""

    name: str
    items: dict[str, Path]
    extra: tuple[Path, ...] = ()


def _audio_suffixes() -> tuple[str, ...]:
    from pianolab.audio import AUDIO_SUFFIXES

    return AUDIO_SUFFIXES


def resolve_corpus(spec: str, dataset, key: str = "domain", transcribe: bool = True) -> Corpus:
    """The corpus `spec` names: a registered domain, else a folder (searched recursively). With
    `transcribe`, recordings are transcribed to MIDI (cached); without, they are listed as they are."""
    if spec in DOMAINS:
        return Corpus(spec, dict(DOMAINS.get(spec)(dataset)))
    folder = Path(spec)
    if not folder.is_dir():
        raise PianolabError(f"{key}: {spec!r} is neither a registered domain ({', '.join(DOMAINS.names())}) "
                            "nor a folder")
    suffixes = MIDI_SUFFIXES + _audio_suffixes()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise PianolabError(f"{key}: folder {spec} holds no MIDI or audio file ({', '.join(suffixes)})")
    audio = [p for p in files if p.suffix.lower() not in MIDI_SUFFIXES]
    midi: dict[Path, Path] = {}
    if audio and transcribe:
        from pianolab.transcribe import transcribe_files

        midi, errors = transcribe_files(audio)
        if errors:
            raise PianolabError(f"{key}: {len(errors)} recording(s) could not be transcribed, e.g. {errors[0]}")
    items, extra, seen = {}, [], {}
    for original in files:  # stripped, as the dataset's keys are (one PercePiano file name starts with a space)
        path, stem = midi.get(original, original), original.stem.strip()
        if stem in seen:
            raise PianolabError(f"{key}: folder {spec} holds two files for {stem!r}: {seen[stem].name}, "
                                f"{original.name}")
        seen[stem] = original
        if stem in dataset.index:
            items[stem] = path
        else:
            extra.append(path)
    return Corpus(str(folder), items, tuple(extra))


def corpora(domain, dataset, transcribe: bool = True) -> tuple[Corpus, Corpus]:
    """(source, target) of a `DomainConfig`; refuses a source that shares files with the target."""
    target = resolve_corpus(domain.target, dataset, "domain.target", transcribe)
    source = resolve_corpus(domain.source or "percepiano", dataset, "domain.source", transcribe)
    if not target.items:
        raise PianolabError(f"domain.target: {domain.target} has no file named by a PercePiano stem, so no "
                            "target item can be scored")
    shared = [s for s, p in target.items.items() if s in source.items
              and Path(source.items[s]).resolve() == Path(p).resolve()]
    if shared:
        raise PianolabError(f"domain.source ({domain.source or 'percepiano'}) holds {len(shared)} of the "
                            f"target's items as the same files (e.g. {shared[0]!r}): training on them would use "
                            "target labels; name a source without them (e.g. domain.source: beethoven)")
    return source, target


@dataclass(frozen=True)
class DomainRoles:
    """Dataset indices of a fold's parts under a domain shift (see the module docstring)."""

    train: np.ndarray
    test: np.ndarray
    unlabelled: np.ndarray
    source: Corpus
    target: Corpus

    def meta(self) -> dict:
        return {"domain_source": self.source.name, "domain_target": self.target.name,
                "n_unlabelled": int(len(self.unlabelled) + len(self.target.extra))}


def domain_roles(domain, dataset, train: np.ndarray, test: np.ndarray) -> DomainRoles:
    """The fold's training (`train`) and test (`test`) dataset indices restricted to the domains (by the
    corpora's stems: nothing is transcribed here)."""
    source, target = corpora(domain, dataset, transcribe=False)
    stems = dataset.stems
    in_target = np.array([stems[i] in target.items for i in train], dtype=bool)
    labelled = target if domain.train_on == "target" else source
    fit_idx = np.array([i for i in train if stems[i] in labelled.items], dtype=int)
    test_idx = np.array([i for i in test if stems[i] in target.items], dtype=int)
    if not len(fit_idx) or not len(test_idx):
        raise PianolabError(f"domain: this fold has {len(fit_idx)} training item(s) in "
                            f"{labelled.name} and {len(test_idx)} test item(s) in {target.name}")
    return DomainRoles(fit_idx, test_idx, np.asarray(train, dtype=int)[in_target], source, target)


@dataclass
class DomainLoaded:
    """A domain cell's inputs: `source` rows (training part, by dataset index), `target` rows (test
    items and the unlabelled pool), `extra` the target's unlabelled files (or None). `source` and
    `target` are `pianolab.train.run.Loaded` (anything with `rows(idx)`)."""

    dataset: object
    source: object
    target: object
    extra: object | None

    def parts(self, roles) -> dict:
        """Inputs per role: train and val from the source, test and unlabelled from the target."""
        part = {"train": self.source.rows(roles.train), "val": self.source.rows(roles.val),
                "test": self.target.rows(roles.test)}
        pool = self.target.rows(roles.unlabelled)
        if self.extra is not None:
            pool = concat_inputs(pool, self.extra)
        part["unlabelled"] = pool
        return part


def concat_inputs(a, b):
    """Rows of `a` then rows of `b` (`pianolab.train.inputs.Inputs`)."""
    cat = lambda x, y: None if x is None else np.concatenate([x, y])  # noqa: E731
    return dataclasses.replace(a, spec=cat(a.spec, b.spec), vector=cat(a.vector, b.vector),
                               ok=np.concatenate([a.ok, b.ok]))


# ---- methods ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Method:
    """A domain-adaptation method: the model families it acts for, its parameters and defaults, an
    optional feature transform on the scaled vectors of a cell's parts, an optional fit wrapper."""

    name: str
    families: frozenset[str]  # 'estimator' and/or 'neural'
    params: dict
    transform: Callable[[dict, dict], dict] | None = None  # (parts {role: (n, D)}, params) -> parts
    vectors: bool = False  # acts on feature vectors only


METHODS: Registry[Method] = Registry("domain adaptation method")
BOTH = frozenset({"estimator", "neural"})


def standardise(parts: dict[str, np.ndarray], params: dict) -> dict[str, np.ndarray]:
    """Target rows (test, unlabelled) standardised with the unlabelled pool's mean and std; the source
    rows keep the training part's scaling (per-domain standardisation)."""
    pool = parts["unlabelled"].astype(np.float64)
    mean, std = pool.mean(0), pool.std(0)
    std = np.where(std > 1e-8, std, 1.0)
    out = dict(parts)
    for r in ("test", "unlabelled"):
        if len(parts[r]):
            out[r] = ((parts[r] - mean) / std).astype(np.float32)
    return out


def _sqrtm(c: np.ndarray, inverse: bool = False) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    w = np.clip(w, 1e-12, None)
    return (v * (w ** (-0.5 if inverse else 0.5))) @ v.T


def coral_map(source: np.ndarray, target: np.ndarray, eps: float = 1.0):
    """(apply) mapping source rows to the target's covariance and mean: x -> (x - mu_s) Cs^-1/2 Ct^1/2
    + mu_t with C = cov + eps * I (CORAL, Sun, Feng and Saenko 2016; eps 1 as in the paper)."""
    s, t = source.astype(np.float64), target.astype(np.float64)
    if len(s) < 2 or len(t) < 2:
        raise PianolabError(f"coral needs at least 2 source and 2 target rows, got {len(s)} and {len(t)}")
    eye = np.eye(s.shape[1])
    a = _sqrtm(np.cov(s, rowvar=False) + eps * eye, inverse=True) @ _sqrtm(np.cov(t, rowvar=False) + eps * eye)
    mu_s, mu_t = s.mean(0), t.mean(0)
    return lambda x: ((x.astype(np.float64) - mu_s) @ a + mu_t).astype(np.float32)


def coral(parts: dict[str, np.ndarray], params: dict) -> dict[str, np.ndarray]:
    """Source rows (train, val) recoloured to the unlabelled target pool's covariance; target rows kept."""
    apply = coral_map(parts["train"], parts["unlabelled"], float(params["eps"]))
    return {**parts, **{r: apply(parts[r]) for r in ("train", "val") if len(parts[r])}}


METHODS.add("none", Method("none", BOTH, {}))
METHODS.add("standardise", Method("standardise", BOTH, {}, standardise, vectors=True))
METHODS.add("coral", Method("coral", BOTH, {"eps": 1.0}, coral, vectors=True))
METHODS.add("self_training", Method("self_training", BOTH, {"rounds": 1}))
METHODS.add("dann", Method("dann", frozenset({"neural"}), {"weight": 1.0, "hidden": 64}))


def method_params(domain) -> dict:
    """The method's defaults updated with `domain.params` (unknown keys refused)."""
    m = METHODS.get(domain.method)
    unknown = sorted(set(domain.params) - set(m.params))
    if unknown:
        raise PianolabError(f"domain.params: method {m.name!r} does not accept {', '.join(unknown)}; "
                            f"valid: {', '.join(sorted(m.params)) or 'none'}")
    return {**m.params, **domain.params}


def align_features(domain, part: dict) -> dict:
    """Apply the method's feature transform to the scaled vectors of a cell's parts (`Inputs` by role)."""
    m = METHODS.get(domain.method)
    if m.transform is None:
        return part
    if not len(part["unlabelled"].vector):
        raise PianolabError(f"domain.method {m.name}: the fold has no unlabelled target item")
    moved = m.transform({r: inp.vector for r, inp in part.items()}, method_params(domain))
    return {r: dataclasses.replace(inp, vector=moved[r]) for r, inp in part.items()}


def self_train(cell, fit: Callable, rounds: int):
    """The cell to fit last: its training part plus the unlabelled pool with pseudo-labels, each round's
    labels predicted by a model fitted (without a folder: nothing written) on the previous round's
    cell. The pool's own labels are never read: its rows get the predictions only."""
    pool = cell.part["unlabelled"]
    if not len(pool.ok):
        raise PianolabError("domain.method self_training: the fold has no unlabelled target item")
    current = cell
    for _ in range(rounds):
        probe = dataclasses.replace(current, folder=None, part={**current.part, "test": pool})
        pseudo = np.asarray(fit(probe)["test"], dtype=np.float64)
        current = dataclasses.replace(
            cell, part={**cell.part, "train": concat_inputs(cell.part["train"], pool)},
            targets={**cell.targets, "train": np.concatenate([cell.targets["train"], pseudo])})
    return current


# ---- DANN ------------------------------------------------------------------------------------------

class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.scale * grad, None


def grad_reverse(x: torch.Tensor, scale: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Identity forward; the gradient times -`scale` backward (Ganin and Lempitsky 2015)."""
    return _Reverse.apply(x, scale)


class DannModel(nn.Module):
    """The task model plus a domain classifier on its embedding; `forward` is the task model's, so a
    trainer's predictions are unchanged. `domain_loss(source, target, scale)`: BCE of telling the
    domains apart, through the reversed gradient."""

    def __init__(self, task: nn.Module, width: int, hidden: int):
        super().__init__()
        self.task = task
        self.domain = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.task(batch)

    def domain_loss(self, source: dict, target: dict, scale) -> torch.Tensor:
        hs, ht = self.task.embed(source), self.task.embed(target)
        logits = self.domain(grad_reverse(torch.cat([hs, ht]), scale)).squeeze(-1)
        label = torch.cat([hs.new_zeros(len(hs)), ht.new_ones(len(ht))]).float()
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), label)


def attach_dann(net, pool: dict[str, torch.Tensor], params: dict, make_trainer: Callable):
    """`net` (`pianolab.train.run.Neural`) with its model wrapped in a `DannModel` and a trainer built
    by `make_trainer(model)` whose step adds weight x lambda_p x the domain loss on a batch of the
    unlabelled pool (`pool`: device tensors by input key); lambda_p = 2 / (1 + exp(-10 p)) - 1 over
    the training progress p, as in DANN."""
    task = net.model
    with torch.no_grad():
        width = task.embed({k: v[:1] for k, v in pool.items()}).shape[-1]
    model = DannModel(task, width, int(params["hidden"])).to(next(task.parameters()).device)
    trainer = make_trainer(model)
    n = len(next(iter(pool.values())))
    weight = float(params["weight"])
    task_step = trainer.step_fn

    def step(batch: dict, target: torch.Tensor) -> torch.Tensor:
        loss = task_step(batch, target)
        rows = torch.randint(n, (len(target),), device=target.device, generator=trainer.generator)
        p = trainer.steps.float() / trainer.total_steps
        scale = 2.0 / (1.0 + torch.exp(-10.0 * p)) - 1.0
        return loss + weight * model.domain_loss(batch, {k: v[rows] for k, v in pool.items()}, scale)

    trainer.step_fn = step
    return dataclasses.replace(net, trainer=trainer)  # net.model stays the task model


# ---- load-time checks ------------------------------------------------------------------------------

TRAIN_ON = ("source", "target")
_NOT_WITH_DOMAIN = {"tuning.trials": lambda c: c.tuning.trials > 0,
                    "features.augment_factor": lambda c: c.features.augment_factor > 1,
                    "features.stack": lambda c: bool(c.features.stack),
                    "features.peer_centred": lambda c: c.features.peer_centred}


def _family(cfg) -> str:
    from pianolab.models.classic import ESTIMATORS

    return "estimator" if cfg.model.name in ESTIMATORS else "neural"


def _has_embed(name: str) -> bool:
    import typing

    from pianolab.models import MODELS

    return hasattr(typing.get_type_hints(MODELS.get(name)).get("return"), "embed")


def check_domain(cfg, source: str, resolve: bool = True) -> None:
    """Refuse a `domain` section that cannot act: one line `<source>: domain.<key>: <why>`."""
    d = cfg.domain
    where = f"{source}: domain"
    try:
        m = METHODS.get(d.method)
        method_params(d)
    except PianolabError as e:
        raise PianolabError(f"{where}: {e}") from None
    if d.train_on not in TRAIN_ON:
        raise PianolabError(f"{where}.train_on: must be one of {', '.join(TRAIN_ON)}, got {d.train_on!r}")
    if d.target is None:
        for key, off in (("method", d.method == "none"), ("source", d.source is None),
                         ("train_on", d.train_on == "source"), ("params", not d.params)):
            if not off:
                raise PianolabError(f"{where}.{key}: has no effect: no domain.target is set")
        return
    family = _family(cfg)
    if family not in m.families:
        raise PianolabError(f"{where}.method: {m.name} needs a neural model, and {cfg.model.name!r} is a "
                            "scikit-learn estimator (no gradient training)")
    if m.name == "dann" and not _has_embed(cfg.model.name):
        raise PianolabError(f"{where}.method: dann needs a model with an embedding (embed), and "
                            f"{cfg.model.name!r} has none")
    if m.vectors and not cfg.features.vector:
        raise PianolabError(f"{where}.method: {m.name} acts on feature vectors, and the config names none "
                            "(features.vector)")
    if d.train_on == "target" and m.name != "none":
        raise PianolabError(f"{where}.train_on: target is the upper bound (training on the target's own "
                            f"labels); it takes method none, not {m.name}")
    for key, on in _NOT_WITH_DOMAIN.items():
        if on(cfg):
            raise PianolabError(f"{source}: {key}: not supported together with domain.target")
    if resolve:
        from pianolab.data.percepiano import load_dataset

        try:
            corpora(d, load_dataset(cfg.data.root, midi=cfg.data.midi), transcribe=False)
        except PianolabError as e:
            raise PianolabError(f"{source}: {e}") from None


def check_paired(configs: dict, source: str) -> None:
    """Every variant of an experiment rates the same target items (same `domain.target`), so that its
    cells stay paired fold by fold."""
    targets = {v: c.domain.target for v, c in configs.items()}
    if len(set(targets.values())) > 1:
        shown = ", ".join(f"{v}: {t}" for v, t in targets.items())
        raise PianolabError(f"{source}: domain.target differs between variants ({shown}); a variant must "
                            "rate the same target items as the baseline")

