"""The aggregator's side of SecAgg / SecAgg+ as a sans-IO state machine.

``start()`` announces the round; ``receive(bytes)`` takes one bank message; ``stage_timeout()``
closes the current stage with whoever has answered. Each returns the :class:`Outgoing`
messages to deliver. A stage also closes by itself once every expected bank has answered. The
server accumulates masked inputs as they arrive (one running uint sum, never the individual
vectors) and, in the last stage, reconstructs only the self-mask seeds of banks whose input is
in the sum and only the mask keys of banks that dropped after sharing: it never accepts both
kinds of share for one bank.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from fraudfl.identity import Allowlist, Identity
from fraudfl.secagg import crypto, shamir
from fraudfl.secagg.auth import authenticate, b64, unb64
from fraudfl.secagg.errors import MessageRejected, RejectReason
from fraudfl.secagg.graph import commitment, graph_seed, mixed_seed
from fraudfl.secagg.messages import (
    KIND_MASK_KEY,
    KIND_SELF_MASK,
    STAGE_ADVERTISE,
    STAGE_CONSISTENCY,
    STAGE_MASKED,
    STAGE_NAMES,
    STAGE_REVEAL,
    STAGE_SETUP,
    STAGE_SHARE,
    STAGE_UNMASK,
    Abort,
    AdvertiseKeys,
    KeyEntry,
    KeyList,
    MaskedInput,
    Message,
    NonceList,
    NonceReveal,
    Payload,
    RoundSetup,
    ShareKeys,
    ShareRouting,
    SurvivorConfirm,
    SurvivorList,
    UnmaskRequest,
    UnmaskShares,
    decode,
    encode,
)
from fraudfl.secagg.params import RoundParams
from fraudfl.secagg.state import params_from_dict, params_to_dict

log = logging.getLogger(__name__)

_BANK_PAYLOAD = {
    STAGE_ADVERTISE: AdvertiseKeys,
    STAGE_REVEAL: NonceReveal,
    STAGE_SHARE: ShareKeys,
    STAGE_MASKED: MaskedInput,
    STAGE_CONSISTENCY: SurvivorConfirm,
    STAGE_UNMASK: UnmaskShares,
}


class ServerStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"
    ABORTED = "aborted"


@dataclass(frozen=True)
class Outgoing:
    """One message for the transport to deliver to each of ``recipients``."""

    recipients: tuple[str, ...]
    data: bytes


def round_params(
    federation_id: str, round_number: int, participants: Sequence[str], *, threshold: int,
    vector_length: int, neighbours: int = 0, weighted: bool = False, bits: int = 32,
    clip: float = 1.0, weight_max: float = 1.0,
) -> RoundParams:
    """A round's public parameters, participants sorted, with the agreed graph seed."""
    names = tuple(sorted(participants))
    return RoundParams(
        participants=names, threshold=threshold, neighbours=neighbours,
        vector_length=vector_length, weighted=weighted, bits=bits, clip=clip,
        weight_max=weight_max, graph_seed=graph_seed(federation_id, round_number, names),
    )


def from_participant(
    data: bytes, federation_id: str, round_number: int, params: RoundParams,
    allowlist: Allowlist,
) -> tuple[Message, int]:
    """A bank's message to the server, decoded and authenticated, with the sender's index;
    :class:`MessageRejected` if it is not of this federation, round and participant set."""
    msg = decode(data)
    h = msg.header
    if h.federation_id != federation_id:
        raise MessageRejected(
            RejectReason.WRONG_FEDERATION, f"message for federation {h.federation_id!r}"
        )
    if h.round != round_number:
        raise MessageRejected(
            RejectReason.WRONG_ROUND, f"message for round {h.round}, this is {round_number}"
        )
    sender = params.index(h.sender)
    if sender is None:
        raise MessageRejected(
            RejectReason.UNKNOWN_SENDER, f"{h.sender!r} is not a participant of this round"
        )
    authenticate(allowlist, msg)
    return msg, sender


