"""Hyper-parameters of the histogram GBDT, named as XGBoost's scikit-learn API names them.

A user moving from ``xgboost.XGBClassifier`` recognises every field; LightGBM's spelling is in
the description where it differs. The defaults are XGBoost's, except ``max_bin`` (255 value
bins, so a binned feature fits one byte with the missing bin as code 255).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fraudfl.errors import FraudflError

MAX_DEPTH_LIMIT = 12


class GBDTParams(BaseModel):
    """One boosting job: trees, their shape, regularisation and sampling."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    n_estimators: int = Field(default=100, ge=1, description="boosting rounds (num_iterations)")
    max_depth: int = Field(default=6, ge=1, le=MAX_DEPTH_LIMIT, description="level-wise depth")
    learning_rate: float = Field(default=0.3, gt=0, description="shrinkage eta")
    reg_lambda: float = Field(default=1.0, ge=0, description="L2 on leaves (lambda_l2)")
    min_child_weight: float = Field(default=1.0, ge=0, description="least hessian sum per child")
    min_child_samples: int = Field(default=1, ge=0, description="least rows per child (LightGBM)")
    gamma: float = Field(default=0.0, ge=0, description="least loss reduction to split")
    subsample: float = Field(default=1.0, gt=0, le=1, description="Poisson row rate per tree")
    colsample_bytree: float = Field(default=1.0, gt=0, le=1, description="feature share per tree")
    max_bin: int = Field(default=255, ge=2, le=65535, description="value bins per feature")
    early_stopping_rounds: int | None = Field(default=None, ge=1)
    num_class: int = Field(default=2, ge=2, description="2: logistic loss, more: softmax")
    base_score: float | None = Field(
        default=None, gt=0, lt=1,
        description="prior probability (binary); None: from the summed label counts",
    )
    seed: int = Field(default=0, ge=0, description="column sampling and the simulation's rows")
    feature_weights: tuple[float, ...] | None = Field(
        default=None,
        description="per feature, its weight in column sampling and random splits (XGBoost's "
        "feature_weights); 0 excludes a feature from both",
    )
    splitter: Literal["best", "random"] = Field(
        default="best",
        description="best: split search on summed histograms; random: random splits (public "
        "randomness), only the leaf sums are computed from data",
    )

    @field_validator("feature_weights")
    @classmethod
    def _weights(cls, w: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if w is not None and (any(not x >= 0 for x in w) or not any(x > 0 for x in w)):
            raise ValueError("feature weights must be >= 0 with at least one > 0")
        return w

    @property
    def n_outputs(self) -> int:
        """Trees per boosting round: one for binary, one per class for softmax."""
        return 1 if self.num_class == 2 else self.num_class

    @property
    def steps_per_tree(self) -> int:
        """Data-dependent sums per boosting round: one per level and the leaf sums (best), or
        the leaf sums alone (random)."""
        return 1 if self.splitter == "random" else self.max_depth + 1

    @classmethod
    def parse(cls, values: dict[str, object], source: str = "gbdt parameters") -> GBDTParams:
        """Validated parameters, or one :class:`FraudflError` line naming the field."""
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            raise FraudflError(f"{source}: {field}: {err['msg']}") from None
