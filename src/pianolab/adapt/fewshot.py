"""Few-shot adaptation (issue 23 §1): k rated items of a new piece or performer correct the rest.

Protocol inside a CV fold (`draw_support`): the test items are grouped into tasks (`TASKS`: excerpt
group, or performer). For every task, a permutation of its human (non-deadpan) items is drawn with a
seed that depends only on (split seed, repeat, fold, task), never on the strategy or on k; its first k
items are the support, every other item of the task (deadpan renditions included) is the query. So
variants at the same k are scored on identical query items, and the support at k=3 holds the one at
k=1. A task with fewer than k + 2 human items gets no support and leaves the query (for every
strategy alike). Deadpan renditions are never support.

Strategies (`FEWSHOT`, by name) map an `Episode` (the fitted model's predictions on support and
query, the support's labels, the vectors, the training fold) to adapted query predictions:
- none: the model's predictions (k > 0 still draws the support, so the query is the same);
- offset: each dimension shifted by the task's mean support residual (label - prediction);
- shrinkage: that offset times n / (n + lambda) (`adapt.shrinkage`);
- residual (estimators): a kernel regression on the support residuals, so that query items close to
  a support item in feature space take more of its residual: correction(q) = sum_j w_qj r_j /
  (sum_j w_qj + lambda), w_qj = exp(-|x_q - x_j|^2 / (2 h^2)), h = the median distance between two
  items of one task in the training fold (fitted on training items only). With all w = 1 it is
  `shrinkage`; with lambda = 0 and k = 1 it is `offset`;
- finetune_head (neural): `adapt.steps` SGD steps on the support on a copy of the head's parameters;
- maml / fomaml / reptile (neural, vector-only models): the trained model is first meta-trained on
  tasks of the training fold (support of k human items, query = the task's other items), with an
  inner loop over a copy of every parameter (`torch.func.functional_call`), then adapted per test task
  on its support with the same inner loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pianolab.errors import PianolabError
from pianolab.registry import Registry


@dataclass(frozen=True)
class Task:
    """What a task is: `column` is the item attribute grouping test items; a split whose guards hold
    one of `guards` keeps every task whole on one side of a fold."""

    column: str
    guards: tuple[str, ...]


TASKS: Registry[Task] = Registry("few-shot task kind")
TASKS.add("excerpt", Task("group", ("group", "music_group")))
TASKS.add("performer", Task("performer", ("performer",)))


@dataclass
class Episode:
    """One fold's adaptation problem. Labels and predictions are on the 0..1 label scale, (n, 19);
    `*_task` name each item's task; vectors are the model's scaled inputs (None without vectors);
    `model` is the fitted neural model (None for an estimator), which reads standardised vectors and
    predicts standardised targets (`y_mean`, `y_std`)."""

    support_task: np.ndarray
    support_y: np.ndarray
    support_pred: np.ndarray
    query_task: np.ndarray
    query_pred: np.ndarray
    support_x: np.ndarray | None = None
    query_x: np.ndarray | None = None
    train_x: np.ndarray | None = None
    train_y: np.ndarray | None = None
    train_task: np.ndarray | None = None
    train_human: np.ndarray | None = None
    y_mean: np.ndarray | float = 0.0
    y_std: np.ndarray | float = 1.0
    model: object = None
    device: str = "cpu"
    k: int = 1
    shrinkage: float = 1.0
    steps: int = 5
    lr: float = 0.01
    meta_steps: int = 50
    meta_batch: int = 8
    meta_lr: float = 1e-4
    seed: int = 0

    def by_task(self):
        """(task, support rows, query rows) of every task with a query."""
        for t in np.unique(self.query_task):
            yield t, np.flatnonzero(self.support_task == t), np.flatnonzero(self.query_task == t)


@dataclass(frozen=True)
class Strategy:
    """A registered adaptation: `fn(episode) -> query predictions (n_query, 19)`; `family` is 'any',
    'estimator' (scikit-learn models) or 'neural' (vector-only torch models)."""

    fn: Callable[[Episode], np.ndarray]
    family: str
    description: str


FEWSHOT: Registry[Strategy] = Registry("few-shot strategy")
SHRINKING = ("shrinkage", "residual")  # read adapt.shrinkage
GRADIENT = ("finetune_head", "maml", "fomaml", "reptile")  # read adapt.steps and adapt.lr
META = ("maml", "fomaml", "reptile")  # read adapt.meta_*


def strategy(name: str, family: str, description: str):
    def deco(fn):
        FEWSHOT.add(name, Strategy(fn, family, description))
        return fn

    return deco


# ---- the protocol -------------------------------------------------------------------------------

def task_seed(split_seed: int, repeat: int, fold: int, task: str) -> int:
    """The support draw's seed: a hash of (split seed, repeat, fold, task), nothing else."""
    digest = hashlib.sha256(f"fewshot:{split_seed}:{repeat}:{fold}:{task}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def draw_support(tasks: np.ndarray, human: np.ndarray, k: int, split_seed: int, repeat: int,
                 fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(support, query) positions into the test items (`tasks`: each one's task, `human`: False for
    deadpan renditions): k human items of each task with at least k + 2 of them as support, the
    task's other items as query; tasks with fewer human items leave the query."""
    support, query = [], []
    for t in np.unique(tasks):
        rows = np.flatnonzero(tasks == t)
        people = rows[human[rows]]
        if len(people) < k + 2:
            continue
        order = np.random.default_rng(task_seed(split_seed, repeat, fold, str(t))).permutation(len(people))
        chosen = people[np.sort(order[:k])]
        support.append(chosen)
        query.append(np.setdiff1d(rows, chosen))
    if not query:
        raise PianolabError(f"adapt.k = {k}: no test task has k + 2 human items, so there is no query")
    return np.concatenate(support), np.concatenate(query)


def refusal(strategy_name: str, k: int, tasks: str, split_guards: tuple[str, ...], estimator: bool,
            inputs: tuple[str, ...], model: str, split: str) -> str | None:
    """Why this adaptation cannot run with this model and split (one line), or None."""
    s = FEWSHOT.get(strategy_name)
    task = TASKS.get(tasks)
    if strategy_name != "none" and k == 0:
        return f"strategy {strategy_name!r} adapts on support items and adapt.k is 0"
    if s.family == "estimator" and not estimator:
        return f"strategy {strategy_name!r} adapts scikit-learn estimators and model {model!r} is neural " \
               f"(use finetune_head, maml, fomaml or reptile)"
    if s.family == "neural" and estimator:
        return f"strategy {strategy_name!r} needs a neural model's gradients and model {model!r} is a " \
               f"scikit-learn estimator (use residual)"
    if s.family == "neural" and tuple(inputs) != ("vector",):
        return f"strategy {strategy_name!r} adapts models that read only the feature vector; model " \
               f"{model!r} reads {', '.join(inputs)}"
    if k and not set(task.guards) & set(split_guards):
        return f"adapt.tasks {tasks!r} needs a split that keeps each {task.column} on one side " \
               f"(guards {', '.join(task.guards)}); split {split!r} guards {', '.join(split_guards) or 'nothing'}"
    return None


def adapt(name: str, episode: Episode) -> np.ndarray:
    """The query predictions of `episode` adapted by strategy `name`."""
    out = np.asarray(FEWSHOT.get(name).fn(episode), dtype=np.float64)
    if out.shape != episode.query_pred.shape:
        raise PianolabError(f"few-shot strategy {name!r} returned {out.shape}, want {episode.query_pred.shape}")
    return out


# ---- offset-like strategies (any model) ---------------------------------------------------------

@strategy("none", "any", "the model's predictions, unadapted")
def _none(ep: Episode) -> np.ndarray:
    return ep.query_pred.copy()


def _shifted(ep: Episode, lam: float) -> np.ndarray:
    out = ep.query_pred.copy()
    for _, s, q in ep.by_task():
        if len(s):
            resid = ep.support_y[s] - ep.support_pred[s]
            out[q] += resid.mean(0) * len(s) / (len(s) + lam)
    return out


@strategy("offset", "any", "each dimension shifted by the support's mean residual")
def _offset(ep: Episode) -> np.ndarray:
    return _shifted(ep, 0.0)


@strategy("shrinkage", "any", "the offset times n / (n + adapt.shrinkage)")
def _shrinkage(ep: Episode) -> np.ndarray:
    return _shifted(ep, ep.shrinkage)


def bandwidth(x: np.ndarray, tasks: np.ndarray) -> float:
    """Median distance between two items of one task (training items): the kernel's length scale."""
    d = []
    for t in np.unique(tasks):
        xs = x[tasks == t]
        if len(xs) > 1:
            sq = ((xs[:, None, :] - xs[None, :, :]) ** 2).sum(-1)
            d.append(np.sqrt(sq[np.triu_indices(len(xs), 1)]))
    if not d:
        raise PianolabError("residual: no training task has two items to set the kernel bandwidth")
    return float(np.median(np.concatenate(d))) + 1e-12


@strategy("residual", "estimator", "kernel regression on the support residuals in feature space")
def _residual(ep: Episode) -> np.ndarray:
    if ep.query_x is None or ep.train_x is None:
        raise PianolabError("residual adaptation needs vector features")
    h = bandwidth(ep.train_x, ep.train_task)
    out = ep.query_pred.copy()
    for _, s, q in ep.by_task():
        if not len(s):
            continue
        resid = ep.support_y[s] - ep.support_pred[s]  # (k, 19)
        sq = ((ep.query_x[q][:, None, :] - ep.support_x[s][None, :, :]) ** 2).sum(-1)  # (nq, k)
        w = np.exp(-sq / (2 * h * h))
        out[q] += (w @ resid) / (w.sum(1, keepdims=True) + ep.shrinkage)
    return out


# ---- gradient strategies (neural, vector-only) ---------------------------------------------------

def inner_loop(model, params: dict, trainable: set[str], x, y, steps: int, lr: float,
               create_graph: bool = False) -> dict:
    """`steps` SGD steps of the MSE of `model` on (x, y), on the parameters `params` (name -> tensor;
    those named in `trainable` move): returns new tensors; `params` and the model's own parameters
    are never changed. `create_graph` keeps the graph for second-order MAML."""
    import torch
    from torch.func import functional_call

    params = dict(params)
    names = [n for n in params if n in trainable]
    for _ in range(steps):
        pred = functional_call(model, params, ({"vector": x},))
        loss = torch.mean((pred - y) ** 2)
        grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph)
        for n, g in zip(names, grads, strict=True):
            params[n] = params[n] - lr * g
    return params


