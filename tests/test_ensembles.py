import numpy as np
from sklearn.linear_model import LinearRegression

from pianolab.advanced.ensembles import MeanEnsemble
from pianolab.models.classic import create_estimator


def test_mean_ensemble_averages_members_by_weight():
    from sklearn.dummy import DummyRegressor

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    y = np.c_[x @ [1.0, 2.0, 0.0], x @ [0.0, 1.0, -1.0]]
    ens = MeanEnsemble([LinearRegression(), DummyRegressor()], weights=[3, 1]).fit(x, y)
    exact = LinearRegression().fit(x, y).predict(x)
    np.testing.assert_allclose(ens.predict(x), 0.75 * exact + 0.25 * y.mean(0), atol=1e-9)


def test_registered_ensemble_is_the_mean_of_rf_and_gb():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 4))
    y = np.c_[x[:, 0] ** 2, x[:, 1]]
    ens = create_estimator("ensemble_rf_gb", seed=0).fit(x, y)
    rf = create_estimator("random_forest", seed=0).fit(x, y)
    gb = create_estimator("gradient_boosting", seed=0).fit(x, y)
    np.testing.assert_allclose(ens.predict(x), (rf.predict(x) + gb.predict(x)) / 2, rtol=1e-5, atol=1e-6)
