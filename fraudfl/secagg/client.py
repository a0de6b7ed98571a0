"""The bank's side of SecAgg / SecAgg+ as a sans-IO state machine.

``receive(bytes) -> list[bytes]`` consumes one message from the server and returns the replies
to send back to it. A rejected message raises :class:`MessageRejected` and changes nothing; a
message identical to one already handled returns the same reply again, so at-least-once
delivery and a restarted server that re-broadcasts are both harmless.

The client enforces the rules that protect its own privacy regardless of the server: it only
accepts round parameters with a high enough threshold and the agreed graph seed, it checks every
advertised key against the enrolment allowlist, it commits (signs) to one survivor set U3 per
round and reveals shares only for a U3 that at least t banks committed to (the consistency check
of Bonawitz et al.), and it answers at most one unmask request per round. Without the
consistency check a server could show different banks different survivor sets and collect the
self-mask seed of one bank together with the mask keys of all its partners, i.e. its input.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from fraudfl.identity import Allowlist, Identity, verify
from fraudfl.secagg import crypto, shamir
from fraudfl.secagg.auth import authenticate, b64, digest, unb64
from fraudfl.secagg.errors import MessageRejected, RejectReason, UsageError
from fraudfl.secagg.graph import commitment, graph_seed, mixed_seed
from fraudfl.secagg.messages import (
    KIND_MASK_KEY,
    KIND_SELF_MASK,
    STAGE_CONSISTENCY,
    Abort,
    AdvertiseKeys,
    Header,
    KeyList,
    MaskedInput,
    Message,
    NonceList,
    NonceReveal,
    RevealedShare,
    RoundSetup,
    ShareKeys,
    ShareRouting,
    SurvivorConfirm,
    SurvivorList,
    UnmaskRequest,
    UnmaskShares,
    decode,
    encode,
    signing_bytes,
)
from fraudfl.secagg.params import RoundParams
from fraudfl.secagg.quantize import Rounding
from fraudfl.secagg.state import params_from_dict, params_to_dict

log = logging.getLogger(__name__)


class ClientStage(StrEnum):
    ADVERTISED = "advertised"  # keys sent, waiting for the key list
    REVEALED = "revealed"  # SecAgg+: graph nonce revealed, waiting for everyone's nonces
    SHARED = "shared"  # shares sent, waiting for routed shares
    MASKED = "masked"  # masked input sent, waiting for the survivor list U3
    CONFIRMED = "confirmed"  # committed to U3, waiting for the unmask request
    DONE = "done"  # unmask shares sent
    ABORTED = "aborted"


_EXPECTED = {
    ClientStage.ADVERTISED: KeyList,
    ClientStage.REVEALED: NonceList,
    ClientStage.SHARED: ShareRouting,
    ClientStage.MASKED: SurvivorList,
    ClientStage.CONFIRMED: UnmaskRequest,
}


@dataclass
class _Round:
    params: RoundParams
    me: int
    enc_sk: bytes
    mask_sk: bytes
    self_seed: bytes
    stage: ClientStage = ClientStage.ADVERTISED
    keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)  # index -> (c_pk, s_pk)
    held: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)  # owner -> (b, s) shares
    survivors: tuple[int, ...] = ()  # U2
    u3: tuple[int, ...] = ()  # the survivor set this bank committed to
    replies: dict[int, tuple[str, bytes]] = field(default_factory=dict)  # type -> (digest, reply)
    abort_reason: str = ""
    view: bytes = crypto.NO_VIEW  # digest of what the bank was shown for this round
    nonce: bytes = b""  # SecAgg+: this bank's graph nonce, committed to with its keys
    commitments: dict[int, bytes] = field(default_factory=dict)  # index -> nonce commitment


def from_server(data: bytes, federation_id: str, server_id: str, allowlist: Allowlist) -> Message:
    """The aggregator's message to a bank, decoded and authenticated; :class:`MessageRejected`
    if another federation's or another sender's."""
    msg = decode(data)
    h = msg.header
    if h.federation_id != federation_id:
        raise MessageRejected(
            RejectReason.WRONG_FEDERATION, f"message for federation {h.federation_id!r}"
        )
    if h.sender != server_id:
        raise MessageRejected(RejectReason.UNKNOWN_SENDER, f"{h.sender!r} is not the aggregator")
    authenticate(allowlist, msg)
    return msg


class SecAggClient:
    """One bank's protocol endpoint; it can take part in successive rounds."""

    def __init__(
        self,
        identity: Identity,
        allowlist: Allowlist,
        federation_id: str,
        server_id: str = "aggregator",
        *,
        min_threshold_fraction: float = 0.5,
        rounding: Rounding = Rounding.NEAREST,
    ) -> None:
        # Below a majority of the group two disjoint sets of honest banks could each reach t,
        # so a lying server could collect both secrets of a bank or confirm two survivor sets.
        if not 0.5 <= min_threshold_fraction < 1.0:
            raise ValueError(
                f"min_threshold_fraction must be in [0.5, 1), got {min_threshold_fraction}"
            )
        self.identity = identity
        self.allowlist = allowlist
        self.federation_id = federation_id
        self.server_id = server_id
        self.min_threshold_fraction = min_threshold_fraction
        self.rounding = rounding
        self.last_round = -1
        # Other banks that must be in the survivor set this bank confirms before unmasking: a
        # sum over this bank and fewer others would give its input away (the bank's policy).
        self.min_other_survivors = 1
        self._round: _Round | None = None
        self._update: npt.NDArray[np.float64] | None = None
        self._weight: float | None = None
        self._view = crypto.NO_VIEW

    # -- local API -------------------------------------------------------------------------

    def set_input(self, update: npt.ArrayLike, weight: float | None = None) -> None:
        """The update to contribute this round (``weight`` only when the round is weighted)."""
        self._update = np.asarray(update, dtype=np.float64).ravel().copy()
        self._weight = weight

    def set_view(self, view: bytes) -> None:
        """The digest of what this bank was shown for the next round it sets up: it signs it
        in the consistency stage, unmasks only for t banks that signed the same, and mixes it
        into its pairwise masks."""
        if len(view) != crypto.VIEW_BYTES:
            raise ValueError(f"a view digest is {crypto.VIEW_BYTES} bytes")
        self._view = view

    @property
    def stage(self) -> ClientStage | None:
        return self._round.stage if self._round else None

    @property
    def abort_reason(self) -> str:
        return self._round.abort_reason if self._round else ""

    # -- protocol ----------------------------------------------------------------------------

    def _authentic(self, data: bytes) -> Message:
        return from_server(data, self.federation_id, self.server_id, self.allowlist)

    def check_setup(self, data: bytes) -> RoundParams:
        """The parameters of a new round's setup message if this bank would accept them, else
        :class:`MessageRejected`; changes nothing. A bank calls it before it reads data or
        charges privacy for the round."""
        msg = self._authentic(data)
        if not isinstance(msg.payload, RoundSetup):
            raise MessageRejected(RejectReason.WRONG_STAGE, "not a round setup")
        if msg.header.round <= self.last_round:
            raise MessageRejected(
                RejectReason.WRONG_ROUND,
                f"round {msg.header.round} is not after round {self.last_round}",
            )
        self._check_params(msg.header.round, msg.payload.params)
        return msg.payload.params

    def receive(self, data: bytes) -> list[bytes]:
        msg = self._authentic(data)
        h = msg.header
        if isinstance(msg.payload, RoundSetup):
            return self._on_setup(msg, msg.payload, data)
        rnd = self._round
        if rnd is None or h.round != self.last_round:
            raise MessageRejected(
                RejectReason.WRONG_ROUND, f"round {h.round}, current round {self.last_round}"
            )
        seen = rnd.replies.get(msg.payload.TYPE)
        if seen is not None:
            if seen[0] == digest(data):
                return [seen[1]] if seen[1] else []
            raise MessageRejected(
                RejectReason.DUPLICATE, f"a different {type(msg.payload).__name__} was handled"
            )
        if isinstance(msg.payload, Abort):
            rnd.stage = ClientStage.ABORTED
            rnd.abort_reason = msg.payload.reason
            rnd.replies[Abort.TYPE] = (digest(data), b"")
            log.info("round %d aborted by the server: %s", h.round, msg.payload.reason)
            return []
        expected = _EXPECTED.get(rnd.stage)
        if expected is None or not isinstance(msg.payload, expected):
            raise MessageRejected(
                RejectReason.WRONG_STAGE,
                f"{type(msg.payload).__name__} while {rnd.stage.value}",
            )
        if isinstance(msg.payload, KeyList):
            reply = self._on_keys(rnd, msg.payload)
            next_stage = ClientStage.SHARED if rnd.params.full_graph else ClientStage.REVEALED
        elif isinstance(msg.payload, NonceList):
            reply = self._on_nonces(rnd, msg.payload)
            next_stage = ClientStage.SHARED
        elif isinstance(msg.payload, ShareRouting):
            reply = self._on_routing(rnd, msg.payload)
            next_stage = ClientStage.MASKED
        elif isinstance(msg.payload, SurvivorList):
            reply = self._on_survivors(rnd, msg.payload)
            next_stage = ClientStage.CONFIRMED
        else:
            assert isinstance(msg.payload, UnmaskRequest)
            reply = self._on_unmask(rnd, msg.payload)
            next_stage = ClientStage.DONE
        rnd.stage = next_stage
        rnd.replies[msg.payload.TYPE] = (digest(data), reply)
        return [reply]

    def _send(self, payload: Any) -> bytes:
        return encode(self.identity, self.federation_id, self.last_round, payload)

    def _on_setup(self, msg: Message, setup: RoundSetup, data: bytes) -> list[bytes]:
        h, p = msg.header, setup.params
        if self._round is not None and h.round == self.last_round:
            seen = self._round.replies[RoundSetup.TYPE]
            if seen[0] == digest(data):
                return [seen[1]]
            raise MessageRejected(RejectReason.DUPLICATE, f"round {h.round} was already set up")
        if h.round <= self.last_round:
            raise MessageRejected(
                RejectReason.WRONG_ROUND, f"round {h.round} is not after round {self.last_round}"
            )
        me = self._check_params(h.round, p)
        enc_sk, enc_pk = crypto.x25519_keypair()
        mask_sk, mask_pk = crypto.x25519_keypair()
        self.last_round = h.round
        rnd = _Round(p, me, enc_sk, mask_sk, os.urandom(32), view=self._view,
                     nonce=os.urandom(32))
        self._round = rnd
        reply = self._send(AdvertiseKeys(enc_pk, mask_pk, commitment(rnd.nonce)))
        rnd.replies[RoundSetup.TYPE] = (digest(data), reply)
        return [reply]

    def _check_params(self, round_number: int, p: RoundParams) -> int:
        """This bank's index if it accepts ``p`` for ``round_number``, else MessageRejected."""
        me = p.index(self.identity.participant_id)
        if me is None:
            raise MessageRejected(RejectReason.INCONSISTENT, "this bank is not a participant")
        # The aggregator's own key (or any non-bank) as a participant would let it play a bank
        # with input zero, and the "sum" would be this bank's input.
        outsiders = [q for q in p.participants
                     if q == self.server_id or self.allowlist.role_of(q) != "bank"]
        if outsiders:
            raise MessageRejected(
                RejectReason.INCONSISTENT, f"participant {outsiders[0]!r} is not an enrolled bank"
            )
        if p.graph_seed != graph_seed(self.federation_id, round_number, p.participants):
            raise MessageRejected(RejectReason.INCONSISTENT, "graph seed is not the agreed one")
        group = p.group_size
        if p.threshold <= self.min_threshold_fraction * group:
            raise MessageRejected(
                RejectReason.INCONSISTENT,
                f"threshold {p.threshold} too low for a group of {group} (policy: more than "
                f"{self.min_threshold_fraction:.0%})",
            )
        return me

    def _on_keys(self, rnd: _Round, keylist: KeyList) -> bytes:
        p = rnd.params
        indices = [e.index for e in keylist.entries]
        if len(set(indices)) != len(indices) or any(i >= p.n for i in indices):
            raise MessageRejected(RejectReason.INCONSISTENT, "key list indices invalid")
        if len(indices) < p.threshold:
            raise MessageRejected(
                RejectReason.INCONSISTENT, f"{len(indices)} keys, fewer than t={p.threshold}"
            )
        all_keys = [k for e in keylist.entries for k in (e.enc_public, e.mask_public)]
        if len(set(all_keys)) != len(all_keys):
            raise MessageRejected(RejectReason.INCONSISTENT, "the key list repeats a key")
        if not all(crypto.valid_public(k) for k in all_keys):
            raise MessageRejected(RejectReason.INCONSISTENT, "the key list has a small-order key")
        keys: dict[int, tuple[bytes, bytes]] = {}
        for e in keylist.entries:
            owner = p.participants[e.index]
            signed = signing_bytes(
                Header(self.federation_id, self.last_round, AdvertiseKeys.STAGE, owner),
                AdvertiseKeys(e.enc_public, e.mask_public, e.commitment),
            )
            public = self.allowlist.key_of(owner)
            if public is None:
                raise MessageRejected(RejectReason.UNKNOWN_SENDER, f"{owner!r} is not enrolled")
            if not verify(public, e.signature, signed):
                raise MessageRejected(
                    RejectReason.BAD_SIGNATURE, f"keys of {owner!r} are not signed by {owner!r}"
                )
            keys[e.index] = (e.enc_public, e.mask_public)
        mine = (crypto.x25519_public(rnd.enc_sk), crypto.x25519_public(rnd.mask_sk))
        commitments = {e.index: e.commitment for e in keylist.entries}
        if keys.get(rnd.me) != mine or commitments[rnd.me] != commitment(rnd.nonce):
            raise MessageRejected(
                RejectReason.IMPERSONATION, "the key list does not carry this bank's own keys"
            )
        if not p.full_graph:
            # SecAgg+: the graph is fixed only once every nonce committed to here is revealed.
            rnd.keys, rnd.commitments = keys, commitments
            return self._send(NonceReveal(rnd.nonce))
        rnd.keys = keys
        return self._share(rnd)

    def _on_nonces(self, rnd: _Round, nonce_list: NonceList) -> bytes:
        nonces = dict(nonce_list.nonces)
        if len(nonces) != len(nonce_list.nonces) or nonces.keys() != rnd.keys.keys():
            raise MessageRejected(
                RejectReason.INCONSISTENT, "the nonces are not those of exactly the key list"
            )
        if any(commitment(n) != rnd.commitments[i] for i, n in nonces.items()):
            raise MessageRejected(RejectReason.INCONSISTENT, "a nonce does not open its commitment")
        params = replace(rnd.params, graph_seed=mixed_seed(rnd.params.graph_seed, nonces))
        members = params.prune(set(rnd.keys))
        if rnd.me not in members:
            raise MessageRejected(
                RejectReason.INCONSISTENT, "fewer than t of this bank's group advertised keys"
            )
        rnd.params = params
        rnd.keys = {i: rnd.keys[i] for i in sorted(members)}
        return self._share(rnd)

    def _share(self, rnd: _Round) -> bytes:
        """Split this bank's self-mask seed and mask key among its group (stage 2)."""
        p, keys = rnd.params, rnd.keys
        holders = sorted(p.groups[rnd.me] & keys.keys())
        if len(holders) < p.threshold:
            raise MessageRejected(
                RejectReason.INCONSISTENT,
                f"only {len(holders)} of this bank's group advertised keys (t={p.threshold})",
            )
        xs = shamir.points(holders)
        b_shares = shamir.split(rnd.self_seed, xs, p.threshold)
        s_shares = shamir.split(rnd.mask_sk, xs, p.threshold)
        sealed = []
        for v, x in zip(holders, xs, strict=True):
            if v == rnd.me:
                rnd.held[v] = (b_shares[x], s_shares[x])
                continue
            key = crypto.share_key(
                rnd.enc_sk, keys[v][0], self.federation_id, self.last_round, rnd.me, v
            )
            aad = crypto.context(b"share", self.federation_id, self.last_round, rnd.me, v)
            sealed.append((v, crypto.seal(key, b_shares[x] + s_shares[x], aad)))
        return self._send(ShareKeys(tuple(sealed)))

    def _on_routing(self, rnd: _Round, routing: ShareRouting) -> bytes:
        p = rnd.params
        u2 = routing.survivors
        if list(u2) != sorted(set(u2)) or not set(u2) <= rnd.keys.keys() or rnd.me not in u2:
            raise MessageRejected(RejectReason.INCONSISTENT, "bad survivor list U2")
        if len(u2) < p.threshold:
            raise MessageRejected(
                RejectReason.INCONSISTENT, f"|U2|={len(u2)} is below t={p.threshold}"
            )
        senders = [s for s, _ in routing.shares]
        expected = (p.groups[rnd.me] & set(u2)) - {rnd.me}
        if len(expected) + 1 < p.threshold:
            raise MessageRejected(
                RejectReason.INCONSISTENT, f"fewer than t={p.threshold} of this bank's group in U2"
            )
        if len(set(senders)) != len(senders) or set(senders) != expected:
            raise MessageRejected(
                RejectReason.INCONSISTENT, "routed shares do not come from exactly my neighbours "
                "in U2",
            )
        if self._update is None:
            raise UsageError("set_input() must be called before the masked-input stage")
        update, weight = self._update, self._weight
        if len(update) != p.vector_length:
            raise UsageError(f"input has {len(update)} values, the round expects {p.vector_length}")
        if p.weighted and weight is None:
            raise UsageError("this round is weighted: set_input(update, weight=...)")
        held = {}
        for sender, sealed in routing.shares:
            key = crypto.share_key(
                rnd.enc_sk, rnd.keys[sender][0], self.federation_id, self.last_round, sender,
                rnd.me,
            )
            aad = crypto.context(b"share", self.federation_id, self.last_round, sender, rnd.me)
            plain = crypto.open_sealed(key, sealed, aad)
            if plain is None:
                raise MessageRejected(
                    RejectReason.DECRYPTION_FAILED, f"share from index {sender} does not decrypt"
                )
            held[sender] = (plain[: shamir.SHARE_BYTES], plain[shamir.SHARE_BYTES :])
        quantizer = p.quantizer(self.rounding)
        if p.weighted:
            assert weight is not None
            y = quantizer.encode_weighted(update, weight)
        else:
            y = quantizer.encode(update)
        crypto.apply_prg(y, rnd.self_seed, subtract=False)
        for v in sorted(p.neighbour_sets[rnd.me] & set(u2)):
            seed = crypto.pairwise_seed(
                rnd.mask_sk, rnd.keys[v][1], self.federation_id, self.last_round, rnd.me, v,
                rnd.view,
            )
            crypto.apply_prg(y, seed, subtract=v > rnd.me)
        rnd.held.update(held)
        rnd.survivors = u2
        return self._send(MaskedInput(y))

    def _on_survivors(self, rnd: _Round, survivor_list: SurvivorList) -> bytes:
        p, u3 = rnd.params, survivor_list.survivors
        # U3 within this bank's own U2 matters: a server that told this bank a small U2 (so it
        # masked with few partners) and others a U3 without those partners would otherwise get
        # a majority to confirm a U3 under which all its partners count as dropped.
        if list(u3) != sorted(set(u3)) or not set(u3) <= set(rnd.survivors) or rnd.me not in u3:
            raise MessageRejected(RejectReason.INCONSISTENT, "bad survivor list U3")
        if len(u3) < p.threshold:
            raise MessageRejected(
                RejectReason.INCONSISTENT, f"|U3|={len(u3)} is below t={p.threshold}"
            )
        if len(u3) - 1 < self.min_other_survivors:
            raise MessageRejected(
                RejectReason.INCONSISTENT,
                f"U3 has {len(u3) - 1} other banks, fewer than {self.min_other_survivors}",
            )
        rnd.u3 = u3
        return self._send(SurvivorConfirm(u3, rnd.view))

    def _on_unmask(self, rnd: _Round, request: UnmaskRequest) -> bytes:
        p = rnd.params
        if request.survivors != rnd.u3:
            raise MessageRejected(
                RejectReason.INCONSISTENT, "unmask request for another U3 than this bank confirmed"
            )
        if request.view != rnd.view:
            # The banks that confirmed were shown another task, model or roster than this one.
            raise MessageRejected(
                RejectReason.INCONSISTENT, "the confirming banks were shown a different round"
            )
        signers = [i for i, _ in request.confirmations]
        if len(set(signers)) != len(signers) or not set(signers) <= set(rnd.u3):
            raise MessageRejected(RejectReason.INCONSISTENT, "confirmations from outside U3")
        if len(signers) < p.threshold:
            raise MessageRejected(
                RejectReason.INCONSISTENT,
                f"{len(signers)} banks confirmed U3, fewer than t={p.threshold}",
            )
        statement = SurvivorConfirm(rnd.u3, rnd.view)
        for index, signature in request.confirmations:
            signer = p.participants[index]
            public = self.allowlist.key_of(signer)
            signed = signing_bytes(
                Header(self.federation_id, self.last_round, STAGE_CONSISTENCY, signer), statement
            )
            if public is None or not verify(public, signature, signed):
                raise MessageRejected(
                    RejectReason.BAD_SIGNATURE, f"{signer!r} did not confirm this U3"
                )
        survivors = set(rnd.u3)
        revealed = []
        for owner in sorted(rnd.held):
            b_share, s_share = rnd.held[owner]
            if owner in survivors:
                revealed.append(RevealedShare(owner, KIND_SELF_MASK, b_share))
            else:
                revealed.append(RevealedShare(owner, KIND_MASK_KEY, s_share))
        return self._send(UnmaskShares(tuple(revealed)))

    # -- checkpointing -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible state, including this round's private keys: store it like a key file."""
        out: dict[str, Any] = {
            "version": 2,
            "federation_id": self.federation_id,
            "server_id": self.server_id,
            "participant_id": self.identity.participant_id,
            "min_threshold_fraction": self.min_threshold_fraction,
            "rounding": self.rounding.value,
            "last_round": self.last_round,
            "update": None if self._update is None else b64(self._update.tobytes()),
            "weight": self._weight,
            "view": b64(self._view),
            "round": None,
        }
        rnd = self._round
        if rnd is not None:
            out["round"] = {
                "params": params_to_dict(rnd.params),
                "me": rnd.me,
                "enc_sk": b64(rnd.enc_sk),
                "mask_sk": b64(rnd.mask_sk),
                "self_seed": b64(rnd.self_seed),
                "stage": rnd.stage.value,
                "keys": {str(i): [b64(c), b64(s)] for i, (c, s) in rnd.keys.items()},
                "held": {str(i): [b64(b), b64(s)] for i, (b, s) in rnd.held.items()},
                "survivors": list(rnd.survivors),
                "u3": list(rnd.u3),
                "replies": {str(t): [d, b64(r)] for t, (d, r) in rnd.replies.items()},
                "abort_reason": rnd.abort_reason,
                "view": b64(rnd.view),
                "nonce": b64(rnd.nonce),
                "commitments": {str(i): b64(c) for i, c in rnd.commitments.items()},
            }
        return out

    @classmethod
    def from_dict(
        cls, state: dict[str, Any], identity: Identity, allowlist: Allowlist
    ) -> SecAggClient:
        if state.get("version") != 2:
            raise ValueError("unsupported client state version")
        if state["participant_id"] != identity.participant_id:
            raise ValueError("client state belongs to another participant")
        client = cls(
            identity, allowlist, state["federation_id"], state["server_id"],
            min_threshold_fraction=float(state["min_threshold_fraction"]),
            rounding=Rounding(state["rounding"]),
        )
        client.last_round = int(state["last_round"])
        if state["update"] is not None:
            client._update = np.frombuffer(unb64(state["update"]), dtype=np.float64).copy()
        client._weight = state["weight"]
        client._view = unb64(state["view"]) if "view" in state else crypto.NO_VIEW
        r = state["round"]
        if r is not None:
            client._round = _Round(
                params=params_from_dict(r["params"]),
                me=int(r["me"]),
                enc_sk=unb64(r["enc_sk"]),
                mask_sk=unb64(r["mask_sk"]),
                self_seed=unb64(r["self_seed"]),
                stage=ClientStage(r["stage"]),
                keys={int(i): (unb64(c), unb64(s)) for i, (c, s) in r["keys"].items()},
                held={int(i): (unb64(b), unb64(s)) for i, (b, s) in r["held"].items()},
                survivors=tuple(int(i) for i in r["survivors"]),
                u3=tuple(int(i) for i in r["u3"]),
                replies={int(t): (d, unb64(x)) for t, (d, x) in r["replies"].items()},
                abort_reason=r["abort_reason"],
                view=unb64(r["view"]) if "view" in r else crypto.NO_VIEW,
                nonce=unb64(r.get("nonce", "")),
                commitments={int(i): unb64(c) for i, c in r.get("commitments", {}).items()},
            )
        return client
