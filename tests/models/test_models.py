import numpy as np
import pytest
import torch
from opacus.validators import ModuleValidator
from torch import nn

from fraudfl.errors import FraudflError
from fraudfl.models import (
    HashedEmbedding,
    ModelSpec,
    build_model,
    get_flat_params,
    make_loss,
    num_params,
    set_flat_params,
)


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
@pytest.mark.parametrize(("num_classes", "outputs"), [(2, 1), (10, 10)])
def test_output_shape(kind: str, num_classes: int, outputs: int) -> None:
    model = build_model(kind, 7, num_classes, (8, 4))  # type: ignore[arg-type]
    assert model(torch.zeros(5, 7)).shape == (5, outputs)


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_models_are_opacus_compatible(kind: str) -> None:
    model = build_model(kind, 7, 2)  # type: ignore[arg-type]
    assert ModuleValidator.validate(model, strict=False) == []
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_initialisation_is_a_function_of_the_seed() -> None:
    a = get_flat_params(build_model("mlp", 5, 2, seed=3))
    torch.manual_seed(123)  # the global RNG must not matter
    b = get_flat_params(build_model("mlp", 5, 2, seed=3))
    c = get_flat_params(build_model("mlp", 5, 2, seed=4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_flat_params_roundtrip_in_parameter_order() -> None:
    model = build_model("mlp", 4, 3, (5,))
    flat = get_flat_params(model)
    assert flat.dtype == np.float32
    assert flat.shape == (num_params(model),)
    expected = np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])
    np.testing.assert_array_equal(flat, expected)
    new = np.arange(flat.size, dtype=np.float32)
    set_flat_params(model, new)
    np.testing.assert_array_equal(get_flat_params(model), new)
    first = next(model.parameters())
    assert first.detach().numpy().ravel()[0] == 0.0 and first.detach().numpy().ravel()[1] == 1.0


def test_set_flat_params_rejects_wrong_size_and_nan() -> None:
    model = build_model("logistic", 4, 2)
    with pytest.raises(FraudflError, match="expects"):
        set_flat_params(model, np.zeros(3, dtype=np.float32))
    with pytest.raises(FraudflError, match="NaN"):
        set_flat_params(model, np.full(5, np.nan, dtype=np.float32))


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_spec_roundtrip_and_param_count(kind: str) -> None:
    spec = ModelSpec(kind, 9, 2, (6, 3))  # type: ignore[arg-type]
    again = ModelSpec.from_dict(spec.to_dict())
    assert again == spec
    assert spec.num_params == num_params(again.build())


def test_embedding_spec_roundtrip_param_count_and_lookup() -> None:
    spec = ModelSpec("mlp", 20, 2, (6,), embed=((3, 8), (11, 5)), embed_dim=4)
    again = ModelSpec.from_dict(spec.to_dict())
    assert again == spec
    model = again.build(seed=2)
    assert spec.num_params == num_params(model)
    embedding = model[0]
    assert isinstance(embedding, HashedEmbedding) and embedding.out_features == 20 - 13 + 8
    # A signed one-hot block picks its bucket's row, times the sign.
    x = torch.zeros(1, 20)
    x[0, 3 + 5] = -1.0
    out = embedding(x)
    torch.testing.assert_close(out[0, 7:11], -embedding.tables[0][5])
    torch.testing.assert_close(out[0, 11:], torch.zeros(4))
    # A logistic model has no use for the blocks; overlapping blocks are refused.
    assert ModelSpec("logistic", 20, 2, embed=((3, 8),)).embed == ()
    with pytest.raises(FraudflError, match="disjoint"):
        ModelSpec("mlp", 20, 2, embed=((3, 8), (10, 5)))


def test_spec_rejects_bad_fields() -> None:
    with pytest.raises(FraudflError, match="kind"):
        ModelSpec.from_dict({"kind": "svm", "num_features": 2, "num_classes": 2})
    with pytest.raises(FraudflError, match="num_features"):
        ModelSpec.from_dict({"kind": "mlp", "num_classes": 2})


def test_plain_binary_loss_equals_bce() -> None:
    z = torch.tensor([[0.3], [-1.2], [2.0]])
    y = torch.tensor([1, 0, 1])
    expected = nn.functional.binary_cross_entropy_with_logits(z.view(-1), y.float())
    assert torch.allclose(make_loss("binary")(z, y), expected)


def test_pos_weight_matches_torch_pos_weight() -> None:
    z = torch.tensor([[0.3], [-1.2], [2.0], [0.1]])
    y = torch.tensor([1, 0, 1, 0])
    expected = nn.functional.binary_cross_entropy_with_logits(
        z.view(-1), y.float(), pos_weight=torch.tensor(7.0)
    )
    assert torch.allclose(make_loss("binary", pos_weight=7.0)(z, y), expected)


def test_focal_loss_by_hand_and_per_sample() -> None:
    z = torch.tensor([[0.5], [-0.5]])
    y = torch.tensor([1, 1])
    per = make_loss("binary", focal_gamma=2.0, reduction="none")(z, y)
    p = torch.sigmoid(z.view(-1))
    expected = -((1 - p) ** 2) * torch.log(p)
    assert per.shape == (2,)
    assert torch.allclose(per, expected)
    assert torch.allclose(make_loss("binary", focal_gamma=2.0, reduction="sum")(z, y), per.sum())
    # gamma=0 is plain cross-entropy
    assert torch.allclose(make_loss("binary", focal_gamma=0.0)(z, y), make_loss("binary")(z, y))


def test_multiclass_loss() -> None:
    z = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    y = torch.tensor([1, 2])
    assert torch.allclose(make_loss("multiclass")(z, y), nn.functional.cross_entropy(z, y))
    focal = make_loss("multiclass", focal_gamma=1.0, reduction="none")(z, y)
    ce = nn.functional.cross_entropy(z, y, reduction="none")
    assert torch.allclose(focal, ce * (1 - torch.exp(-ce)))
    with pytest.raises(FraudflError, match="binary"):
        make_loss("multiclass", pos_weight=2.0)