class SumServer(ABC):
    """What every server of a round's sum shares (masked or plain): its parameters, status and
    result, and which banks the current stage still waits for."""

    def __init__(
        self, identity: Identity, allowlist: Allowlist, federation_id: str, round_number: int,
        params: RoundParams,
    ) -> None:
        params.validate()
        missing = [p for p in params.participants if p not in allowlist]
        if missing:
            raise ValueError(f"participants not enrolled in the allowlist: {missing}")
        self.identity = identity
        self.allowlist = allowlist
        self.federation_id = federation_id
        self.round = round_number
        self.params = params
        self.stage = STAGE_SETUP
        self.status = ServerStatus.RUNNING
        self.abort_reason = ""
        self.total: npt.NDArray[np.unsignedinteger] | None = None
        self.outbox: list[Outgoing] = []  # the latest broadcast, re-sent after a restart

    @property
    def result(self) -> npt.NDArray[np.unsignedinteger]:
        """The unmasked ring sum of the surviving banks' encoded inputs."""
        if self.status is not ServerStatus.DONE or self.total is None:
            raise RuntimeError(f"no result: round is {self.status.value} {self.abort_reason}")
        return self.total

    @property
    def survivors(self) -> list[str]:
        """Banks whose inputs are in the sum."""
        return [self.params.participants[i] for i in self._summed()]

    def pending(self) -> list[str]:
        """Banks the current stage still waits for (after an abort: had not answered it)."""
        if self.status is ServerStatus.DONE:
            return []
        answered = self._answered()
        return [self.params.participants[i] for i in self._expected() if i not in answered]

    def resend(self) -> list[Outgoing]:
        """The messages of the last transition again (after a restart from a checkpoint)."""
        return list(self.outbox)

    @abstractmethod
    def start(self) -> list[Outgoing]:
        """Announce the round (the setup message to every participant)."""

    @abstractmethod
    def receive(self, data: bytes) -> list[Outgoing]:
        """One bank's message; raises :class:`MessageRejected` for a bad one."""

    @abstractmethod
    def stage_timeout(self) -> list[Outgoing]:
        """Close the current stage with the banks that have answered (or abort below t)."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible state; holds no private key."""

    @abstractmethod
    def _summed(self) -> list[int]: ...

    @abstractmethod
    def _expected(self) -> list[int]: ...

    @abstractmethod
    def _answered(self) -> set[int]: ...


