"""Where two_level loses overall r, and what would keep it (outside the pipeline, split seed 0 only).

Re-fits the experiment's cells by hand (same split file, scaling, standardisation and 40 extra trees
seeded like the runs: the `baseline` and `two_level` rows reproduce the report to four decimals) and
scores other ways to put an excerpt level and a within-excerpt part together. `plain level`: the mean,
over the performances of a test excerpt, of the plain model's predictions (it needs the test rows'
excerpt groups when predicting, which a registered estimator's `predict` is not given).

    .venv/bin/python docs/results/e10_two_level_explore/probe_level.py
"""

import numpy as np
from sklearn.ensemble import ExtraTreesRegressor

from pianolab.advanced.two_level import group_means, peer_ratio
from pianolab.config import FeatureConfig
from pianolab.data.percepiano import load_dataset
from pianolab.data.splits import get_split
from pianolab.evaluate.metrics import demean_by_group, nanmean, pearson_cols, r2
from pianolab.train.inputs import VectorScaler, load_inputs, with_peer_columns


def trees(seed: int) -> ExtraTreesRegressor:
    return ExtraTreesRegressor(n_estimators=40, min_samples_leaf=2, max_features=0.33, n_jobs=1, random_state=seed)


def scores(y, p, g) -> tuple[float, float, float, float]:
    """(r, R2, within-excerpt r, between-excerpt r)."""
    means = lambda a: np.stack([a[g == n].mean(0) for n in np.unique(g)])  # noqa: E731
    return (nanmean(pearson_cols(y, p)), r2(y, p).value,
            nanmean(pearson_cols(demean_by_group(y, g), demean_by_group(p, g))),
            nanmean(pearson_cols(means(y), means(p))))


def main() -> None:
    ds = load_dataset("data/percepiano")
    group = ds.column("group")
    inputs = load_inputs(FeatureConfig(vector=("symbolic_aligned", "symbolic_relative")),
                         [it.midi_path for it in ds.items])
    split, out = get_split(ds, "excerpt", 4, 3, 0), {}
    for seed in range(3):
        for fold in split.repeats[seed]:
            tr, te = (np.array([ds.index[s] for s in part]) for part in (fold.train, fold.test))
            raw = {r: with_peer_columns(inputs.subset(idx), group[idx]).vector for r, idx in (("tr", tr), ("te", te))}
            scaler = VectorScaler.fit(raw["tr"])
            xtr, xte = (scaler.transform(raw[r]).astype(float) for r in ("tr", "te"))
            d, y = xtr.shape[1] // 2, ds.labels[tr]
            mean, std = y.mean(0), y.std(0) + 1e-8
            z = (y - mean) / std
            level = group_means(z, group[tr])
            ratio = peer_ratio(xtr[:, :d], xtr[:, d:], group[tr])
            gm = lambda x: x[:, :d] - ratio * x[:, d:]  # noqa: E731, B023
            plain = trees(seed).fit(xtr[:, :d], z).predict(xte[:, :d])
            within = trees(seed).fit(xtr[:, d:], z - level).predict(xte[:, d:])
            within_all = trees(seed).fit(xtr, z - level).predict(xte)
            plain_level = group_means(plain, group[te])
            centred = lambda p: p - group_means(p, group[te])  # noqa: E731, B023
            at_means = trees(seed).fit(xtr[:, :d], z).predict(gm(xte))
            preds = {
                "baseline (plain model)": plain,
                "two_level (group-mean features -> level) + within":
                    trees(seed).fit(gm(xtr), level).predict(gm(xte)) + within,
                "plain model at the group-mean features + within": at_means + within,
                "plain level + centred within (peer)": plain_level + centred(within),
                "plain level + centred within ([raw, peer])": plain_level + centred(within_all),
            }
            for name, p in preds.items():
                out.setdefault(name, []).append(scores(ds.labels[te], p * std + mean, group[te]))
    print(f"{'':52s}     r     R2  within  between")
    for name, v in out.items():
        print(f"{name:52s} " + "  ".join(f"{x:.4f}" for x in np.mean(v, axis=0)))


if __name__ == "__main__":
    main()
