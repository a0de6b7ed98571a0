"""A federation on a real broker for integration tests: the real services, each with its own
Kafka clients, run in threads of the test process (or, for kills, as child processes).

A service "crashes" when its transport raises :class:`Crash` (injected by a :class:`Faults`
hook): the thread ends with whatever is on disk and in Kafka, exactly what a killed process
leaves; a restart is a new service object over the same config, state directory and broker.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aggregator.service import AggregatorService
from bank_node.service import BankNodeService
from fraudfl.cli.init import Federation, FederationPlan, write_federation
from fraudfl.config import AggregatorConfig, BankNodeConfig, load_config
from fraudfl.identity import Allowlist, Identity
from fraudfl.rounds.messages import MODEL, ModelInfo, decode_model
from fraudfl.transport.base import ForwardingTransport, Record, Transport
from fraudfl.transport.broker import EmbeddedBroker
from fraudfl.transport.channel import Channel
from fraudfl.transport.chunking import parse_chunk
from fraudfl.transport.envelope import decode as decode_envelope
from fraudfl.transport.kafka import KafkaSettings, KafkaTransport
from fraudfl.transport.sealing import EncryptionKey
from fraudfl.transport.topics import TopicLayout

log = logging.getLogger(__name__)

SendHook = Callable[[str, bytes | None, bytes], int]
# A stopped service finishes its current step (a DP training round at most) and closes.
STOP_TIMEOUT_S = 120.0


def record_inputs(service: BankNodeService) -> BankNodeService:
    """Keep each training round's plain contribution in the bank's state directory (it never
    leaves the test process) so a test can recompute the federation's model in the clear."""
    directory = service.config.state_dir / "plain_updates"

    def record(round_number: int, update: np.ndarray, weight: float) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / f"round_{round_number:06d}.npy",
                np.concatenate([update, [weight]]), allow_pickle=False)

    service.participant.on_input = record
    return service


class Crash(BaseException):
    """Simulated process death (BaseException, so no service code catches it)."""


class FaultyTransport(ForwardingTransport):
    """Delegates to a real transport; ``on_send`` returns how many copies to send (0 drops)
    or raises :class:`Crash`."""

    def __init__(self, inner: Transport, on_send: SendHook | None = None) -> None:
        super().__init__(inner)
        self.on_send = on_send

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        copies = 1 if self.on_send is None else self.on_send(topic, key, value)
        for _ in range(copies):
            self.inner.send(topic, key, value)


@dataclass
class Runner:
    name: str
    thread: threading.Thread
    stop: threading.Event
    transport: Transport
    error: list[BaseException] = field(default_factory=list)
    crashed: bool = False


