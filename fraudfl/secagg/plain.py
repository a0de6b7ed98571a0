"""The same sum without masking: a round of the engine with secure aggregation switched off.

Research runs (``fraudfl simulate`` without ``--secure-aggregation``) need the sum the protocol
would produce, fast. :class:`PlainSumServer` and :class:`PlainSumClient` keep the protocol's
interfaces (setup, stage deadline, survivors, ring-sum result, checkpoint form) and its
quantisation, so the unmasked result is bit-identical to what :class:`SecAggServer` unmasks from
the same inputs; only the key agreement, secret sharing and masks are skipped. There is one
stage: the bank answers the signed setup with its quantised input (:class:`PlainInput`).

A bank answers a plain setup only when its own settings allow it
(``BankSettings.allow_plain_sum``, refused in a service's configuration): the input reaches the
server in the clear.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt

from fraudfl.identity import Allowlist, Identity
from fraudfl.secagg.auth import b64, unb64
from fraudfl.secagg.client import from_server
from fraudfl.secagg.errors import MessageRejected, RejectReason, UsageError
from fraudfl.secagg.messages import (
    STAGE_ADVERTISE,
    STAGE_SETUP,
    PlainInput,
    RoundSetup,
    encode,
)
from fraudfl.secagg.params import RoundParams
from fraudfl.secagg.quantize import Rounding
from fraudfl.secagg.server import Outgoing, ServerStatus, SumServer, from_participant
from fraudfl.secagg.state import params_from_dict, params_to_dict

log = logging.getLogger(__name__)

STATE_VERSION = 1


class PlainSumServer(SumServer):
    """One plain-sum round, from the server's side (the interface of ``SecAggServer``)."""

    def __init__(
        self, identity: Identity, allowlist: Allowlist, federation_id: str, round_number: int,
        params: RoundParams,
    ) -> None:
        super().__init__(identity, allowlist, federation_id, round_number, params)
        self.answered: list[int] = []
        self.seen: dict[int, str] = {}

    def _summed(self) -> list[int]:
        return self.answered

    def _expected(self) -> list[int]:
        return list(range(self.params.n)) if self.stage == STAGE_ADVERTISE else []

    def _answered(self) -> set[int]:
        return set(self.answered)

    def start(self) -> list[Outgoing]:
        if self.stage != STAGE_SETUP:
            raise RuntimeError("round already started")
        self.stage = STAGE_ADVERTISE
        data = encode(self.identity, self.federation_id, self.round, RoundSetup(self.params))
        self.outbox = [Outgoing(self.params.participants, data)]
        return list(self.outbox)

    def receive(self, data: bytes) -> list[Outgoing]:
        msg, sender = from_participant(
            data, self.federation_id, self.round, self.params, self.allowlist
        )
        h = msg.header
        mdigest = msg.signature.hex()
        previous = self.seen.get(sender)
        if previous == mdigest:
            return []
        if previous is not None:
            raise MessageRejected(RejectReason.DUPLICATE, f"{h.sender!r} already sent its input")
        if self.status is not ServerStatus.RUNNING or self.stage != STAGE_ADVERTISE:
            raise MessageRejected(RejectReason.WRONG_STAGE, f"round is {self.status.value}")
        if not isinstance(msg.payload, PlainInput):
            raise MessageRejected(
                RejectReason.MALFORMED, f"a plain-sum round takes no {type(msg.payload).__name__}"
            )
        vector = msg.payload.vector
        quantizer = self.params.quantizer()
        if vector.dtype != np.dtype(quantizer.dtype) or len(vector) != self.params.masked_length:
            raise MessageRejected(
                RejectReason.WRONG_LENGTH,
                f"input of {len(vector)} x {vector.dtype}, expected "
                f"{self.params.masked_length} x {np.dtype(quantizer.dtype)}",
            )
        if self.total is None:
            self.total = vector.astype(quantizer.dtype, copy=True)
        else:
            self.total += vector  # wraps modulo 2^bits, as the masked sum does
        self.answered.append(sender)
        self.seen[sender] = mdigest
        if len(self.answered) == self.params.n:
            return self._close()
        return []

    def stage_timeout(self) -> list[Outgoing]:
        if self.status is not ServerStatus.RUNNING or self.stage == STAGE_SETUP:
            return []
        return self._close()

    def _close(self) -> list[Outgoing]:
        if len(self.answered) < self.params.threshold:
            self.status = ServerStatus.ABORTED
            self.abort_reason = (
                f"{len(self.answered)} inputs, below the threshold {self.params.threshold}"
            )
            self.total = None
            log.warning("round %d aborted: %s", self.round, self.abort_reason)
            return []
        self.answered.sort()
        self.status = ServerStatus.DONE
        self.outbox = []
        return []

    def to_dict(self) -> dict[str, Any]:
        return {
            "plain_version": STATE_VERSION,
            "federation_id": self.federation_id,
            "round": self.round,
            "params": params_to_dict(self.params),
            "stage": self.stage,
            "status": self.status.value,
            "abort_reason": self.abort_reason,
            "total": None if self.total is None else b64(self.total.tobytes()),
            "answered": self.answered,
            "seen": {str(k): v for k, v in self.seen.items()},
            "outbox": [[list(o.recipients), b64(o.data)] for o in self.outbox],
        }

    @classmethod
    def from_dict(
        cls, state: dict[str, Any], identity: Identity, allowlist: Allowlist
    ) -> PlainSumServer:
        if state.get("plain_version") != STATE_VERSION:
            raise ValueError("unsupported plain-sum server state version")
        params = params_from_dict(state["params"])
        server = cls(identity, allowlist, state["federation_id"], int(state["round"]), params)
        server.stage = int(state["stage"])
        server.status = ServerStatus(state["status"])
        server.abort_reason = str(state["abort_reason"])
        if state["total"] is not None:
            dtype = np.dtype(params.quantizer().dtype)
            server.total = np.frombuffer(unb64(state["total"]), dtype=dtype).copy()
        server.answered = [int(i) for i in state["answered"]]
        server.seen = {int(k): str(v) for k, v in state["seen"].items()}
        server.outbox = [Outgoing(tuple(r), unb64(d)) for r, d in state["outbox"]]
        return server


