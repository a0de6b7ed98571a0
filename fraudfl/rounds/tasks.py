"""Round kinds as secure-sum tasks: what each bank sums, and what the aggregator does with it.

Every round announces a task kind and its parameters. Each kind is one :class:`Task`: the
aggregator's half says which sum the round needs (:meth:`Task.shape`), what the announcement
carries (:meth:`Task.announce`) and what becomes of the unmasked sum (:meth:`Task.reduce`,
which sees the *sum* only); the bank's half says whether the bank can start
(:meth:`Task.ready`) and computes its one vector and weight (:meth:`Task.contribute`), charging
its privacy accountant before it reads a row (a task over budget is declined, a task outside
the consortium policy refused). The engine's state machines
(:class:`~fraudfl.rounds.orchestrator.Orchestrator`,
:class:`~fraudfl.rounds.participant.BankParticipant`) do the rest the same way for every kind:
selection, secure aggregation or its plain twin, deadlines, events, checkpoints.

Two kinds are here: ``stats`` (round 0: the feature statistics, quantile sketches and category
counts, summed exactly; the aggregator fits the feature pipeline and the initial model) and
``train`` (a weighted model update; the aggregator applies the strategy); the trees' kinds
(``tree_bins``, ``tree``) are in :mod:`fraudfl.rounds.tree_tasks`. A new capability is a
new kind here. Several sums in one step are one vector laid out by the task (as the trees'
level task lays out every open node's histograms), so one secure sum serves them all.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, NamedTuple

import numpy as np
import numpy.typing as npt

from fraudfl.data.pipeline import FeaturePipeline
from fraudfl.data.stats import FeatureStats, compute_stats
from fraudfl.errors import FraudflError
from fraudfl.models import ModelSpec, get_flat_params
from fraudfl.personalization import ParamPartition
from fraudfl.privacy.accountant import BudgetExhausted
from fraudfl.privacy.bank_level import (
    BankDPConfig,
    effective_noise_multiplier,
    max_sum_norm,
    privatize_update,
)
from fraudfl.rounds import exact_sum
from fraudfl.rounds.messages import (
    Announcement,
    BankDPInstructions,
    TrainInstructions,
    params_digest,
)
from fraudfl.rounds.policy import PolicyRefusal, Refusal
from fraudfl.secagg.messages import RoundSetup
from fraudfl.secagg.messages import decode as decode_secagg
from fraudfl.strategy import SummedUpdate
from fraudfl.training.local import LocalResult, train_local
from fraudfl.vocabulary import DeclineReason, RoundKind

if TYPE_CHECKING:  # the state machines import this module
    from fraudfl.rounds.orchestrator import Orchestrator, RoundRecord
    from fraudfl.rounds.participant import BankParticipant
    from fraudfl.secagg.server import SumServer

log = logging.getLogger(__name__)


class SumShape(NamedTuple):
    """The secure sum a round asks for (the secure-aggregation setup's parameters)."""

    vector_length: int
    weighted: bool
    bits: int
    clip: float


@dataclass(frozen=True)
class Contribution:
    """A bank's input to the sum: the vector, its weight (weighted sums only) and what the
    bank reports about it locally (never sent)."""

    vector: npt.NDArray[np.float64]
    weight: float | None
    examples: int
    loss: float = math.nan
    trained: bool = False


class Declined(NamedTuple):
    reason: DeclineReason
    detail: str


Outcome = Contribution | Declined | PolicyRefusal


class Task(ABC):
    """One round kind: the aggregator's half and the bank's half."""

    kind: ClassVar[RoundKind]

    # -- aggregator ----------------------------------------------------------------------------
    @abstractmethod
    def shape(self, orch: Orchestrator, selected: list[str]) -> SumShape: ...

    @abstractmethod
    def announce(self, orch: Orchestrator, selected: list[str]) -> Announcement: ...

    @abstractmethod
    def reduce(
        self, orch: Orchestrator, server: SumServer, rec: RoundRecord
    ) -> str | None:
        """Consume the unmasked sum; why it is refused, or None."""

    # -- bank ----------------------------------------------------------------------------------
    def ready(self, bank: BankParticipant, ann: Announcement) -> bool:
        """Whether the bank has what the task needs (else the announcement waits)."""
        return True

    @abstractmethod
    def contribute(self, bank: BankParticipant, ann: Announcement, setup: bytes) -> Outcome: ...


class StatsTask(Task):
    """Round 0: feature statistics (counts, sums, sketches) summed exactly as integer digits."""

    kind: ClassVar[RoundKind] = "stats"

    def shape(self, orch: Orchestrator, selected: list[str]) -> SumShape:
        length = FeatureStats.vector_size(orch.schema) * exact_sum.DEFAULT_LIMBS
        return SumShape(length, False, 32, float(exact_sum.levels(len(selected), 32)))

    def announce(self, orch: Orchestrator, selected: list[str]) -> Announcement:
        return Announcement(
            round=orch.round, kind="stats", participants=tuple(selected),
            secure=orch.config.secagg.enabled, stats_frac_bits=exact_sum.DEFAULT_FRAC_BITS,
            planned_rounds=orch.planned_rounds,
        )

    def reduce(
        self, orch: Orchestrator, server: SumServer, rec: RoundRecord
    ) -> str | None:
        ring_sum = server.params.quantizer().decode(server.result)
        totals = exact_sum.decode(ring_sum, server.params.n, 32)
        stats = FeatureStats.from_vector(orch.schema, totals)
        orch.pipeline = FeaturePipeline.fit(stats, standardize=orch.config.features.standardize)
        t = orch.config.training
        if t.model == "gbdt":
            from fraudfl.rounds.tree_tasks import start_tree_job

            start_tree_job(orch)
            return None
        orch.spec = ModelSpec(
            kind=t.model, num_features=orch.pipeline.num_features,
            num_classes=orch.pipeline.num_classes, hidden=tuple(t.hidden),
            embed=orch.pipeline.hashed_blocks(),
        )
        orch.params = get_flat_params(orch.spec.build(seed=orch.config.rounds.seed))
        orch.model_version = 0
        log.info("fitted the feature pipeline from %d rows of %d banks; model has %d parameters",
                 stats.count, len(server.survivors), len(orch.params))
        return None

    def contribute(self, bank: BankParticipant, ann: Announcement, setup: bytes) -> Outcome:
        stats = compute_stats(bank.frame, bank.schema, source=bank.source)
        frac = ann.stats_frac_bits or exact_sum.DEFAULT_FRAC_BITS
        digits = exact_sum.encode(stats.to_vector(), len(ann.participants), 32, frac)
        # Answered once per federation (policy) once its unmask shares are out: a second
        # answer, with a different set of banks, would give its statistics away by subtraction.
        bank.stats_round = ann.round
        return Contribution(digits, None, stats.count)


class TrainTask(Task):
    """A training round: each bank's weighted update from the announced global model; the
    strategy turns the sum of updates and of weights into the next model."""

    kind: ClassVar[RoundKind] = "train"

    def shape(self, orch: Orchestrator, selected: list[str]) -> SumShape:
        assert orch.params is not None
        partition = orch.partition()
        # FedPer: the banks' heads never leave them, only the body is summed.
        length = len(orch.params) if partition is None else partition.shared_size
        sa = orch.config.secagg
        return SumShape(length, True, sa.bits, sa.clip_range)

    def announce(self, orch: Orchestrator, selected: list[str]) -> Announcement:
        assert orch.params is not None
        instructions = orch.round_strategy().configure_round(orch.round, orch.params)
        cfg = instructions.config
        training, dp = orch.config.training, orch.config.bank_dp
        return Announcement(
            round=orch.round, kind="train", participants=tuple(selected),
            secure=orch.config.secagg.enabled, model_version=orch.model_version,
            model_sha256=params_digest(orch.params),
            train=TrainInstructions(
                local_epochs=int(cfg.get("local_epochs", training.local_epochs)),
                batch_size=int(cfg.get("batch_size", training.batch_size)),
                lr=float(cfg.get("lr", training.lr)),
                mu=float(cfg.get("mu", 0.0)),
                max_steps=training.max_steps,
                pos_weight=training.pos_weight,
                focal_gamma=training.focal_gamma,
                accept_partial_work=instructions.accept_partial_work,
            ),
            bank_dp=BankDPInstructions(
                enabled=dp.enabled, clip_norm=dp.clip_norm, noise_multiplier=dp.noise_multiplier,
                expected_banks=len(selected), total_banks=len(orch.banks),
            ),
            weight_scale=orch.config.secagg.weight_scale,
            planned_rounds=orch.planned_rounds,
            personal_layers=training.personal_layers,
        )

    def reduce(
        self, orch: Orchestrator, server: SumServer, rec: RoundRecord
    ) -> str | None:
        assert orch.params is not None
        quantizer = server.params.quantizer()
        update_sum, weight_sum = quantizer.decode_weighted(server.result)
        survivors = len(rec.survivors)
        problem = _implausible_weight_sum(
            weight_sum, survivors, server.params.weight_max,
            quantizer.weight_error_bound(survivors), bank_dp=orch.config.bank_dp.enabled,
        )
        if problem is None and not np.all(np.isfinite(update_sum / weight_sum)):
            problem = "the averaged update is not finite"
        dp = orch.config.bank_dp
        if problem is None and dp.enabled:
            # Honest banks clip their updates to C: a longer sum carries a vector no honest
            # bank sent (a malicious bank can still add any vector within the bound).
            bound = max_sum_norm(
                BankDPConfig(dp.clip_norm, dp.noise_multiplier, len(rec.selected),
                             len(orch.banks)),
                survivors, len(update_sum), quantizer.error_bound(survivors),
            )
            norm = float(np.linalg.norm(update_sum))
            if norm > bound:
                problem = (f"the sum's norm {norm:.4g} exceeds {bound:.4g}, the most "
                           f"{survivors} clipped updates can reach")
        new_params: npt.NDArray[np.float32] | None = None
        if problem is None:
            # Under bank-level DP the strategy averages over the banks announced (DP-FedAvg's
            # fixed denominator, McMahan et al. 2018), not over those whose input is in the sum:
            # the accounted mechanism is the noised sum, dividing it by a public constant is
            # post-processing, whereas the realised count would also release who took part.
            denominator = float(len(rec.selected)) if dp.enabled else weight_sum
            new_params = np.asarray(
                orch.round_strategy().aggregate(rec.round, orch.params, SummedUpdate(
                    update_sum, denominator, survivors
                )),
                dtype=np.float32,
            )
            if not np.all(np.isfinite(new_params)):
                problem = "the strategy's new model is not finite"
        if problem is not None:
            # A bank can put any value into its masked vector (no range proofs): a sum that
            # honest banks cannot produce would scale or corrupt everyone's model.
            log.error("round %d: refusing the unmasked sum: %s", rec.round, problem)
            return f"invalid sum: {problem}"
        if dp.enabled and rec.survivors:
            # Charged at the noise actually in the sum: dropouts' shares are missing from it.
            sigma = effective_noise_multiplier(dp.noise_multiplier, len(rec.selected), survivors)
            rate = len(rec.selected) / max(1, len(orch.banks))
            orch.federation_accountant.charge(sigma, rate, 1)
            rec.federation_epsilon = orch.federation_accountant.epsilon(dp.delta)
        assert new_params is not None
        orch.params = new_params
        orch.completed += 1
        orch.model_version = rec.round
        return None

    def ready(self, bank: BankParticipant, ann: Announcement) -> bool:
        info = bank.model_info
        return (info is not None and info.version == ann.model_version
                and info.sha256 == ann.model_sha256)

    def contribute(self, bank: BankParticipant, ann: Announcement, setup: bytes) -> Outcome:
        assert bank.model_info is not None and bank.params is not None and ann.train is not None
        spec = ModelSpec.from_dict(bank.model_info.spec)
        model = spec.build()
        # Everything the announcement asks is checked before a row is read or privacy spent,
        # and before the bank's state (its FedPer head) changes.
        try:
            cfg = bank.train_config(spec, ann.train)
            partition = ParamPartition.for_model(model, ann.personal_layers) \
                if ann.personal_layers else None
            bank_dp = None
            if ann.bank_dp is not None and ann.bank_dp.enabled:
                d = ann.bank_dp
                bank_dp = BankDPConfig(d.clip_norm, d.noise_multiplier, d.expected_banks,
                                       d.total_banks)
        except FraudflError as exc:
            return PolicyRefusal(Refusal.OUT_OF_BOUNDS, f"training instructions: {exc}")
        length = len(bank.params) if partition is None else partition.shared_size
        setup_params = decode_secagg(setup).payload
        assert isinstance(setup_params, RoundSetup)  # checked by the policy before
        if setup_params.params.vector_length != length or not setup_params.params.weighted:
            # Found now rather than after training, when masking would fail on it.
            return PolicyRefusal(
                Refusal.SETUP_MISMATCH,
                f"setup sums {setup_params.params.vector_length} values, the update has {length}",
            )
        X, y = bank.training_data()
        bank.last_train = ann.train
        fedper = bank.fedper_state(model, ann.personal_layers)
        # FedPer: train the global body with this bank's own head, which never leaves it.
        start = bank.params if fedper is None else fedper.start_params(bank.params)
        rng = bank.rng(ann.round)
        work_fraction = bank.work_fraction(ann.round) if ann.train.accept_partial_work else 1.0
        privacy = bank.config.privacy
        result: LocalResult
        if privacy.enabled:
            # Imports Opacus (a second and ~150 MB): only banks under DP pay for it.
            from fraudfl.training.private import DPConfig, train_private

            try:
                noise = bank.noise_multiplier(cfg, len(y))
            except FraudflError as exc:  # no noise multiplier reaches the target epsilon
                return Declined("privacy_budget", str(exc))
            try:
                # The accountant authorises the whole round first and refuses, before any data
                # is touched, if it would exceed the budget: then the bank declines.
                result = train_private(
                    model, start, X, y, cfg, rng=rng, accountant=bank.accountant,
                    dp=DPConfig(noise, privacy.max_grad_norm, privacy.engine),
                    work_fraction=work_fraction,
                )
            except BudgetExhausted as exc:
                return Declined("privacy_budget", str(exc))
            if privacy.noise_multiplier is None and bank.calibration is not None:
                bank.calibration = bank.calibration.model_copy(
                    update={"rounds_trained": bank.calibration.rounds_trained + 1}
                )
        else:
            result = train_local(model, start, X, y, cfg, rng=rng, work_fraction=work_fraction)
        if fedper is None:
            update = result.params.astype(np.float64) - bank.params.astype(np.float64)
        else:
            update = fedper.finish_round(result.params, bank.params).astype(np.float64)
        weight = (1.0 if bank.policy.update_weight == "constant"
                  else min(1.0, result.num_examples / ann.weight_scale))
        if bank_dp is not None:
            update = privatize_update(update, bank_dp, rng).astype(np.float64)
            # DP-FedAvg sums clipped updates with weight 1: the sum's sensitivity is C.
            weight = 1.0
        return Contribution(update, weight, result.num_examples, result.loss, trained=True)


def _implausible_weight_sum(
    weight_sum: float, banks: int, weight_max: float, tolerance: float, *, bank_dp: bool
) -> str | None:
    """Why ``weight_sum`` cannot come from ``banks`` honest banks (None if it can).

    An honest bank's weight is in (0, weight_max]; under bank-level DP it is exactly 1.
    """
    if not math.isfinite(weight_sum) or weight_sum <= 0:
        return f"weight sum {weight_sum:g} is not positive"
    if bank_dp:
        if abs(weight_sum - banks) > tolerance:
            return f"weight sum {weight_sum:g} is not {banks} (one per bank under bank DP)"
    elif weight_sum > banks * weight_max + tolerance:
        return (f"weight sum {weight_sum:g} exceeds what {banks} banks can send "
                f"({banks} x {weight_max:g})")
    return None


TASKS: dict[RoundKind, Task] = {task.kind: task for task in (StatsTask(), TrainTask())}

# The tree kinds build on the classes above and add themselves to TASKS on import.
import fraudfl.rounds.tree_tasks  # noqa: E402, F401
