"""Where a secure sum's wall time goes over the embedded broker, per stage and per kind of work.

Runs ``e2e_rounds.run_case`` (the real aggregator and bank services in threads of this
process, Tansu, secure aggregation, sealed and signed envelopes, checkpoints) with timers
wrapped around the functions that do each kind of work, without changing the services:

* ``produce``: ``KafkaTransport.send`` (kafka-python's accumulate of every chunk frame);
  ``flush``: ``KafkaTransport.flush`` (waiting for the broker's acknowledgements);
* ``poll empty`` / ``poll data``: ``KafkaTransport.poll`` calls that returned nothing (fetch
  wait) / some records;
* ``envelope out``: ``Channel.send`` minus its produce time (envelope, seal, sign, chunk);
  ``envelope in``: ``Channel._accept`` (reassemble, decode, verify, open);
* ``secagg``: the secure-aggregation state machines (``SecAggClient.receive``/``set_input``,
  ``SecAggServer.receive``/``start``/``stage_timeout``): key agreement, masking, Shamir shares,
  unmasking;
* ``fsync``: ``os.fsync`` (checkpoints); ``sleep``: ``time.sleep`` (fixed waits in loops);
  ``training``: local training (``train_local``), excluded from the secure sum's cost.

Seconds are per training round, for the aggregator (main thread) and summed over the bank
threads (which share the process's GIL and 2 cores, so bank seconds overlap in wall time).
Stage walls are the times between the aggregator's first message of one stage and of the next.
The floor printed beside them is the broker's own round trip, produce -> acknowledged ->
fetched by another client, for a small message and for one bank's masked input.

Each case runs once per ``--fetch-max-wait-ms`` value (how long Tansu holds an empty fetch;
kafka-python's default is 500 ms, fraudfl's ``KafkaSettings`` 100 ms), so the table shows that
setting's effect measured in one run.

    .venv/bin/python benchmarks/secure_sum_stages.py [--banks 10 20 50] [--params 100k] \
        [--fetch-max-wait-ms 500 100]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import struct
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
from e2e_rounds import HIDDEN, run_case  # benchmarks/ is on sys.path when run

from fraudfl.rounds import tasks
from fraudfl.secagg.client import SecAggClient
from fraudfl.secagg.server import SecAggServer
from fraudfl.transport import TopicPartition, TopicSpec
from fraudfl.transport.broker import EmbeddedBroker
from fraudfl.transport.channel import Channel
from fraudfl.transport.chunking import parse_chunk
from fraudfl.transport.kafka import KafkaSettings, KafkaTransport

_FIXED = 38  # magic, version, flags, round, timestamp, message id: then federation, stage
_LEN = struct.Struct(">B")
CATEGORIES = ("produce", "flush", "poll empty", "poll data", "envelope out", "envelope in",
              "secagg", "fsync", "sleep", "training")


class Timers:
    """Seconds per (role, category); the role is the thread's (aggregator = main thread)."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.stage_starts: list[tuple[float, int, str]] = []  # aggregator's first send per stage
        self._local = threading.local()
        self._lock = threading.Lock()

    @staticmethod
    def role() -> str:
        thread = threading.current_thread()
        if thread is threading.main_thread():
            return "aggregator"
        return "banks" if thread.name.startswith("Thread-") else "other"

    def add(self, category: str, seconds: float) -> None:
        with self._lock:
            self.seconds[(self.role(), category)] += seconds

    def wrap(self, owner: Any, name: str, category: str) -> None:
        original: Callable[..., Any] = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.add(category, time.perf_counter() - t0)

        setattr(owner, name, timed)