def _tensors(ep: Episode, x: np.ndarray, y: np.ndarray | None = None):
    import torch

    tx = torch.as_tensor(np.asarray(x, np.float32), device=ep.device)
    if y is None:
        return tx
    z = (np.asarray(y, np.float64) - ep.y_mean) / ep.y_std
    return tx, torch.as_tensor(z.astype(np.float32), device=ep.device)


def _adapted_per_task(ep: Episode, trainable: Callable[[str], bool]) -> np.ndarray:
    """Adapt a copy of the parameters on each task's support (`ep.steps` SGD steps), predict its query."""
    import torch
    from torch.func import functional_call

    model = ep.model
    model.eval()
    base = {n: p.detach() for n, p in model.named_parameters()}
    names = {n for n in base if trainable(n)}
    out = ep.query_pred.copy()
    for _, s, q in ep.by_task():
        if not len(s):
            continue
        xs, zs = _tensors(ep, ep.support_x[s], ep.support_y[s])
        params = {n: (p.clone().requires_grad_(True) if n in names else p) for n, p in base.items()}
        with torch.enable_grad():
            params = inner_loop(model, params, names, xs, zs, ep.steps, ep.lr)
        with torch.no_grad():
            fixed = {n: p.detach() for n, p in params.items()}
            z = functional_call(model, fixed, ({"vector": _tensors(ep, ep.query_x[q])},))
        out[q] = z.double().cpu().numpy() * ep.y_std + ep.y_mean
    return out


