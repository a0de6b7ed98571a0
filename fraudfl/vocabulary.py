"""The words every layer shares: participant ids, round kinds, stages, abort and decline reasons.

One definition each, imported by the protocol (``fraudfl.rounds``, ``fraudfl.secagg``), the
configuration, the services and the metrics, so that an id the key tool accepts is one the
protocol accepts, and a stage or reason the state machines report is a label the metrics know.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

# A participant, federation or run id: what the key files, the allowlist, the configuration,
# the topic names and the secure-aggregation wire format all accept.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
ID_RE = re.compile(ID_PATTERN)

# Round 0 computes the feature statistics; rounds 1, 2, ... train the model: a neural model's
# update ("train"), or for trees the sketch of the pipeline's features ("tree_bins", once) and
# then one boosting step per round ("tree": label counts, a level's histograms, leaf sums).
RoundKind = Literal["stats", "train", "tree_bins", "tree"]
ROUND_KINDS: tuple[RoundKind, ...] = get_args(RoundKind)

# The secure-aggregation stages, which the aggregator times out separately (the keys of
# ``[timeouts]`` in its config). The statistics round runs the same stages; a plain-sum round
# (simulation) has the first only.
Stage = Literal[
    "advertise_keys",
    "share_keys",
    "masked_input",
    "consistency_check",
    "unmask",
]
STAGES: tuple[Stage, ...] = get_args(Stage)

# Why the aggregator gave a round up.
AbortReason = Literal[
    "timeout",
    "below_threshold",
    "no_eligible_banks",
    "unmasking_failed",
    "invalid_sum",
    "aggregator_restart",
    "internal_error",
]
ABORT_REASONS: tuple[AbortReason, ...] = get_args(AbortReason)

# Why a bank declines a round (the Decline message's reason; "policy" details name the rule).
DeclineReason = Literal["privacy_budget", "policy", "no_data", "error"]
DECLINE_REASONS: tuple[DeclineReason, ...] = get_args(DeclineReason)


def valid_id(value: str) -> bool:
    return ID_RE.fullmatch(value) is not None