def instrument(timers: Timers) -> None:
    send, poll, channel_send = KafkaTransport.send, KafkaTransport.poll, Channel.send

    def timed_send(self: KafkaTransport, topic: str, key: bytes | None, value: bytes) -> None:
        t0 = time.perf_counter()
        send(self, topic, key, value)
        seconds = time.perf_counter() - t0
        timers.add("produce", seconds)
        timers._local.produced = getattr(timers._local, "produced", 0.0) + seconds
        if Timers.role() == "aggregator":
            chunk = parse_chunk(value)
            if chunk.index == 0:
                header = bytes(chunk.data[:300])
                (rnd,) = struct.unpack_from(">Q", header, 6)
                at = _FIXED + 1 + header[_FIXED]
                stage = header[at + 1 : at + 1 + header[at]].decode()
                if not timers.stage_starts or timers.stage_starts[-1][1:] != (rnd, stage):
                    timers.stage_starts.append((time.monotonic(), rnd, stage))

    def timed_poll(self: KafkaTransport, timeout_s: float) -> list[Any]:
        t0 = time.perf_counter()
        records = poll(self, timeout_s)
        timers.add("poll data" if records else "poll empty", time.perf_counter() - t0)
        return records

    def timed_channel_send(self: Channel, *args: Any, **kwargs: Any) -> Any:
        before = getattr(timers._local, "produced", 0.0)
        t0 = time.perf_counter()
        try:
            return channel_send(self, *args, **kwargs)
        finally:
            produced = getattr(timers._local, "produced", 0.0) - before
            timers.add("envelope out", time.perf_counter() - t0 - produced)

    KafkaTransport.send = timed_send  # type: ignore[method-assign]
    KafkaTransport.poll = timed_poll  # type: ignore[method-assign]
    Channel.send = timed_channel_send  # type: ignore[method-assign]
    timers.wrap(KafkaTransport, "flush", "flush")
    timers.wrap(Channel, "_accept", "envelope in")
    for cls, names in ((SecAggClient, ("receive", "set_input")),
                       (SecAggServer, ("receive", "start", "stage_timeout"))):
        for name in names:
            timers.wrap(cls, name, "secagg")
    timers.wrap(os, "fsync", "fsync")
    timers.wrap(time, "sleep", "sleep")
    timers.wrap(tasks, "train_local", "training")


_consumer_settings = KafkaSettings.consumer


def _with_fetch_wait(wait_ms: int) -> Callable[[KafkaSettings], dict[str, Any]]:
    def consumer(self: KafkaSettings) -> dict[str, Any]:
        return {**_consumer_settings(self), "fetch_max_wait_ms": wait_ms}
    return consumer


def broker_floor(size: int, trips: int = 15) -> float:
    """Median seconds from produce to the record fetched by another client (acks=all)."""
    with EmbeddedBroker() as broker:
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        producer, consumer = KafkaTransport(settings), KafkaTransport(settings)
        producer.create_topics([TopicSpec("floor", 1)])
        consumer.assign([TopicPartition("floor", 0)])
        consumer.poll(0.2)
        times = []
        for _ in range(trips):
            t0 = time.perf_counter()
            producer.send("floor", None, b"x" * size)
            producer.flush()
            while not consumer.poll(2.0):
                pass
            times.append(time.perf_counter() - t0)
        producer.close()
        consumer.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--banks", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--params", default="100k", choices=HIDDEN)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fetch-max-wait-ms", type=int, nargs="+", default=[500, 100])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, force=True)
    torch.set_num_threads(1)
    small, big = broker_floor(100), broker_floor(4 * 100_000)
    print(f"floor: broker round trip (produce, ack, fetch by another client): "
          f"{small * 1e3:.1f} ms for 100 B, {big * 1e3:.1f} ms for 400 kB; "
          f"x5 stages = {5 * big * 1e3:.0f} ms per secure sum")
    timers = Timers()
    instrument(timers)
    for n, wait in ((n, w) for n in args.banks for w in args.fetch_max_wait_ms):
        timers.seconds.clear()
        timers.stage_starts.clear()
        # run_case builds its own settings; every client it makes gets this fetch wait.
        KafkaSettings.consumer = _with_fetch_wait(wait)  # type: ignore[method-assign]
        with tempfile.TemporaryDirectory(prefix="fraudfl-bench-") as tmp:
            r = run_case(n, args.params, args.rounds, Path(tmp) / "fed")
        rounds = r["rounds"]
        train = timers.seconds[("banks", "training")] / rounds
        print(f"\n{n} banks, {r['params']:,} parameters, fetch_max_wait_ms {wait}: "
              f"{r['seconds_per_round']:.2f} s per "
              f"training round ({rounds} rounds; stats round {r['stats_round_seconds']:.2f} s); "
              f"local training {train:.2f} s per round summed over banks")
        print(f"  {'seconds per round':<14} " + " ".join(f"{c:>12}" for c in CATEGORIES))
        for role in ("aggregator", "banks"):
            print(f"  {role:<14} " + " ".join(
                f"{timers.seconds[(role, c)] / rounds:>12.3f}" for c in CATEGORIES))
        walls: dict[str, list[float]] = defaultdict(list)
        starts = timers.stage_starts
        for (t0, _, stage), (t1, _, _) in pairwise(starts):
            walls[stage].append(t1 - t0)
        print("  stage walls (aggregator's first message to its next stage's), median s: "
              + ", ".join(f"{s} {statistics.median(w):.3f}" for s, w in walls.items()))
        setup, summing = (sum(statistics.median(walls[s]) for s in stages if s in walls)
                          for stages in (("announce", "share_keys"),
                                         ("masked_input", "consistency_check", "unmask")))
        print(f"  key set-up (announce, share_keys): {setup:.3f} s; the sum after it "
              f"(masked_input, consistency_check, unmask): {summing:.3f} s")


if __name__ == "__main__":
    main()
