"""Typed configuration of the aggregator and bank-node services.

A service reads one TOML file; relative paths in it are resolved against the file's directory so
a federation directory written by ``fraudfl init`` can be moved as a whole. Environment
variables override file values: ``FRAUDFL_KAFKA__BOOTSTRAP_SERVERS=host:9092`` sets
``kafka.bootstrap_servers`` (``__`` separates levels). A value for a text, path or secret
setting is taken verbatim; for any other setting it is parsed as a TOML value when it is one
(``FRAUDFL_ROUNDS__ROUNDS=7``), else taken as a string. Passwords and passphrases are
:class:`~pydantic.SecretStr`: never parsed, never shown in ``repr``, logs or error messages.
Every model forbids unknown keys, and a validation failure becomes one :class:`FraudflError`
line naming the file (or variable), the key path and what is expected.
"""

from __future__ import annotations

import logging
import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    SecretStr,
    ValidationError,
    model_validator,
)

from fraudfl.errors import FraudflError
from fraudfl.vocabulary import ID_PATTERN

log = logging.getLogger(__name__)

ENV_PREFIX = "FRAUDFL_"
ENV_SEPARATOR = "__"


class _Section(BaseModel):
    # TOML has inf and nan; no setting means anything with them (lr = inf passed "> 0").
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class KafkaSettings(_Section):
    """Broker connection; TLS/SASL values are passed to kafka-python unchanged."""

    # Comma-separated host[:port] entries, none empty.
    bootstrap_servers: str = Field(default="127.0.0.1:9092", pattern=r"^[^,\s]+(,[^,\s]+)*$")
    client_id: str | None = None
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True
    # Passphrase of ssl_keyfile when it is encrypted.
    ssl_password: SecretStr | None = None
    sasl_mechanism: (
        Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER"] | None
    ) = None
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = None
    # GSSAPI (Kerberos): the broker's service name and, optionally, its Kerberos domain.
    sasl_kerberos_service_name: str = "kafka"
    sasl_kerberos_domain_name: str | None = None
    # OAUTHBEARER: a file holding the current access token, re-read for every token request
    # (a sidecar or the platform refreshes it).
    sasl_oauth_token_file: Path | None = None
    replication_factor: int = Field(default=1, ge=1)
    # Apache Kafka's default message.max.bytes is ~1 MB; payloads are chunked below this.
    max_message_bytes: int = Field(default=900_000, ge=16_384)

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and self.sasl_mechanism is None:
            raise ValueError("sasl_mechanism is required when security_protocol uses SASL")
        if self.sasl_mechanism == "OAUTHBEARER" and self.sasl_oauth_token_file is None:
            raise ValueError("sasl_oauth_token_file is required with sasl_mechanism OAUTHBEARER")
        return self

    def transport_settings(self, **overrides: Any) -> Any:
        """The transport's :class:`fraudfl.transport.kafka.KafkaSettings` (secrets unwrapped
        here, at the last moment, and nowhere else)."""
        from fraudfl.transport.kafka import KafkaSettings as TransportSettings

        values = self.model_dump()
        for name in ("ssl_password", "sasl_plain_password"):
            secret = getattr(self, name)
            values[name] = None if secret is None else secret.get_secret_value()
        return TransportSettings(**{**values, **overrides})


class ServerTLSSettings(_Section):
    """TLS of an HTTP endpoint; ``client_cafile`` requires client certificates (mTLS)."""

    certfile: Path
    keyfile: Path
    client_cafile: Path | None = None


class BasicAuthSettings(_Section):
    """HTTP basic authentication of ``/metrics`` (Prometheus' ``basic_auth``)."""

    username: str = Field(min_length=1)
    # From FRAUDFL_METRICS_BASIC_AUTH__PASSWORD, never from the file.
    password: SecretStr


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # json: one JSON object per line (for log collectors); text: for people.
    format: Literal["text", "json"] = "text"