class SecAggServer(SumServer):
    """One round of secure aggregation, from the server's side."""

    def __init__(
        self, identity: Identity, allowlist: Allowlist, federation_id: str, round_number: int,
        params: RoundParams,
    ) -> None:
        super().__init__(identity, allowlist, federation_id, round_number, params)
        self.keys: dict[int, KeyEntry] = {}  # U1
        self.nonces: dict[int, bytes] = {}  # SecAgg+: revealed graph nonces
        self.sealed: dict[int, dict[int, bytes]] = {}  # sender -> recipient -> share (stage 2)
        self.u2: tuple[int, ...] = ()
        self.u3: list[int] = []
        self.confirmations: dict[int, bytes] = {}  # bank -> its signature of SurvivorConfirm(U3)
        self.views: dict[int, bytes] = {}  # bank -> the view digest it confirmed
        self.view = crypto.NO_VIEW  # the view the unmasking proceeds on
        self.self_mask_shares: dict[int, dict[int, bytes]] = {}  # owner -> x -> share of b_u
        self.mask_key_shares: dict[int, dict[int, bytes]] = {}  # owner -> x -> share of s_sk
        self.u4: list[int] = []
        self.seen: dict[tuple[int, int], str] = {}  # (sender, stage) -> digest

    @classmethod
    def create(
        cls, identity: Identity, allowlist: Allowlist, federation_id: str, round_number: int,
        participants: Sequence[str], *, threshold: int, vector_length: int,
        neighbours: int = 0, weighted: bool = False, bits: int = 32, clip: float = 1.0,
        weight_max: float = 1.0,
    ) -> SecAggServer:
        params = round_params(
            federation_id, round_number, participants, threshold=threshold,
            vector_length=vector_length, neighbours=neighbours, weighted=weighted, bits=bits,
            clip=clip, weight_max=weight_max,
        )
        return cls(identity, allowlist, federation_id, round_number, params)

    def _summed(self) -> list[int]:
        return self.u3

    # -- events ------------------------------------------------------------------------------

    def start(self) -> list[Outgoing]:
        if self.stage != STAGE_SETUP:
            raise RuntimeError("round already started")
        self.stage = STAGE_ADVERTISE
        return self._broadcast(self.params.participants, RoundSetup(self.params))

    def receive(self, data: bytes) -> list[Outgoing]:
        msg, sender = from_participant(
            data, self.federation_id, self.round, self.params, self.allowlist
        )
        h = msg.header
        # Ed25519 signatures are deterministic and not malleable, so once verified the signature
        # identifies the exact bytes: no need to hash a 4 MB upload again.
        mdigest = msg.signature.hex()
        previous = self.seen.get((sender, h.stage))
        if previous == mdigest:
            return []  # at-least-once delivery: identical copies are accepted once
        if previous is not None:
            raise MessageRejected(
                RejectReason.DUPLICATE, f"{h.sender!r} already sent a different stage-{h.stage} "
                "message",
            )
        if self.status is not ServerStatus.RUNNING:
            raise MessageRejected(RejectReason.WRONG_STAGE, f"round is {self.status.value}")
        if h.stage != self.stage:
            raise MessageRejected(
                RejectReason.WRONG_STAGE,
                f"{STAGE_NAMES[h.stage]} message during {STAGE_NAMES[self.stage]}",
            )
        if not isinstance(msg.payload, _BANK_PAYLOAD[self.stage]):
            raise MessageRejected(
                RejectReason.MALFORMED, f"banks do not send {type(msg.payload).__name__}"
            )
        if sender not in self._expected():
            raise MessageRejected(
                RejectReason.UNKNOWN_SENDER, f"{h.sender!r} left the round at an earlier stage"
            )
        payload = msg.payload
        if isinstance(payload, AdvertiseKeys):
            self._accept_keys(sender, payload, msg.signature)
        elif isinstance(payload, NonceReveal):
            if commitment(payload.nonce) != self.keys[sender].commitment:
                raise MessageRejected(RejectReason.INCONSISTENT, "nonce does not open its "
                                      "commitment")
            self.nonces[sender] = payload.nonce
        elif isinstance(payload, ShareKeys):
            self._accept_shares(sender, payload)
        elif isinstance(payload, MaskedInput):
            self._accept_masked(payload)
            self.u3.append(sender)
        elif isinstance(payload, SurvivorConfirm):
            if payload.survivors != tuple(self.u3):
                raise MessageRejected(RejectReason.INCONSISTENT, "confirmed another U3")
            self.confirmations[sender] = msg.signature
            self.views[sender] = payload.view
        else:
            assert isinstance(payload, UnmaskShares)
            self._accept_unmask(sender, payload)
        self.seen[(sender, h.stage)] = mdigest
        if len(self._answered()) == len(self._expected()):
            return self._close_stage()
        return []

    def stage_timeout(self) -> list[Outgoing]:
        """Close the current stage with the banks that have answered (or abort below t)."""
        if self.status is not ServerStatus.RUNNING or self.stage == STAGE_SETUP:
            return []
        return self._close_stage()

    # -- stage handlers ----------------------------------------------------------------------

    def _accept_keys(self, sender: int, payload: AdvertiseKeys, signature: bytes) -> None:
        new = {payload.enc_public, payload.mask_public}
        used = {k for e in self.keys.values() for k in (e.enc_public, e.mask_public)}
        if len(new) != 2 or new & used:
            raise MessageRejected(RejectReason.INCONSISTENT, "advertised keys are not fresh")
        if not all(crypto.valid_public(k) for k in new):
            raise MessageRejected(RejectReason.MALFORMED, "advertised key of small order")
        self.keys[sender] = KeyEntry(
            sender, payload.enc_public, payload.mask_public, signature, payload.commitment
        )

    def _accept_shares(self, sender: int, payload: ShareKeys) -> None:
        recipients = [r for r, _ in payload.shares]
        expected = (self.params.groups[sender] & self.keys.keys()) - {sender}
        if len(set(recipients)) != len(recipients) or set(recipients) != expected:
            raise MessageRejected(
                RejectReason.INCONSISTENT, "shares are not addressed to exactly the sender's "
                "neighbours that advertised keys",
            )
        self.sealed[sender] = dict(payload.shares)

    def _accept_masked(self, payload: MaskedInput) -> None:
        p = self.params
        dtype = p.quantizer().dtype
        if len(payload.vector) != p.masked_length or payload.vector.dtype.itemsize * 8 != p.bits:
            raise MessageRejected(
                RejectReason.WRONG_LENGTH,
                f"masked vector of {len(payload.vector)} x {payload.vector.dtype.itemsize * 8} "
                f"bits, expected {p.masked_length} x {p.bits}",
            )
        if self.total is None:
            self.total = np.zeros(p.masked_length, dtype=dtype)
        np.add(self.total, payload.vector, out=self.total, casting="unsafe")

    def _accept_unmask(self, sender: int, payload: UnmaskShares) -> None:
        survivors = set(self.u3)
        owners = [s.owner for s in payload.shares]
        if len(set(owners)) != len(owners) or set(owners) != self.params.groups[sender] & set(
            self.u2
        ):
            raise MessageRejected(
                RejectReason.INCONSISTENT, "shares revealed for the wrong set of banks"
            )
        for s in payload.shares:
            wanted = KIND_SELF_MASK if s.owner in survivors else KIND_MASK_KEY
            if s.kind != wanted:
                raise MessageRejected(
                    RejectReason.INCONSISTENT,
                    f"wrong kind of share for {self.params.participants[s.owner]!r}",
                )
        x = sender + 1
        for s in payload.shares:
            store = self.self_mask_shares if s.kind == KIND_SELF_MASK else self.mask_key_shares
            store.setdefault(s.owner, {})[x] = s.share
        self.u4.append(sender)

    # -- transitions -------------------------------------------------------------------------

    def _expected(self) -> list[int]:
        return {
            STAGE_ADVERTISE: list(range(self.params.n)),
            STAGE_REVEAL: sorted(self.keys),
            STAGE_SHARE: sorted(self.keys),
            STAGE_MASKED: list(self.u2),
            STAGE_CONSISTENCY: list(self.u3),
            STAGE_UNMASK: sorted(self.confirmations),
        }.get(self.stage, [])

    def _answered(self) -> set[int]:
        return {
            STAGE_ADVERTISE: set(self.keys),
            STAGE_REVEAL: set(self.nonces),
            STAGE_SHARE: set(self.sealed),
            STAGE_MASKED: set(self.u3),
            STAGE_CONSISTENCY: set(self.confirmations),
            STAGE_UNMASK: set(self.u4),
        }.get(self.stage, set())

    def _prune(self, members: set[int]) -> set[int]:
        kept = self.params.prune(members)
        if kept != members:
            log.info("round %d: excluding %s, fewer than t=%d neighbours left", self.round,
                     [self.params.participants[u] for u in sorted(members - kept)],
                     self.params.threshold)
        return kept

    def _close_stage(self) -> list[Outgoing]:
        answered = sorted(self._answered())
        if self.stage == STAGE_REVEAL:
            return self._close_reveal(answered)
        if self.stage == STAGE_SHARE or (self.stage == STAGE_ADVERTISE and self.params.full_graph):
            # (SecAgg+ prunes once the graph is fixed, after the reveal.)
            answered = sorted(self._prune(set(answered)))
        if self.stage == STAGE_CONSISTENCY and answered:
            # Unmasking proceeds on one view only: the one most banks confirmed (the lowest
            # digest on a tie, so a restarted server picks the same); banks that confirmed
            # another were shown something else and are left out, as if they had dropped.
            views = {i: self.views.get(i, crypto.NO_VIEW) for i in answered}
            counts = Counter(views.values())
            self.view = min(counts, key=lambda v: (-counts[v], v))
            answered = [i for i in answered if views[i] == self.view]
        t = self.params.threshold
        if len(answered) < t:
            return self._abort(
                f"only {len(answered)} banks answered {STAGE_NAMES[self.stage]}, below t={t}"
            )
        names = self.params.participants
        if self.stage == STAGE_ADVERTISE:
            self.stage = STAGE_SHARE if self.params.full_graph else STAGE_REVEAL
            self.keys = {i: self.keys[i] for i in answered}
            keylist = KeyList(tuple(self.keys[i] for i in answered))
            return self._broadcast(tuple(names[i] for i in answered), keylist)
        if self.stage == STAGE_SHARE:
            self.stage = STAGE_MASKED
            self.u2 = tuple(answered)
            self.outbox = [
                Outgoing(
                    (names[v],),
                    self._encode(
                        ShareRouting(
                            self.u2,
                            tuple((u, self.sealed[u][v]) for u in self.u2 if v in self.sealed[u]),
                        )
                    ),
                )
                for v in self.u2
            ]
            self.sealed = {}
            return list(self.outbox)
        if self.stage in (STAGE_MASKED, STAGE_CONSISTENCY):
            # Only these banks will reveal shares: every bank in U2 needs t holders among them.
            short = [v for v in self.u2 if len(self.params.groups[v] & set(answered)) < t]
            if short:
                return self._abort(
                    f"fewer than t={t} share holders of {names[short[0]]!r} answered "
                    f"{STAGE_NAMES[self.stage]}"
                )
        if self.stage == STAGE_MASKED:
            self.stage = STAGE_CONSISTENCY
            self.u3 = answered
            return self._broadcast(
                tuple(names[i] for i in self.u3), SurvivorList(tuple(self.u3))
            )
        if self.stage == STAGE_CONSISTENCY:
            self.stage = STAGE_UNMASK
            self.confirmations = {i: self.confirmations[i] for i in answered}
            request = UnmaskRequest(
                tuple(self.u3), tuple(self.confirmations.items()), self.view
            )
            return self._broadcast(tuple(names[i] for i in answered), request)
        return self._finish()

    def _close_reveal(self, answered: list[int]) -> list[Outgoing]:
        # Every bank in the key list must reveal: were the server free to leave some out, it
        # could choose among the seeds of the subsets it saw.
        if len(answered) != len(self.keys):
            missing = sorted(set(self.keys) - set(answered))
            return self._abort(f"{self.params.participants[missing[0]]!r} did not reveal its "
                               "graph nonce; the graph cannot be fixed without it")
        nonces = {i: self.nonces[i] for i in answered}
        self.params = replace(self.params, graph_seed=mixed_seed(self.params.graph_seed, nonces))
        members = sorted(self._prune(set(answered)))
        if len(members) < self.params.threshold:
            return self._abort(f"only {len(members)} banks keep t={self.params.threshold} "
                               "neighbours")
        self.keys = {i: self.keys[i] for i in members}
        self.stage = STAGE_SHARE
        names = self.params.participants
        return self._broadcast(tuple(names[i] for i in members),
                               NonceList(tuple(sorted(nonces.items()))))

    def _finish(self) -> list[Outgoing]:
        p = self.params
        assert self.total is not None
        t = p.threshold
        assert not self.self_mask_shares.keys() & self.mask_key_shares.keys()
        seeds: dict[int, bytes] = {}
        mask_keys: dict[int, bytes] = {}
        for owner in self.u2:
            kind, store = (
                ("self-mask seed", self.self_mask_shares)
                if owner in self.u3
                else ("mask key", self.mask_key_shares)
            )
            shares = store.get(owner, {})
            try:
                secret = shamir.combine(shares, t)
            except ValueError as exc:
                return self._abort(f"cannot reconstruct the {kind} of {p.participants[owner]!r}: "
                                   f"{exc}")
            if owner in self.u3:
                seeds[owner] = secret
            elif crypto.x25519_public(secret) != self.keys[owner].mask_public:
                return self._abort(
                    f"reconstructed mask key of {p.participants[owner]!r} does not match its "
                    "advertised key (a bank revealed a wrong share)"
                )
            else:
                mask_keys[owner] = secret
        total = self.total
        for seed in seeds.values():
            crypto.apply_prg(total, seed, subtract=True)
        survivors = set(self.u3)
        for v, sk in mask_keys.items():
            for u in sorted(p.neighbour_sets[v] & survivors):
                seed = crypto.pairwise_seed(
                    sk, self.keys[u].mask_public, self.federation_id, self.round, v, u, self.view
                )
                # Bank u added +PRG(s_uv) for v < u and -PRG(s_uv) for v > u; undo it.
                crypto.apply_prg(total, seed, subtract=v < u)
        self.status = ServerStatus.DONE
        self.outbox = []
        log.info(
            "round %d: summed %d banks, %d dropped after sharing", self.round, len(self.u3),
            len(mask_keys),
        )
        return []

    def _abort(self, reason: str) -> list[Outgoing]:
        log.warning("round %d aborted: %s", self.round, reason)
        self.status = ServerStatus.ABORTED
        self.abort_reason = reason
        self.total = None
        return self._broadcast(self.params.participants, Abort(reason), stage=self.stage)

    def _encode(self, payload: Payload, stage: int | None = None) -> bytes:
        return encode(self.identity, self.federation_id, self.round, payload, stage)

    def _broadcast(
        self, recipients: tuple[str, ...], payload: Payload, stage: int | None = None
    ) -> list[Outgoing]:
        self.outbox = [Outgoing(recipients, self._encode(payload, stage))]
        return list(self.outbox)

    # -- checkpointing -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible state; holds no private key (the identity is supplied on restore)."""
        return {
            "version": 2,
            "federation_id": self.federation_id,
            "round": self.round,
            "params": params_to_dict(self.params),
            "stage": self.stage,
            "status": self.status.value,
            "abort_reason": self.abort_reason,
            "keys": [
                [e.index, b64(e.enc_public), b64(e.mask_public), b64(e.signature),
                 b64(e.commitment)]
                for e in self.keys.values()
            ],
            "nonces": {str(i): b64(n) for i, n in self.nonces.items()},
            "sealed": {
                str(u): {str(v): b64(ct) for v, ct in d.items()} for u, d in self.sealed.items()
            },
            "u2": list(self.u2),
            "total": None if self.total is None else b64(self.total.tobytes()),
            "u3": self.u3,
            "confirmations": {str(i): b64(sig) for i, sig in self.confirmations.items()},
            "views": {str(i): b64(v) for i, v in self.views.items()},
            "view": b64(self.view),
            "self_mask_shares": _shares_to_dict(self.self_mask_shares),
            "mask_key_shares": _shares_to_dict(self.mask_key_shares),
            "u4": self.u4,
            "seen": [[u, s, d] for (u, s), d in self.seen.items()],
            "outbox": [[list(o.recipients), b64(o.data)] for o in self.outbox],
        }

    @classmethod
    def from_dict(
        cls, state: dict[str, Any], identity: Identity, allowlist: Allowlist
    ) -> SecAggServer:
        if state.get("version") != 2:
            raise ValueError("unsupported server state version")
        params = params_from_dict(state["params"])
        server = cls(identity, allowlist, state["federation_id"], int(state["round"]), params)
        server.stage = int(state["stage"])
        server.status = ServerStatus(state["status"])
        server.abort_reason = state["abort_reason"]
        server.keys = {
            int(e[0]): KeyEntry(int(e[0]), unb64(e[1]), unb64(e[2]), unb64(e[3]),
                                *([unb64(e[4])] if len(e) > 4 else []))
            for e in state["keys"]
        }
        server.nonces = {int(i): unb64(n) for i, n in state.get("nonces", {}).items()}
        server.sealed = {
            int(u): {int(v): unb64(ct) for v, ct in d.items()} for u, d in state["sealed"].items()
        }
        server.u2 = tuple(int(i) for i in state["u2"])
        if state["total"] is not None:
            dtype = np.dtype(params.quantizer().dtype)
            server.total = np.frombuffer(unb64(state["total"]), dtype=dtype).copy()
        server.u3 = [int(i) for i in state["u3"]]
        server.confirmations = {int(i): unb64(sig) for i, sig in state["confirmations"].items()}
        server.views = {int(i): unb64(v) for i, v in state.get("views", {}).items()}
        server.view = unb64(state["view"]) if "view" in state else crypto.NO_VIEW
        server.self_mask_shares = _shares_from_dict(state["self_mask_shares"])
        server.mask_key_shares = _shares_from_dict(state["mask_key_shares"])
        server.u4 = [int(i) for i in state["u4"]]
        server.seen = {(int(u), int(s)): str(d) for u, s, d in state["seen"]}
        server.outbox = [Outgoing(tuple(r), unb64(d)) for r, d in state["outbox"]]
        return server


def _shares_to_dict(store: dict[int, dict[int, bytes]]) -> dict[str, dict[str, str]]:
    return {str(o): {str(x): b64(s) for x, s in d.items()} for o, d in store.items()}


def _shares_from_dict(data: dict[str, dict[str, str]]) -> dict[int, dict[int, bytes]]:
    return {int(o): {int(x): unb64(s) for x, s in d.items()} for o, d in data.items()}
