"""Secure aggregation (SecAgg of Bonawitz et al. 2017, SecAgg+ of Bell et al. 2020), sans-IO.

The aggregator learns the sum of the banks' quantised updates and nothing about any single
update, even when banks drop out mid-round. See ``docs/secure-aggregation.md``.
"""

from fraudfl.secagg.client import ClientStage, SecAggClient
from fraudfl.secagg.errors import (
    MessageRejected,
    RejectReason,
    RoundAborted,
    SecAggError,
    UsageError,
)
from fraudfl.secagg.inmemory import (
    InMemoryFederation,
    SecureSumConfig,
    secure_sum,
    secure_weighted_sum,
)
from fraudfl.secagg.params import RoundParams
from fraudfl.secagg.quantize import Quantizer, Rounding
from fraudfl.secagg.server import Outgoing, SecAggServer, ServerStatus

__all__ = [
    "ClientStage",
    "InMemoryFederation",
    "MessageRejected",
    "Outgoing",
    "Quantizer",
    "RejectReason",
    "RoundAborted",
    "RoundParams",
    "Rounding",
    "SecAggClient",
    "SecAggError",
    "SecAggServer",
    "SecureSumConfig",
    "ServerStatus",
    "UsageError",
    "secure_sum",
    "secure_weighted_sum",
]
