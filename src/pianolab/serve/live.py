"""`pianolab ab live`: champion against challenger on the ratings that arrived for served performances.

Pairs are the performances that both models predicted (the answer and the shadow prediction of one
request) and that got feedback; the tests are the offline engine's item-level ones
(`pianolab.ab.stats`): a sign-flip permutation test of the per-performance squared-error reduction and
a bootstrap interval of the mean-Pearson difference, both resampling whole excerpt groups when the
feedback names them (else performances). Promotion is supported when the challenger's errors are
smaller with permutation p < alpha.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pianolab.ab import stats
from pianolab.data.percepiano import DIMENSIONS
from pianolab.errors import PianolabError
from pianolab.serve.store import PredictionLog

MIN_PAIRS = 10


@dataclass(frozen=True)
class LiveResult:
    champion: str
    challenger: str
    n_pairs: int
    n_groups: int
    mse_champion: float
    mse_challenger: float
    permutation: stats.Resampled
    bootstrap: stats.Resampled
    alpha: float
    supported: bool
    verdict: str


def paired(log: PredictionLog, champion: str, challenger: str):
    """(y, pred champion, pred challenger, groups) over the performances both models predicted and
    that got feedback (the latest prediction of each model per input hash)."""
    fb, pred = log.feedback(), log.predictions()
    dims = list(DIMENSIONS)
    a = pred[pred["model"] == champion].drop_duplicates("input_hash", keep="last").set_index("input_hash")
    b = pred[pred["model"] == challenger].drop_duplicates("input_hash", keep="last").set_index("input_hash")
    fb = fb[fb["input_hash"].isin(a.index) & fb["input_hash"].isin(b.index)]
    keys = fb["input_hash"].to_numpy()
    groups = np.where(fb["grp"].isna(), fb["input_hash"], fb["grp"]).astype(str)
    return (fb[dims].to_numpy(float), a.loc[keys, dims].to_numpy(float), b.loc[keys, dims].to_numpy(float), groups)


def compare(log: PredictionLog, champion: str, challenger: str, alpha: float = 0.05, seed: int = 0,
            n_resamples: int = 5000) -> LiveResult:
    from pianolab.evaluate.metrics import METRICS

    y, pa, pb, groups = paired(log, champion, challenger)
    if len(y) < MIN_PAIRS:
        raise PianolabError(f"only {len(y)} performances have feedback and predictions of both {champion} "
                            f"and {challenger}; need at least {MIN_PAIRS}")
    ea, eb = (pa - y) ** 2, (pb - y) ** 2
    perm = stats.permutation_test_items(ea, eb, groups=groups, n_perm=n_resamples, alpha=alpha, seed=seed)
    boot = stats.bootstrap_groups(y, pa, pb, lambda t, p: METRICS.get("pearson")(t, p).value, groups=groups,
                                  n_boot=min(n_resamples, 2000), alpha=alpha, seed=seed)
    supported = perm.p < alpha and perm.estimate > 0
    if supported:
        verdict = f"promotion supported: the challenger's squared errors are smaller (p = {perm.p:.3g} < {alpha:g})"
    elif perm.p < alpha:
        verdict = f"promotion NOT supported: the challenger is worse (p = {perm.p:.3g})"
    else:
        verdict = f"promotion not supported: no significant difference (p = {perm.p:.3g} >= {alpha:g})"
    return LiveResult(champion, challenger, len(y), perm.n_units, float(ea.mean()), float(eb.mean()), perm, boot,
                      alpha, supported, verdict)