class ThreadFederation:
    """Broker + federation directory + services in threads."""

    def __init__(
        self,
        tmp_path: Path,
        broker: EmbeddedBroker,
        *,
        banks: int = 3,
        rounds: int = 2,
        transactions: int = 3000,
        aggregator: dict[str, dict[str, Any]] | None = None,
        bank: dict[str, dict[str, Any]] | None = None,
        bank_privacy: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        self.broker = broker
        agg_over: dict[str, dict[str, Any]] = {
            "training": {"hidden": [8], "batch_size": 64, "lr": 0.1},
            "timeouts": {"advertise_keys": 60.0, "share_keys": 8.0, "masked_input": 8.0,
                         "consistency_check": 8.0, "unmask": 8.0},
            "secagg": {"clip_range": 2.0, "weight_scale": 10_000.0},
        }
        for section, values in (aggregator or {}).items():
            agg_over.setdefault(section, {}).update(values)
        bank_over: dict[str, dict[str, Any]] = {
            "privacy": {"noise_multiplier": 1.0, "target_epsilon": 50.0},
        }
        for section, values in (bank or {}).items():
            bank_over.setdefault(section, {}).update(values)
        self.fed: Federation = write_federation(
            FederationPlan(
                directory=tmp_path / "fed", banks=banks, transactions=transactions,
                federation_id="itest", bootstrap_servers=broker.bootstrap_servers,
                rounds=rounds, aggregator_overrides=agg_over, bank_overrides=bank_over,
            )
        )
        self.agg_config = load_config(AggregatorConfig, self.fed.aggregator_config, env={})
        self.bank_configs = {
            b: load_config(BankNodeConfig, p, env={}) for b, p in self.fed.bank_configs.items()
        }
        for b, privacy in (bank_privacy or {}).items():
            cfg = self.bank_configs[b]
            self.bank_configs[b] = cfg.model_copy(
                update={"privacy": cfg.privacy.model_copy(update=privacy)}
            )
        self.allowlist = Allowlist.load(self.agg_config.allowlist)
        self.layout = TopicLayout("itest")
        self.runners: dict[str, Runner] = {}

    @property
    def bank_ids(self) -> list[str]:
        return sorted(self.bank_configs)

    def settings(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.broker.bootstrap_servers)

    def _start(self, name: str, make: Callable[[Transport], Any], hook: SendHook | None) -> Runner:
        transport = FaultyTransport(KafkaTransport(self.settings()), hook)
        stop = threading.Event()
        runner = Runner(name, threading.Thread(name=name, daemon=True), stop, transport)

        def target() -> None:
            try:
                make(transport).run(stop)
            except Crash:
                runner.crashed = True
                log.warning("%s crashed (simulated)", name)
            except BaseException as exc:  # reported by wait()/stop_all()
                runner.error.append(exc)
                log.exception("%s failed", name)
            finally:
                transport.close()

        runner.thread = threading.Thread(target=target, name=name, daemon=True)
        self.runners[name] = runner
        runner.thread.start()
        return runner

    def start_bank(
        self, bank_id: str, hook: SendHook | None = None,
        rng: Callable[[int], np.random.Generator] | None = None,
    ) -> Runner:
        """``rng`` replaces the node's unpredictable generator (for a reproducible run)."""
        cfg = self.bank_configs[bank_id]

        def make(transport: Transport) -> BankNodeService:
            service = record_inputs(BankNodeService(cfg, transport))
            if rng is not None:
                service.participant.rng = rng
            return service

        return self._start(bank_id, make, hook)

    def start_banks(self, hooks: Mapping[str, SendHook] | None = None) -> None:
        for b in self.bank_ids:
            self.start_bank(b, (hooks or {}).get(b))

    def start_aggregator(self, hook: SendHook | None = None) -> Runner:
        return self._start("aggregator", lambda t: AggregatorService(self.agg_config, t), hook)

    def wait(self, name: str, timeout_s: float) -> Runner:
        runner = self.runners[name]
        runner.thread.join(timeout_s)
        if runner.thread.is_alive():
            raise AssertionError(f"{name} did not finish within {timeout_s} s")
        if runner.error:
            raise AssertionError(f"{name} failed: {runner.error[0]!r}") from runner.error[0]
        return runner

    def bank_status(self, bank: str) -> dict[str, Any]:
        import json

        try:
            status = json.loads((self.bank_configs[bank].state_dir / "status.json").read_text())
        except (OSError, ValueError):
            return {}
        return status if isinstance(status, dict) else {}

    def wait_banks_have_model(self, version: int, banks: Iterable[str] | None = None,
                              timeout_s: float = 30.0) -> None:
        for bank in banks or self.bank_ids:

            def has_model(b: str = bank) -> bool:
                return bool(self.bank_status(b).get("model_version") == version)

            wait_for(has_model, timeout_s, f"{bank} to receive model v{version}")

    def stop_all(self) -> None:
        """Stop every service and wait until each has closed its Kafka clients: a service
        left running past the test keeps kafka-python's threads alive and logging."""
        for runner in self.runners.values():
            runner.stop.set()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for runner in self.runners.values():
            runner.thread.join(max(0.0, deadline - time.monotonic()))
        alive = [r.name for r in self.runners.values() if r.thread.is_alive()]
        if alive:
            raise AssertionError(f"services still running after {STOP_TIMEOUT_S:.0f} s: {alive}")
        errors = [(r.name, e) for r in self.runners.values() for e in r.error]
        if errors:
            raise AssertionError(f"service errors: {errors}")

    # -- reading the outcome ---------------------------------------------------------------

    def rounds(self) -> list[dict[str, Any]]:
        import json

        path = self.agg_config.state_dir / "rounds.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]

    def models(self, as_bank: str | None = None) -> list[tuple[ModelInfo, np.ndarray]]:
        """Every published model, read and verified from the models topic as a bank reads it."""
        bank = as_bank or self.bank_ids[0]
        cfg = self.bank_configs[bank]
        channel = Channel(
            KafkaTransport(self.settings()), Identity.load(bank, cfg.identity_key),
            self.allowlist, "itest", encryption_key=EncryptionKey.load(bank, cfg.encryption_key),
        )
        seen: dict[int, tuple[ModelInfo, np.ndarray]] = {}
        try:
            channel.listen([self.layout.models])
            for _ in range(20):
                batch = channel.receive(0.5)
                for msg in batch:
                    if msg.payload_type == MODEL:
                        info, params = decode_model(msg.payload)
                        seen[info.version] = (info, params)
                if not batch and seen:
                    break
        finally:
            channel.transport.close()
        return [seen[v] for v in sorted(seen)]

    def plain_update(self, bank: str, round_number: int) -> tuple[np.ndarray, float]:
        path = self.bank_configs[bank].state_dir / "plain_updates" / f"round_{round_number:06d}.npy"
        vec = np.load(path, allow_pickle=False)
        return vec[:-1], float(vec[-1])

    def assert_models_equal_plain_fedavg(self) -> list[tuple[ModelInfo, np.ndarray]]:
        """Each model v equals model v-1 plus the weighted mean of its participants' plain
        updates (FedAvg/FedProx server step), within the quantisation bound."""
        models = self.models()
        assert models and models[0][0].version == 0
        clip = self.agg_config.secagg.clip_range
        for (_, prev), (info, params) in itertools.pairwise(models):
            total = np.zeros(len(prev))
            weights = 0.0
            for bank in info.participants:
                update, weight = self.plain_update(bank, info.round)
                total += weight * update
                weights += weight
            expected = prev.astype(np.float64) + total / weights
            n = len(info.participants)
            step = clip / (((1 << 31) - 1) // n)  # one quantisation level per bank, 32 bits
            tolerance = n * step / weights + 1e-6
            np.testing.assert_allclose(params, expected, rtol=0, atol=tolerance)
        return models


@dataclass(frozen=True)
class SentMessage:
    """What a hook can see of an outgoing record: the envelope header (never the payload,
    which is sealed)."""

    index: int
    round: int
    stage: str
    payload_type: str
    recipient: str


def describe(frame: bytes, index: int) -> SentMessage | None:
    """The envelope header of a single-chunk record (tiny test models fit in one chunk)."""
    chunk = parse_chunk(frame)
    if chunk.count != 1:
        return None
    env = decode_envelope(bytes(chunk.data))
    return SentMessage(index, env.round, env.stage, env.payload_type, env.recipient)


def crash_at(predicate: Callable[[SentMessage], bool]) -> SendHook:
    """A hook that lets records through until one matches, then crashes (before sending it)."""
    counter = itertools.count()

    def hook(topic: str, key: bytes | None, value: bytes) -> int:
        msg = describe(value, next(counter))
        if msg is not None and predicate(msg):
            raise Crash(f"crash before sending {msg}")
        return 1

    return hook


def all_records(settings: KafkaSettings, prefix: str) -> list[Record]:
    """Every record of every topic under ``prefix``, read by an outside observer (no keys)."""
    out: list[Record] = []
    with KafkaTransport(settings) as transport:
        topics = sorted(t for t in transport.list_topics() if t.startswith(prefix))
        transport.assign_topics(topics)
        idle = 0
        while idle < 3:
            batch = transport.poll(0.5)
            out += batch
            idle = 0 if batch else idle + 1
    return out


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