class TrainingSettings(_Section):
    """Local training of one round; the aggregator announces these to the banks."""

    # "gbdt": histogram gradient-boosted trees (the [trees] section), one secure sum per level.
    model: Literal["mlp", "logistic", "gbdt"] = "mlp"
    hidden: tuple[PositiveInt, ...] = (32, 16)
    local_epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=256, ge=1)
    # DP-SGD clips each example's gradient to norm max_grad_norm (1 by default), so a step moves
    # the weights by at most about lr: with a few dozen steps per round, 0.05 left the model
    # where it started (docs/services.md, "Learning rate").
    lr: float = Field(default=0.5, gt=0)
    mu: float = Field(default=0.01, ge=0)
    # At most this many optimiser steps per round (None: local_epochs whole epochs).
    max_steps: int | None = Field(default=None, ge=1)
    # Class imbalance: weight of the positive class in the loss, or a focal loss's gamma.
    pos_weight: float | None = Field(default=None, gt=0)
    focal_gamma: float | None = Field(default=None, ge=0)
    # FedPer: the last k linear layers stay at the banks (personal heads) and only the body
    # is aggregated; 0 aggregates the whole model. Needs the mlp model with k <= len(hidden).
    personal_layers: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _body_left(self) -> TrainingSettings:
        too_many = self.personal_layers > len(self.hidden)
        if self.personal_layers and (self.model != "mlp" or too_many):
            raise ValueError(
                f"personal_layers ({self.personal_layers}) needs the mlp model with at least "
                f"as many hidden layers, so that a body is left to aggregate"
            )
        return self


class TreeSettings(_Section):
    """A gradient-boosted trees job (``training.model = "gbdt"``); names as
    :class:`fraudfl.trees.GBDTParams` (XGBoost's), which validates them again."""

    n_estimators: int = Field(default=100, ge=1)
    max_depth: int = Field(default=6, ge=1, le=12)
    learning_rate: float = Field(default=0.3, gt=0)
    reg_lambda: float = Field(default=1.0, ge=0)
    min_child_weight: float = Field(default=1.0, ge=0)
    min_child_samples: int = Field(default=1, ge=0)
    gamma: float = Field(default=0.0, ge=0)
    subsample: float = Field(default=1.0, gt=0, le=1)
    colsample_bytree: float = Field(default=1.0, gt=0, le=1)
    max_bin: int = Field(default=254, ge=2, le=254)
    splitter: Literal["best", "random"] = "best"
    # Prior fraud probability of the base margin; None: from summed label counts when
    # label_counts is true (banks under DP refuse to release them), else 1/2.
    base_score: float | None = Field(default=None, gt=0, lt=1)
    label_counts: bool = True
    # Public bound on one bank's rows: each coordinate of a bank's tree vector (counts, sums of
    # gradients) is clipped to [-clip, clip] for the secure sum's fixed-point encoding.
    clip: float = Field(default=float(1 << 20), gt=0)

    def gbdt_params(self, seed: int) -> dict[str, Any]:
        """The job's :class:`~fraudfl.trees.GBDTParams` fields (announced to the banks)."""
        values = self.model_dump(exclude={"label_counts", "clip"})
        return {**values, "seed": seed}