class PlainSumClient:
    """A bank's side of a plain-sum round: answers the server's signed setup with its input."""

    def __init__(
        self, identity: Identity, allowlist: Allowlist, federation_id: str,
        server_id: str = "aggregator", *, rounding: Rounding = Rounding.NEAREST,
    ) -> None:
        self.identity = identity
        self.allowlist = allowlist
        self.federation_id = federation_id
        self.server_id = server_id
        self.rounding = rounding
        self.last_round = -1
        self._update: npt.NDArray[np.float64] | None = None
        self._weight: float | None = None
        self._reply: tuple[bytes, bytes] | None = None  # (setup, answer) of the last round

    def set_input(self, update: npt.ArrayLike, weight: float | None = None) -> None:
        self._update = np.asarray(update, dtype=np.float64).ravel().copy()
        self._weight = weight

    def receive(self, data: bytes) -> list[bytes]:
        msg = from_server(data, self.federation_id, self.server_id, self.allowlist)
        h = msg.header
        if not isinstance(msg.payload, RoundSetup):
            raise MessageRejected(
                RejectReason.WRONG_STAGE, f"a plain-sum round has no {type(msg.payload).__name__}"
            )
        if h.round == self.last_round and self._reply is not None:
            if self._reply[0] == data:
                return [self._reply[1]]
            raise MessageRejected(RejectReason.DUPLICATE, f"round {h.round} was already set up")
        if h.round <= self.last_round:
            raise MessageRejected(
                RejectReason.WRONG_ROUND, f"round {h.round} is not after round {self.last_round}"
            )
        p = msg.payload.params
        if p.index(self.identity.participant_id) is None:
            raise MessageRejected(RejectReason.INCONSISTENT, "this bank is not a participant")
        update, weight = self._update, self._weight
        if update is None:
            raise UsageError("set_input() before the round's setup")
        if len(update) != p.vector_length:
            raise UsageError(f"input has {len(update)} values, the round sums {p.vector_length}")
        quantizer = p.quantizer(self.rounding)
        if p.weighted:
            if weight is None:
                raise UsageError("this round is weighted: set_input(update, weight=...)")
            vector = quantizer.encode_weighted(update, weight)
        else:
            vector = quantizer.encode(update)
        reply = encode(self.identity, self.federation_id, h.round, PlainInput(vector))
        self.last_round = h.round
        self._reply = (bytes(data), reply)
        self._update = self._weight = None
        return [reply]

    def to_dict(self) -> dict[str, Any]:
        return {
            "last_round": self.last_round,
            "reply": None if self._reply is None else [b64(x) for x in self._reply],
        }

    @classmethod
    def from_dict(
        cls, state: dict[str, Any], identity: Identity, allowlist: Allowlist,
        federation_id: str, server_id: str,
    ) -> PlainSumClient:
        client = cls(identity, allowlist, federation_id, server_id)
        client.last_round = int(state["last_round"])
        reply = state.get("reply")
        if reply is not None:
            client._reply = (unb64(reply[0]), unb64(reply[1]))
        return client