@strategy("finetune_head", "neural", "adapt.steps SGD steps of the head (last block) on the support")
def _finetune_head(ep: Episode) -> np.ndarray:
    return _adapted_per_task(ep, lambda n: n.startswith("head."))


def meta_train(ep: Episode, rule: str) -> None:
    """Meta-train `ep.model` in place on tasks of the training fold: each outer step draws
    `meta_batch` tasks, splits each into k human support items and a query of its other items, and
    updates the model with Adam (`meta_lr`) by `rule`: 'maml' (second-order gradient of the query loss
    through the inner loop), 'fomaml' (the query gradient at the adapted parameters) or 'reptile'
    (the move of the adapted parameters, inner loop on support and query together)."""
    import torch
    from torch.func import functional_call

    model = ep.model
    model.eval()  # no dropout noise in the inner loops
    tasks = np.asarray(ep.train_task)
    human = np.ones(len(tasks), bool) if ep.train_human is None else np.asarray(ep.train_human)
    eligible = [t for t in np.unique(tasks) if (human & (tasks == t)).sum() >= ep.k + 2]
    if not eligible:
        raise PianolabError(f"{rule}: no training task has k + 2 = {ep.k + 2} human items")
    rng = np.random.default_rng(ep.seed + 104729)
    opt = torch.optim.Adam(model.parameters(), lr=ep.meta_lr)
    params = dict(model.named_parameters())
    names = set(params)
    for _ in range(ep.meta_steps):
        opt.zero_grad(set_to_none=True)
        grads = {n: torch.zeros_like(p) for n, p in params.items()}
        for t in rng.choice(eligible, size=min(ep.meta_batch, len(eligible)), replace=False):
            rows = np.flatnonzero(tasks == t)
            people = rows[human[rows]]
            s = rng.choice(people, size=ep.k, replace=False)
            q = np.setdiff1d(rows, s)
            xs, zs = _tensors(ep, ep.train_x[s], ep.train_y[s])
            xq, zq = _tensors(ep, ep.train_x[q], ep.train_y[q])
            if rule == "maml":
                fast = inner_loop(model, params, names, xs, zs, ep.steps, ep.lr, create_graph=True)
                loss = torch.mean((functional_call(model, fast, ({"vector": xq},)) - zq) ** 2)
                for n, g in zip(list(params), torch.autograd.grad(loss, list(params.values())), strict=True):
                    grads[n] += g
            elif rule == "fomaml":
                start = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
                fast = {n: p.detach().requires_grad_(True)
                        for n, p in inner_loop(model, start, names, xs, zs, ep.steps, ep.lr).items()}
                loss = torch.mean((functional_call(model, fast, ({"vector": xq},)) - zq) ** 2)
                for n, g in zip(list(fast), torch.autograd.grad(loss, list(fast.values())), strict=True):
                    grads[n] += g
            else:  # reptile
                start = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
                xa, za = torch.cat([xs, xq]), torch.cat([zs, zq])
                fast = inner_loop(model, start, names, xa, za, ep.steps, ep.lr)
                for n in names:
                    grads[n] += (params[n].detach() - fast[n].detach()) / ep.lr
        n_tasks = min(ep.meta_batch, len(eligible))
        for n, p in params.items():
            p.grad = grads[n] / n_tasks
        opt.step()


def _meta(rule: str) -> Callable[[Episode], np.ndarray]:
    def fn(ep: Episode) -> np.ndarray:
        import torch

        if ep.train_x is None or ep.train_y is None or ep.train_task is None:
            raise PianolabError(f"{rule} needs the training fold's vectors, labels and tasks")
        with torch.enable_grad():
            meta_train(ep, rule)
        return _adapted_per_task(ep, lambda n: True)

    return fn


for _rule, _text in (("maml", "MAML (second order) meta-training, then inner-loop adaptation on the support"),
                     ("fomaml", "first-order MAML meta-training, then inner-loop adaptation on the support"),
                     ("reptile", "Reptile meta-training, then inner-loop adaptation on the support")):
    FEWSHOT.add(_rule, Strategy(_meta(_rule), "neural", _text))