class StrategySettings(_Section):
    name: Literal["fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi"] = "fedprox"
    # FedAvgM: server learning rate and momentum.
    server_lr: float = Field(default=1.0, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    # FedAdam / FedYogi (Reddi et al. 2021): server learning rate, moment decays, adaptivity.
    eta: float = Field(default=1e-2, gt=0)
    beta1: float = Field(default=0.9, ge=0, lt=1)
    beta2: float = Field(default=0.99, ge=0, lt=1)
    tau: float = Field(default=1e-3, gt=0)


class RoundSettings(_Section):
    rounds: int = Field(default=5, ge=1)
    banks_per_round: int | None = Field(default=None, ge=1)
    # The secure-aggregation threshold t: a round aborts when fewer banks survive a stage.
    min_banks: int = Field(default=2, ge=2)
    seed: int = 0


class StageTimeouts(_Section):
    """Seconds the aggregator waits in each stage before continuing with whoever answered."""

    # Banks train on receiving the announcement and advertise keys afterwards, so local
    # training happens inside this stage: it is the longest.
    advertise_keys: float = Field(default=300.0, gt=0)
    share_keys: float = Field(default=30.0, gt=0)
    masked_input: float = Field(default=30.0, gt=0)
    consistency_check: float = Field(default=30.0, gt=0)
    unmask: float = Field(default=30.0, gt=0)


class SecAggSettings(_Section):
    # False sums the banks' vectors in the clear, with the same quantisation (so the same sum):
    # for research runs of `fraudfl simulate`. Banks take part in such rounds only when their
    # own settings allow it (BankSettings.allow_plain_sum), never in a service by default.
    enabled: bool = True
    # SecAgg+ neighbours per bank (k of a k-regular graph); 0 masks with every other bank.
    neighbours: int = Field(default=0, ge=0)
    bits: Literal[16, 32] = 32
    # Each coordinate of weight * update is clipped to [-clip_range, clip_range].
    clip_range: float = Field(default=1.0, gt=0)
    # A bank's weight is min(1, examples / weight_scale), sent inside the masked vector.
    weight_scale: float = Field(default=1_000_000.0, gt=0)


class BankDPSettings(_Section):
    """Bank-level DP of the update (clip + share of Gaussian noise), announced per round."""

    enabled: bool = False
    clip_norm: float = Field(default=1.0, gt=0)
    noise_multiplier: float = Field(default=1.0, gt=0)
    # Delta at which the federation-level epsilon is reported.
    delta: float = Field(default=1e-5, gt=0, lt=1)


# DP-SGD's per-sample clipping norm, nearer the gradient norms of the rare fraud examples than 1:
# clipped to 1, a fraud example's gradient (norm ~10-50) counts no more than an easy legitimate
# one's and the training loss rose from round 2 even without noise; 3-10 all did better at
# epsilon 3 (docs/privacy.md, "Training defaults under DP").
DEFAULT_MAX_GRAD_NORM = 5.0


class PrivacySettings(_Section):
    """A bank's record-level DP-SGD settings and its lifetime budget."""

    enabled: bool = True
    # The lifetime budget; None (only with a noise_multiplier): no limit, epsilon is reported.
    target_epsilon: float | None = Field(default=8.0, gt=0)
    # None: chosen below 1 / number of the bank's records.
    delta: float | None = Field(default=None, gt=0, lt=1)
    # None: calibrated so that planned_rounds rounds spend target_epsilon.
    noise_multiplier: float | None = Field(default=None, gt=0)
    max_grad_norm: float = Field(default=DEFAULT_MAX_GRAD_NORM, gt=0)
    accountant: Literal["rdp", "prv"] = "rdp"
    planned_rounds: int = Field(default=10, ge=1)
    # How per-example gradients are clipped; every engine computes the same DP-SGD step.
    engine: Literal["vectorized", "ghost", "hooks", "functorch"] = "vectorized"

    @model_validator(mode="after")
    def _noise_decided(self) -> PrivacySettings:
        if self.enabled and self.target_epsilon is None and self.noise_multiplier is None:
            raise ValueError("target_epsilon or noise_multiplier is needed to decide the noise")
        return self

    @property
    def epsilon_budget(self) -> float:
        return math.inf if self.target_epsilon is None else self.target_epsilon


class PersonalTrainingSettings(_Section):
    """How a bank adapts each new global model to its own data (``personalization``)."""

    # Passes over the bank's training data per new global model (fine-tuning and Ditto).
    epochs: int = Field(default=3, ge=1)
    # None: the federation's learning rate from the latest announcement.
    lr: float | None = Field(default=None, gt=0)
    # Ditto's lambda: the pull of the personal model towards the global one.
    ditto_lambda: float = Field(default=0.1, ge=0)


class FeatureSettings(_Section):
    """How the feature pipeline is fitted from the summed statistics."""

    # False keeps numeric features unscaled (e.g. to reproduce a paper trained on raw
    # features); categorical columns are one-hot encoded either way.
    standardize: bool = True


class FederationSettings(_Section):
    """What the aggregator decides and announces: one definition for the aggregator service
    and ``fraudfl simulate`` (the simulator runs the same engine over an in-memory grid)."""

    federation_id: str = Field(pattern=ID_PATTERN)
    rounds: RoundSettings = RoundSettings()
    training: TrainingSettings = TrainingSettings()
    strategy: StrategySettings = StrategySettings()
    secagg: SecAggSettings = SecAggSettings()
    bank_dp: BankDPSettings = BankDPSettings()
    features: FeatureSettings = FeatureSettings()
    trees: TreeSettings = TreeSettings()
    timeouts: StageTimeouts = StageTimeouts()
    # Give up after this many aborted rounds in a row (e.g. too few banks alive).
    max_consecutive_aborts: int = Field(default=5, ge=1)

    @model_validator(mode="after")
    def _threshold_fits(self) -> FederationSettings:
        per_round = self.rounds.banks_per_round
        if per_round is not None and per_round < self.rounds.min_banks:
            raise ValueError(
                f"rounds.banks_per_round ({per_round}) is below rounds.min_banks "
                f"({self.rounds.min_banks})"
            )
        return self


class BankSettings(_Section):
    """What one bank decides for itself: shared by the bank-node service and the simulator."""

    federation_id: str = Field(pattern=ID_PATTERN)
    bank_id: str = Field(pattern=ID_PATTERN)
    aggregator_id: str = "aggregator"
    privacy: PrivacySettings = PrivacySettings()
    # The model the bank serves: the global one ("none"), fine-tuned on the bank's data,
    # Ditto-regularised towards the global one, or FedPer (the federation must then aggregate
    # the body only: the aggregator's training.personal_layers). Personal training is DP-SGD
    # charged to the bank's accountant when privacy is enabled.
    personalization: Literal["none", "finetune", "ditto", "fedper"] = "none"
    personal_training: PersonalTrainingSettings = PersonalTrainingSettings()
    # The share of the bank's rows held out to validate (threshold, personalisation) and the
    # seed of that stratified split.
    val_fraction: float = Field(default=0.2, ge=0, lt=1)
    split_seed: int = 0
    # Answer rounds that sum in the clear (secagg.enabled = false). Only an in-process
    # simulation sets this: a service's update would reach the aggregator unmasked.
    allow_plain_sum: bool = False


class ServiceConfig(_Section):
    federation_id: str = Field(pattern=ID_PATTERN)
    # Ed25519 signing key (``<id>.key``) and X25519 key for sealed payloads (``<id>.enc.key``).
    identity_key: Path
    encryption_key: Path
    allowlist: Path
    state_dir: Path
    kafka: KafkaSettings = KafkaSettings()
    # Prometheus /metrics, /healthz and /readyz port; None disables the endpoint.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"
    metrics_tls: ServerTLSSettings | None = None
    # /metrics behind basic auth (probes on /healthz and /readyz stay open for the kubelet).
    metrics_basic_auth: BasicAuthSettings | None = None
    log: LogSettings = LogSettings()
    # torch intra-op threads; small models train fastest single-threaded.
    torch_threads: int = Field(default=1, ge=1)


class AggregatorConfig(ServiceConfig, FederationSettings):
    aggregator_id: str = "aggregator"
    # The dataset schema every bank shares (fixes the feature-statistics layout).
    schema_file: Path
    # Optional held-out data on which the aggregator scores each new global model.
    eval_data: Path | None = None
    # Loopback port of the admin endpoint (fraudfl admin); None disables it.
    admin_port: int | None = Field(default=None, ge=0, le=65535)


class BankNodeConfig(ServiceConfig, BankSettings):
    data: Path
    # The dataset's schema.toml; by default the one next to the data file.
    schema_file: Path | None = None
    # The consortium's secure-aggregation policy (fraudfl.rounds.policy) and the SHA-256 of
    # that exact file, from the consortium agreement: the bank refuses to start when the file
    # differs. Without both, the built-in defaults apply.
    policy: Path | None = None
    policy_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _masked_only(self) -> BankNodeConfig:
        if self.allow_plain_sum:
            raise ValueError("allow_plain_sum is for in-process simulations only: a bank node "
                             "never sends its update unmasked")
        return self

    @model_validator(mode="after")
    def _policy_is_pinned(self) -> BankNodeConfig:
        if (self.policy is None) != (self.policy_sha256 is None):
            raise ValueError("policy and policy_sha256 go together: a policy file is only "
                             "trusted with the hash it was agreed under")
        return self

    @property
    def schema_path(self) -> Path:
        return self.schema_file or self.data.parent / "schema.toml"


class ScoringLimits(_Section):
    """What one HTTP request may ask of the scoring service (413/422 above it, at once)."""

    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_batch: int = Field(default=10_000, ge=1, le=100_000)
    # Validation and scoring of one request; past it the answer is 503 (the work is dropped).
    request_timeout_s: float = Field(default=5.0, gt=0)


class StreamConfig(_Section):
    """The streaming scorer: transactions topic in, alerts topic out (docs/scoring.md)."""

    kafka: KafkaSettings = KafkaSettings()
    transactions_topic: str = Field(default="transactions", pattern=r"^[A-Za-z0-9._-]{1,249}$")
    alerts_topic: str = Field(default="fraud-alerts", pattern=r"^[A-Za-z0-9._-]{1,249}$")
    partitions: tuple[int, ...] | None = None
    alerts_only: bool = False
    # 1: one alert record per transaction; more: JSON arrays of up to this many alerts
    # (bounded like fraudfl.scoring.stream.MAX_ALERTS_PER_RECORD).
    alerts_per_record: int = Field(default=1, ge=1, le=2_000)
    # Offsets file; default: stream-offsets.json next to the artifact.
    state: Path | None = None


class ScoringConfig(_Section):
    """``fraudfl serve --config FILE``: a bank's scoring service."""

    # The model artifact directory the bank node writes (state_dir/model).
    model: Path
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    poll_interval: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    wait_for_model: bool = False
    id_field: str = "transaction_id"
    federation: str = "fraudfl"
    bank: str | None = None
    # HTTPS; with client_cafile, clients must present a certificate signed by it (mTLS).
    tls: ServerTLSSettings | None = None
    # Bearer tokens accepted on /score and /model: one per line (several allow rotation).
    # None leaves the API open (a loopback-only or mTLS deployment).
    auth_tokens_file: Path | None = None
    limits: ScoringLimits = ScoringLimits()
    stream: StreamConfig | None = None
    # A separate plain-HTTP /metrics port for Prometheus, so that the API port (TLS, tokens)
    # can be closed to everyone but the bank; None: /metrics on the API port only.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"
    log: LogSettings = LogSettings()


C = TypeVar("C", bound=ServiceConfig)


def load_config(cls: type[C], path: Path, env: Mapping[str, str] | None = None) -> C:
    """Read ``path`` as TOML, apply ``FRAUDFL_*`` overrides from ``env`` and validate.

    Key files named by the config are checked for readability here, so a service fails at start
    with the file's name rather than mid-round.
    """
    config = _load_model(cls, path, env)
    _check_readable(config.identity_key, "identity_key", path)
    _check_readable(config.encryption_key, "encryption_key", path)
    _check_readable(config.allowlist, "allowlist", path)
    _check_creatable_dir(config.state_dir, "state_dir", path)
    if isinstance(config, AggregatorConfig):
        _check_readable(config.schema_file, "schema_file", path)
        if config.eval_data is not None:
            _check_readable(config.eval_data, "eval_data", path)
    if isinstance(config, BankNodeConfig):
        _check_readable(config.data, "data", path)
        _check_readable(config.schema_path, "schema_file", path)
    return config


def load_scoring_config(path: Path, env: Mapping[str, str] | None = None) -> ScoringConfig:
    """:func:`load_config` for ``fraudfl serve``; the model may appear later (the bank node
    writes it), the TLS and token files must be readable now."""
    config = _load_model(ScoringConfig, path, env)
    for key, file in (
        ("auth_tokens_file", config.auth_tokens_file),
        ("tls.certfile", None if config.tls is None else config.tls.certfile),
        ("tls.keyfile", None if config.tls is None else config.tls.keyfile),
        ("tls.client_cafile", None if config.tls is None else config.tls.client_cafile),
    ):
        if file is not None:
            _check_readable(file, key, path)
    return config


M = TypeVar("M", bound=BaseModel)


def _load_model(cls: type[M], path: Path, env: Mapping[str, str] | None) -> M:
    try:
        raw_text = path.read_bytes()
    except OSError as exc:
        raise FraudflError(f"{path}: cannot read config file: {exc.strerror}") from exc
    try:
        data: dict[str, Any] = tomllib.loads(raw_text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FraudflError(f"{path}: not valid TOML ({exc})") from exc
    sources = _apply_env(cls, data, os.environ if env is None else env)
    _resolve_paths(data, path.parent)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise FraudflError(_describe(exc, path, sources)) from exc


def check_settings(cls: type[ServiceConfig], data: Mapping[str, Any], source: str) -> None:
    """Validate settings about to be written as ``source`` (``fraudfl init``), so that a bad
    value is refused before anything is written rather than when the service starts."""
    try:
        cls.model_validate(data)
    except ValidationError as exc:
        raise FraudflError(_describe(exc, Path(source), {})) from exc


def _apply_env(
    cls: type[BaseModel], data: dict[str, Any], env: Mapping[str, str]
) -> dict[tuple[str, ...], str]:
    """Merge overrides into ``data``; returns which key paths came from which variable."""
    sources: dict[tuple[str, ...], str] = {}
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = tuple(k.lower() for k in name[len(ENV_PREFIX) :].split(ENV_SEPARATOR))
        if not _is_field_path(cls, keys):
            # FRAUDFL_* variables may belong to the other service or to tools; only a path
            # this config knows is an override. One neither service knows is likely a typo
            # (FRAUDFL_KAFKA__BOOTSTRAP_SERVER) that would otherwise vanish without a trace.
            known = any(
                _is_field_path(c, keys) for c in (AggregatorConfig, BankNodeConfig, ScoringConfig)
            )
            log.log(
                logging.DEBUG if known else logging.WARNING,
                "ignoring %s: not a setting of %s%s", name, cls.__name__,
                "" if known else " nor of the other service (a typo?)",
            )
            continue
        node = data
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise FraudflError(f"{name}: {'.'.join(keys[:-1])} is not a table in the file")
            node = child
        node[keys[-1]] = (
            env[name] if _is_verbatim(cls, keys) else _parse_env_value(env[name])
        )
        sources[keys] = name
    return sources


def _is_field_path(cls: type[BaseModel], keys: tuple[str, ...]) -> bool:
    model: Any = cls
    for i, key in enumerate(keys):
        fields = getattr(model, "model_fields", None)
        if fields is None or key not in fields:
            return False
        model = _section(fields[key].annotation)
        if i < len(keys) - 1 and model is None:
            return False
    return True


def _section(annotation: Any) -> type[BaseModel] | None:
    """The table type of a field (``Section`` or ``Section | None``), else None."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _field_annotation(cls: type[BaseModel], keys: tuple[str, ...]) -> Any:
    model: Any = cls
    for key in keys[:-1]:
        model = _section(model.model_fields[key].annotation)
    return model.model_fields[keys[-1]].annotation


def _is_verbatim(cls: type[BaseModel], keys: tuple[str, ...]) -> bool:
    """Text, path and secret settings take an override's value as it is: parsing it as TOML
    would turn a password such as ``123456`` or ``true`` into a number or a boolean."""
    annotation = _field_annotation(cls, keys)
    allowed = set(get_args(annotation)) or {annotation}
    return bool(allowed & {str, Path, SecretStr}) and not (allowed - {str, Path, SecretStr,
                                                                        type(None)})


def _parse_env_value(value: str) -> Any:
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


_PATH_FIELDS: tuple[tuple[str, ...], ...] = (
    ("identity_key",),
    ("encryption_key",),
    ("allowlist",),
    ("schema_file",),
    ("state_dir",),
    ("data",),
    ("eval_data",),
    ("policy",),
    ("kafka", "ssl_cafile"),
    ("kafka", "ssl_certfile"),
    ("kafka", "ssl_keyfile"),
    ("kafka", "sasl_oauth_token_file"),
    ("metrics_tls", "certfile"),
    ("metrics_tls", "keyfile"),
    ("metrics_tls", "client_cafile"),
    ("model",),
    ("auth_tokens_file",),
    ("tls", "certfile"),
    ("tls", "keyfile"),
    ("tls", "client_cafile"),
    ("stream", "state"),
    ("stream", "kafka", "ssl_cafile"),
    ("stream", "kafka", "ssl_certfile"),
    ("stream", "kafka", "ssl_keyfile"),
    ("stream", "kafka", "sasl_oauth_token_file"),
)


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    for keys in _PATH_FIELDS:
        node: Any = data
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(keys[-1]), str):
            value = Path(node[keys[-1]]).expanduser()
            node[keys[-1]] = (value if value.is_absolute() else base / value).resolve()


def _describe(exc: ValidationError, path: Path, sources: Mapping[tuple[str, ...], str]) -> str:
    err = exc.errors()[0]
    loc = tuple(str(p) for p in err["loc"])
    key = ".".join(loc) or "(top level)"
    origin = sources.get(loc)
    where = f"{origin} (overrides {path})" if origin else str(path)
    kind = err["type"]
    if kind == "extra_forbidden":
        what = "unknown key"
    elif kind == "missing":
        what = "required key is missing"
    elif is_secret_key(loc[-1] if loc else ""):
        what = f"{err['msg']} (value hidden)"
    else:
        what = f"{err['msg']} (got {err.get('input')!r})"
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return f"{where}: {key}: {what}{suffix}"


def is_secret_key(name: str) -> bool:
    """Settings whose values are never echoed back."""
    return any(w in name for w in ("password", "passphrase", "token", "secret"))


def _check_creatable_dir(target: Path, key: str, config_path: Path) -> None:
    """``target`` is a directory, or one can be made there (the services create it)."""
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise FraudflError(f"{config_path}: {key}: {existing} exists and is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FraudflError(f"{config_path}: {key}: {existing} is not writable")


def _check_readable(target: Path, key: str, config_path: Path) -> None:
    try:
        with target.open("rb"):
            pass
    except OSError as exc:
        raise FraudflError(
            f"{config_path}: {key}: cannot read {target}: {exc.strerror}"
        ) from exc
