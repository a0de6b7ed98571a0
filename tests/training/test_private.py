"""DP-SGD local training: accounting through the bank's accountant, FedProx under DP, clipping."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant

from fraudfl.errors import FraudflError
from fraudfl.models import build_model, get_flat_params
from fraudfl.privacy.accountant import BudgetExhausted, PrivacyAccountant, PrivacyBudget
from fraudfl.training.local import TrainConfig
from fraudfl.training.private import DPConfig, dp_sample_rate, train_private

N, D = 400, 6
DELTA = 1e-4


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    # Tiny per-sample ops: with other test processes on 2 cores, torch's thread pool mostly spins.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D)).astype(np.float32)
    y = (X[:, 0] + 0.3 * rng.normal(size=N) > 1.0).astype(np.int64)
    return X, y


def fresh_model():  # type: ignore[no-untyped-def]
    return build_model("mlp", D, 2, (16, 8), seed=1)


def accountant(epsilon: float = 1000.0) -> PrivacyAccountant:
    return PrivacyAccountant("rdp", budget=PrivacyBudget(epsilon, DELTA), label="bank-t")


def test_epsilon_is_charged_to_the_bank_accountant_like_opacus(data) -> None:  # type: ignore[no-untyped-def]
    X, y = data
    model = fresh_model()
    cfg = TrainConfig(batch_size=40, lr=0.05, local_epochs=2)
    dp = DPConfig(noise_multiplier=1.3, max_grad_norm=1.0)
    acc = accountant()
    independent = RDPAccountant()
    params = get_flat_params(model)
    previous = 0.0
    for _ in range(3):
        result = train_private(model, params, X, y, cfg, rng=np.random.default_rng(1),
                               accountant=acc, dp=dp)
        params = result.params
        steps = 2 * (N // 40)
        assert result.steps_done == steps
        for _ in range(steps):
            independent.step(noise_multiplier=1.3, sample_rate=dp_sample_rate(N, 40))
        assert result.epsilon > previous
        assert result.epsilon == pytest.approx(independent.get_epsilon(delta=DELTA), rel=1e-9)
        assert result.sample_rate == pytest.approx(40 / N)
        previous = result.epsilon
    assert acc.total_steps == 3 * 2 * (N // 40)


def test_round_over_budget_declines_without_training(data) -> None:  # type: ignore[no-untyped-def]
    X, y = data
    model = fresh_model()
    before = get_flat_params(model)
    acc = accountant(epsilon=0.05)
    with pytest.raises(BudgetExhausted):
        train_private(model, before, X, y, TrainConfig(batch_size=40), rng=np.random.default_rng(0),
                      accountant=acc, dp=DPConfig(noise_multiplier=0.8))
    assert acc.total_steps == 0
    np.testing.assert_array_equal(get_flat_params(model), before)


def _distance_after_round(data, mu: float) -> float:  # type: ignore[no-untyped-def]
    X, y = data
    model = fresh_model()
    start = get_flat_params(model)
    cfg = TrainConfig(batch_size=20, lr=0.2, local_epochs=2, mu=mu)
    result = train_private(model, start, X, y, cfg, rng=np.random.default_rng(3),
                           accountant=accountant(), dp=DPConfig(noise_multiplier=1.0))
    return float(np.linalg.norm(result.params - start))


def test_fedprox_under_dp_keeps_the_local_model_near_the_global_one(data) -> None:  # type: ignore[no-untyped-def]
    free = _distance_after_round(data, mu=0.0)
    # lr * mu = 1: every step pulls w fully back to w_global before the noisy gradient step,
    # so the model ends exactly one (clipped, noised) step away from the global one. A proximal
    # term placed in the loss would be dropped by Opacus and this distance would equal `free`.
    prox = _distance_after_round(data, mu=5.0)
    assert free > 1.0
    assert prox < 0.15 * free
    num_params = sum(p.numel() for p in fresh_model().parameters())
    one_step = 0.2 * (2 * 1.0 + 3 * 1.0 * 1.0 * np.sqrt(num_params) / 20)
    assert prox <= one_step


def _odd_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(D, 8, bias=False), torch.nn.LayerNorm(8, elementwise_affine=False),
        torch.nn.Tanh(), torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), torch.nn.ReLU(),
        torch.nn.Linear(8, 1),
    )


def _with_hashed_blocks(X: np.ndarray, seed: int) -> np.ndarray:
    """``X`` plus two signed one-hot hashed blocks (8 and 4 buckets), the second with gaps."""
    rng = np.random.default_rng(seed)
    blocks = []
    for buckets in (8, 4):
        block = np.zeros((len(X), buckets), dtype=np.float32)
        rows = np.arange(len(X))
        block[rows, rng.integers(0, buckets, len(X))] = rng.choice([-1.0, 1.0], len(X))
        blocks.append(block)
    blocks[1][rng.random(len(X)) < 0.2] = 0.0
    return np.concatenate([X, *blocks], axis=1)


@pytest.mark.parametrize("kind", ["mlp", "logistic", "odd", "multiclass", "embedding"])
def test_every_engine_reproduces_opacus_hooks_mode(data, kind: str) -> None:  # type: ignore[no-untyped-def]
    """Same seeds -> same Poisson batches and noise draws, so every engine must land on the
    same model as Opacus' reference per-sample-gradient mode (here with momentum, weight decay,
    FedProx and class weights all on)."""
    X, y = data
    cfg = TrainConfig(batch_size=32, lr=0.1, momentum=0.9, weight_decay=0.01, mu=0.5,
                      pos_weight=5.0)
    if kind == "odd":
        model = _odd_model()
    elif kind == "embedding":
        X = _with_hashed_blocks(X, seed=4)
        model = build_model("mlp", D + 12, 2, (16, 8), seed=1, embed=((D, 8), (D + 8, 4)),
                            embed_dim=3)
    elif kind == "multiclass":
        model = build_model("mlp", D, 3, (16, 8), seed=1)
        y = np.digitize(X[:, 0], [-0.5, 0.5])
        cfg = TrainConfig(task="multiclass", batch_size=32, lr=0.1, mu=0.5, focal_gamma=2.0)
    else:
        model = build_model(kind, D, 2, (16, 8), seed=1)
    start = get_flat_params(model)
    out = {}
    engines = ("vectorized", "ghost", "hooks") + (
        ("functorch",) if kind in ("mlp", "embedding") else ())
    for engine in engines:
        result = train_private(
            model, start, X, y, cfg, rng=np.random.default_rng(11), accountant=accountant(),
            dp=DPConfig(noise_multiplier=1.0, max_grad_norm=0.5, engine=engine),  # type: ignore[arg-type]
        )
        out[engine] = (result.params, result.loss)
    assert np.abs(out["hooks"][0] - start).max() > 1e-2
    for engine in set(engines) - {"hooks"}:
        np.testing.assert_allclose(out[engine][0], out["hooks"][0], atol=1e-5)
        assert out[engine][1] == pytest.approx(out["hooks"][1], rel=1e-5)


def test_vectorized_engine_refuses_layers_it_cannot_clip(data) -> None:  # type: ignore[no-untyped-def]
    X, y = data
    model = torch.nn.Sequential(torch.nn.Linear(D, 4), torch.nn.GroupNorm(1, 4),
                                torch.nn.Linear(4, 1))
    with pytest.raises(FraudflError, match="GroupNorm"):
        train_private(model, get_flat_params(model), X, y, TrainConfig(),
                      rng=np.random.default_rng(0), accountant=accountant(),
                      dp=DPConfig(noise_multiplier=1.0))


def test_per_sample_clipping_bounds_each_step(data) -> None:  # type: ignore[no-untyped-def]
    X, y = data
    X = X * 1000.0  # huge raw gradients: without clipping one step would move far
    model = fresh_model()
    start = get_flat_params(model)
    C, sigma, lr, B = 1e-3, 1e-3, 0.1, 40
    result = train_private(model, start, X, y, TrainConfig(batch_size=B, lr=lr, max_steps=1),
                           rng=np.random.default_rng(0), accountant=accountant(1e9),
                           dp=DPConfig(noise_multiplier=sigma, max_grad_norm=C))
    # One step: lr * (sum of <=|batch| clipped grads + tiny noise) / expected batch size.
    max_batch = N  # a Poisson batch can at worst hold every record
    assert np.linalg.norm(result.params - start) <= lr * (max_batch * C + 1e-3) / B
    assert np.linalg.norm(result.params - start) > 0


def test_same_seed_same_model(data) -> None:  # type: ignore[no-untyped-def]
    X, y = data
    model = fresh_model()
    start = get_flat_params(model)
    cfg = TrainConfig(batch_size=50, lr=0.1)
    runs = [
        train_private(model, start, X, y, cfg, rng=np.random.default_rng(7),
                      accountant=accountant(), dp=DPConfig(noise_multiplier=1.0)).params
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0], runs[1])
