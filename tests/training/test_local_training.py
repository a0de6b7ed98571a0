import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fraudfl.errors import FraudflError
from fraudfl.models import build_model, get_flat_params, make_loss, set_flat_params
from fraudfl.training.local import (
    LinearStepper,
    SGDStepper,
    TrainConfig,
    add_proximal_gradient,
    default_stepper,
    train_local,
)


def _data(n: int = 53, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (X[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(np.int64)
    return X, y


def test_proximal_gradient_is_mu_times_distance() -> None:
    model = build_model("mlp", 6, 2, (4,), seed=1)
    anchor = [p.detach().clone() + 0.3 for p in model.parameters()]
    params = list(model.parameters())
    add_proximal_gradient(params, anchor, mu=0.7)
    for p, g in zip(params, anchor, strict=True):
        assert p.grad is not None
        assert torch.allclose(p.grad, 0.7 * (p.detach() - g))


def test_explicit_prox_gradient_equals_gradient_of_prox_loss_term() -> None:
    X, y = _data()
    xb, yb = torch.from_numpy(X[:10]), torch.from_numpy(y[:10])
    mu = 0.5
    model = build_model("mlp", 6, 2, (4,), seed=2)
    anchor = [p.detach().clone() + 0.1 * torch.randn_like(p) for p in model.parameters()]

    stepper = SGDStepper(model, anchor, TrainConfig(mu=mu))
    stepper.compute_gradients(xb, yb)
    add_proximal_gradient(stepper.params, anchor, mu)
    explicit = [p.grad.clone() for p in model.parameters() if p.grad is not None]

    model.zero_grad()
    prox = sum(((p - g) ** 2).sum() for p, g in zip(model.parameters(), anchor, strict=True))
    loss = make_loss("binary")(model(xb), yb) + (mu / 2) * prox
    loss.backward()
    for e, p in zip(explicit, model.parameters(), strict=True):
        assert p.grad is not None
        assert torch.allclose(e, p.grad, atol=1e-6)


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
@pytest.mark.parametrize(("momentum", "weight_decay"), [(0.0, 0.0), (0.9, 0.01)])
def test_mu_zero_is_plain_sgd_bit_for_bit(kind: str, momentum: float, weight_decay: float) -> None:
    X, y = _data()
    model = build_model(kind, 6, 2, (5,), seed=0)  # type: ignore[arg-type]
    w0 = get_flat_params(model)
    cfg = TrainConfig(local_epochs=3, batch_size=8, lr=0.1, mu=0.0, momentum=momentum,
                      weight_decay=weight_decay)
    result = train_local(model, w0, X, y, cfg, rng=np.random.default_rng(42),
                         stepper_factory=SGDStepper)

    ref = build_model(kind, 6, 2, (5,), seed=0)  # type: ignore[arg-type]
    set_flat_params(ref, w0)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=momentum,
                          weight_decay=weight_decay)
    rng = np.random.default_rng(42)
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)
    for _ in range(3):
        perm = rng.permutation(len(X))
        for i in range(0, len(X), 8):
            idx = torch.from_numpy(perm[i : i + 8])
            opt.zero_grad()
            z = ref(X_t[idx]).view(-1)
            loss = F.binary_cross_entropy_with_logits(z, y_t[idx].float(), reduction="none")
            loss.mean().backward()
            opt.step()
    np.testing.assert_array_equal(result.params, get_flat_params(ref))
    assert result.steps_done == result.steps_planned == 3 * math.ceil(53 / 8)


@pytest.mark.parametrize(
    "cfg",
    [
        TrainConfig(local_epochs=3, batch_size=8, lr=0.1, mu=0.5),
        TrainConfig(local_epochs=3, batch_size=8, lr=0.1, mu=0.0, pos_weight=5.0),
        TrainConfig(local_epochs=2, batch_size=8, lr=0.1, mu=1.0, momentum=0.9,
                    weight_decay=0.01),
        TrainConfig(task="multiclass", local_epochs=3, batch_size=8, lr=0.1, mu=0.5),
    ],
)
def test_closed_form_linear_step_matches_autograd(cfg: TrainConfig) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(53, 6)).astype(np.float32)
    classes = 4 if cfg.task == "multiclass" else 2
    y = rng.integers(0, classes, size=53).astype(np.int64)
    model = build_model("logistic", 6, classes, seed=3)
    w0 = get_flat_params(model) + 0.1  # start away from init so the prox term matters
    fast = train_local(model, w0, X, y, cfg, rng=np.random.default_rng(7),
                       stepper_factory=LinearStepper)
    slow = train_local(model, w0, X, y, cfg, rng=np.random.default_rng(7),
                       stepper_factory=SGDStepper)
    np.testing.assert_allclose(fast.params, slow.params, rtol=1e-5, atol=1e-6)
    assert fast.loss == pytest.approx(slow.loss, rel=1e-5)
    anchor = [p.detach().clone() for p in model.parameters()]
    assert isinstance(default_stepper(model, anchor, cfg), LinearStepper)
    focal = replace(cfg, focal_gamma=2.0)
    assert isinstance(default_stepper(model, anchor, focal), SGDStepper)
    mlp = build_model("mlp", 6, classes)
    assert isinstance(default_stepper(mlp, list(mlp.parameters()), cfg), SGDStepper)


