import numpy as np
import pytest

from fraudfl.errors import FraudflError
from fraudfl.strategy import (
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    SummedUpdate,
    make_strategy,
    sum_updates,
)

W = np.array([1.0, -2.0, 0.5], dtype=np.float32)
UPDATES = [
    (10.0, np.array([1.0, 0.0, 2.0], dtype=np.float32)),
    (30.0, np.array([-1.0, 4.0, 0.0], dtype=np.float32)),
]
# hand-computed: (10*[1,0,2] + 30*[-1,4,0]) / 40 = [-0.5, 3.0, 0.5]
MEAN = np.array([-0.5, 3.0, 0.5])


def _summed() -> SummedUpdate:
    return sum_updates(UPDATES, dim=3)


def test_sum_updates() -> None:
    s = sum_updates(UPDATES, dim=3, num_partial=1)
    np.testing.assert_allclose(s.weighted_update_sum, [-20.0, 120.0, 20.0])
    assert (s.weight_sum, s.num_participants, s.num_partial) == (40.0, 2, 1)
    with pytest.raises(FraudflError, match="shape"):
        sum_updates([(1.0, np.zeros(2))], dim=3)
    with pytest.raises(FraudflError, match="weight"):
        sum_updates([(-1.0, np.zeros(3))], dim=3)


def test_fedavg_sample_weighted_by_hand() -> None:
    new = FedAvg().aggregate(1, W, _summed())
    assert new.dtype == np.float32
    np.testing.assert_allclose(new, W + MEAN, rtol=1e-6)


def test_aggregation_from_sum_equals_average_of_individual_models() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=20).astype(np.float32)
    locals_ = [w + rng.normal(size=20).astype(np.float32) for _ in range(5)]
    weights = rng.integers(1, 100, size=5).astype(float)
    expected = sum(n * m.astype(np.float64) for n, m in zip(weights, locals_, strict=True))
    expected /= weights.sum()
    summed = sum_updates([(n, m - w) for n, m in zip(weights, locals_, strict=True)], dim=20)
    for strategy in (FedAvg(), FedProx(mu=1.0)):
        np.testing.assert_allclose(strategy.aggregate(1, w, summed), expected, rtol=1e-5)


def test_empty_round_keeps_global_model() -> None:
    empty = sum_updates([], dim=3)
    for name in ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi"):
        strategy = make_strategy(name, mu=0.1)
        np.testing.assert_array_equal(strategy.aggregate(1, W, empty), W)
        assert strategy.state() == {}


def test_configure_round_mu_and_partial_work() -> None:
    avg = FedAvg({"local_epochs": 20}).configure_round(1, W)
    assert avg.config == {"local_epochs": 20, "mu": 0.0}
    assert avg.accept_partial_work is False
    prox = FedProx(mu=1.0, fit_config={"local_epochs": 20}).configure_round(1, W)
    assert prox.config == {"local_epochs": 20, "mu": 1.0}
    assert prox.accept_partial_work is True
    for name in ("fedavgm", "fedadam", "fedyogi"):
        assert make_strategy(name).configure_round(1, W).accept_partial_work is False


def test_fedavgm_two_steps_by_hand() -> None:
    s = FedAvgM(server_lr=0.5, momentum=0.9)
    w1 = s.aggregate(1, W, _summed())
    np.testing.assert_allclose(w1, W + 0.5 * MEAN, rtol=1e-6)
    w2 = s.aggregate(2, w1, _summed())
    np.testing.assert_allclose(w2, w1 + 0.5 * (0.9 * MEAN + MEAN), rtol=1e-6)


def test_fedadam_one_step_by_hand() -> None:
    eta, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    new = FedAdam(eta, b1, b2, tau).aggregate(1, W, _summed())
    m = (1 - b1) * MEAN
    v = b2 * tau**2 + (1 - b2) * MEAN**2
    np.testing.assert_allclose(new, W + eta * m / (np.sqrt(v) + tau), rtol=1e-6)


def test_fedyogi_one_step_by_hand() -> None:
    eta, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    s = FedYogi(eta, b1, b2, tau)
    new = s.aggregate(1, W, _summed())
    v0 = tau**2
    v = v0 - (1 - b2) * MEAN**2 * np.sign(v0 - MEAN**2)
    m = (1 - b1) * MEAN
    np.testing.assert_allclose(new, W + eta * m / (np.sqrt(v) + tau), rtol=1e-6)
    state = s.state()
    np.testing.assert_allclose(state["v"], v)
    clone = FedYogi(eta, b1, b2, tau)
    clone.load_state(state)
    again = clone.aggregate(2, new, _summed())
    np.testing.assert_array_equal(again, s.aggregate(2, new, _summed()))


def test_unknown_strategy_and_bad_params() -> None:
    with pytest.raises(FraudflError, match="unknown strategy"):
        make_strategy("fedsgd")
    with pytest.raises(FraudflError):
        FedProx(mu=-1)
    with pytest.raises(FraudflError):
        FedAdam(eta=0)