def test_prox_term_keeps_local_model_close_to_global() -> None:
    X, y = _data()
    model = build_model("logistic", 6, 2, seed=0)
    w0 = get_flat_params(model)
    dist = {}
    for mu in (0.0, 1.0, 10.0):
        cfg = TrainConfig(local_epochs=5, batch_size=8, lr=0.05, mu=mu)
        res = train_local(model, w0, X, y, cfg, rng=np.random.default_rng(0))
        dist[mu] = float(np.linalg.norm(res.params - w0))
    assert dist[10.0] < dist[1.0] < dist[0.0]


def test_training_reduces_loss() -> None:
    X, y = _data(200)
    model = build_model("mlp", 6, 2, (8,), seed=0)
    w0 = get_flat_params(model)
    before = float(make_loss("binary")(model(torch.from_numpy(X)), torch.from_numpy(y)))
    res = train_local(model, w0, X, y, TrainConfig(local_epochs=10, lr=0.1),
                      rng=np.random.default_rng(0))
    after = float(make_loss("binary")(model(torch.from_numpy(X)), torch.from_numpy(y)))
    assert after < 0.7 * before
    assert res.loss > 0


def test_work_fraction_and_steps() -> None:
    X, y = _data(50)
    model = build_model("logistic", 6, 2)
    w0 = get_flat_params(model)
    cfg = TrainConfig(local_epochs=4, batch_size=10)  # 20 steps planned
    full = train_local(model, w0, X, y, cfg, rng=np.random.default_rng(0))
    assert (full.steps_done, full.steps_planned, full.completed) == (20, 20, True)
    part = train_local(model, w0, X, y, cfg, rng=np.random.default_rng(0), work_fraction=0.25)
    assert (part.steps_done, part.steps_planned, part.completed) == (5, 20, False)
    assert part.work_fraction == 0.25
    tiny = train_local(model, w0, X, y, cfg, rng=np.random.default_rng(0), work_fraction=0.001)
    assert tiny.steps_done == 1
    steps = train_local(model, w0, X, y, TrainConfig(max_steps=7, batch_size=10),
                        rng=np.random.default_rng(0))
    assert (steps.steps_done, steps.steps_planned) == (7, 7)  # crosses an epoch boundary
    with pytest.raises(FraudflError, match="work_fraction"):
        train_local(model, w0, X, y, cfg, rng=np.random.default_rng(0), work_fraction=0.0)


def test_partial_work_is_a_prefix_of_full_work() -> None:
    # A straggler's k epochs are exactly the first k epochs of the full run.
    X, y = _data(40)
    model = build_model("logistic", 6, 2)
    w0 = get_flat_params(model)
    two = train_local(model, w0, X, y, TrainConfig(local_epochs=2, batch_size=10),
                      rng=np.random.default_rng(5))
    half = train_local(model, w0, X, y, TrainConfig(local_epochs=4, batch_size=10),
                       rng=np.random.default_rng(5), work_fraction=0.5)
    np.testing.assert_array_equal(two.params, half.params)


def test_deterministic_under_seed_and_independent_of_torch_rng() -> None:
    X, y = _data()
    model = build_model("mlp", 6, 2, (4,))
    w0 = get_flat_params(model)
    cfg = TrainConfig(local_epochs=2, batch_size=7, mu=0.1)
    torch.manual_seed(1)
    a = train_local(model, w0, X, y, cfg, rng=np.random.default_rng(9))
    torch.manual_seed(2)
    b = train_local(model, w0, X, y, cfg, rng=np.random.default_rng(9))
    c = train_local(model, w0, X, y, cfg, rng=np.random.default_rng(10))
    np.testing.assert_array_equal(a.params, b.params)
    assert not np.array_equal(a.params, c.params)


def test_multiclass_training() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 5)).astype(np.float32)
    y = np.argmax(X[:, :3], axis=1).astype(np.int64)
    model = build_model("logistic", 5, 3)
    res = train_local(model, get_flat_params(model), X, y,
                      TrainConfig(task="multiclass", local_epochs=20, lr=0.2),
                      rng=np.random.default_rng(0))
    set_flat_params(model, res.params)
    acc = (model(torch.from_numpy(X)).argmax(1).numpy() == y).mean()
    assert acc > 0.85


def test_bad_inputs() -> None:
    model = build_model("logistic", 6, 2)
    w0 = get_flat_params(model)
    with pytest.raises(FraudflError, match="shapes"):
        train_local(model, w0, np.zeros((3, 6), np.float32), np.zeros(4, np.int64),
                    TrainConfig(), rng=np.random.default_rng(0))
    with pytest.raises(FraudflError, match="zero examples"):
        train_local(model, w0, np.zeros((0, 6), np.float32), np.zeros(0, np.int64),
                    TrainConfig(), rng=np.random.default_rng(0))
    with pytest.raises(FraudflError, match="batch_size"):
        TrainConfig(batch_size=0)


@pytest.mark.parametrize(("field", "value"), [
    ("mu", math.nan), ("mu", math.inf), ("lr", math.inf), ("pos_weight", math.nan),
    ("focal_gamma", math.nan), ("pos_weight", -1.0),
])
def test_non_finite_or_negative_hyperparameters_are_refused(field: str, value: float) -> None:
    # NaN passed "mu < 0" and surfaced only as "parameter vector contains NaN" after training.
    with pytest.raises(FraudflError, match=field):
        TrainConfig(**{field: value})  # type: ignore[arg-type]
