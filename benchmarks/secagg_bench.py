"""Secure-aggregation speed and upload size against the targets of issue 4.

Runs whole rounds in memory (real keys, real AES-CTR masks, real Ed25519 signatures) and
prints, per scenario: mean client time per round, the server's time to receive and accumulate
all messages, the server's unmask time (closing the last stage: Shamir reconstruction and mask
removal), the masked upload per client against the float32 size of the update, and ratios
against plain (unmasked) float32 summation of the same vectors measured in the same run.

    .venv/bin/python benchmarks/secagg_bench.py            # the issue's scenarios
    .venv/bin/python benchmarks/secagg_bench.py --n 20 --d 100000 --dropout 0.2 --neighbours 6
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from fraudfl.secagg import InMemoryFederation, SecAggClient, SecAggServer, ServerStatus
from fraudfl.secagg.inmemory import AGGREGATOR_ID
from fraudfl.secagg.messages import STAGE_MASKED, STAGE_UNMASK


@dataclass
class Result:
    label: str
    client_s: float
    server_receive_s: float
    server_unmask_s: float
    server_unmask_cpu_s: float
    upload_bytes: int
    float32_bytes: int
    plain_s: float
    target: str


def _survivable_dropouts(server: SecAggServer, rng: np.random.Generator, count: int) -> set[str]:
    p = server.params
    gone: set[int] = set()
    for v in rng.permutation(p.n).tolist():
        if len(gone) < count and all(len(g - gone - {v}) >= p.threshold for g in p.groups):
            gone.add(v)
    return {p.participants[v] for v in gone}


def run(n: int, d: int, dropout: float, neighbours: int, label: str, target: str) -> Result:
    rng = np.random.default_rng(0)
    fed = InMemoryFederation([f"bank-{i:03d}" for i in range(n)], "bench")
    names = sorted(fed.banks)
    updates = {b: rng.normal(0, 0.01, d).astype(np.float32) for b in names}
    group = n if neighbours == 0 else min(n, neighbours + neighbours % 2 + 1)
    server = SecAggServer.create(
        fed.aggregator, fed.allowlist, fed.federation_id, 1, names,
        threshold=group // 2 + 1, vector_length=d, neighbours=neighbours, clip=0.1,
    )
    clients = {
        b: SecAggClient(fed.banks[b], fed.allowlist, fed.federation_id, AGGREGATOR_ID)
        for b in names
    }
    for b in names:
        clients[b].set_input(updates[b])
    # Banks that drop after sharing keys: the costly case, their pairwise masks must be removed.
    # Chosen once the graph is fixed (SecAgg+ mixes every bank's nonce into it), in a random
    # order, skipping any that would leave a group with fewer than t holders.
    dropped: set[str] | None = None
    client_time = dict.fromkeys(names, 0.0)
    receive_time, unmask_time, unmask_cpu = 0.0, 0.0, 0.0
    upload = 0
    pending = server.start()
    while server.status is ServerStatus.RUNNING:
        if dropped is None and server.stage == STAGE_MASKED:
            dropped = _survivable_dropouts(server, rng, round(dropout * n))
        replies: list[bytes] = []
        for out in pending:
            for b in out.recipients:
                t0 = time.perf_counter()
                answer = clients[b].receive(out.data)
                client_time[b] += time.perf_counter() - t0
                if server.stage == STAGE_MASKED and dropped and b in dropped:
                    continue
                if server.stage == STAGE_MASKED:
                    upload = max(upload, len(answer[0]))
                replies.extend(answer)
        pending = []
        for i, reply in enumerate(replies):
            closing = server.stage == STAGE_UNMASK and i == len(replies) - 1
            t0, c0 = time.perf_counter(), time.process_time()
            pending.extend(server.receive(reply))
            elapsed = time.perf_counter() - t0
            if closing:
                unmask_time, unmask_cpu = elapsed, time.process_time() - c0
            else:
                receive_time += elapsed
        if not pending and server.status is ServerStatus.RUNNING:
            t0 = time.perf_counter()
            pending = server.stage_timeout()
            receive_time += time.perf_counter() - t0
    assert server.status is ServerStatus.DONE, server.abort_reason
    survivors = [b for b in names if b not in (dropped or set())]
    assert server.survivors == survivors
    # Plain aggregation of the same vectors: accumulate float32 updates one by one.
    # Best of five, as the machine is shared and a single pass of ~20 ms is noisy.
    plain = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        acc = np.zeros(d, dtype=np.float32)
        for b in survivors:
            acc += updates[b]
        plain = min(plain, time.perf_counter() - t0)
    decoded = server.params.quantizer().decode(server.result)
    exact = np.sum([updates[b].astype(np.float64) for b in survivors], axis=0)
    assert np.max(np.abs(decoded - exact)) <= server.params.quantizer().error_bound()
    active = [client_time[b] for b in survivors]
    return Result(
        label, float(np.mean(active)), receive_time, unmask_time, unmask_cpu, upload, 4 * d,
        plain, target,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int)
    ap.add_argument("--d", type=int, default=1_000_000)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--neighbours", type=int, default=0, help="SecAgg+ degree k (0 = full)")
    args = ap.parse_args()
    if args.n:
        graph = "full" if args.neighbours == 0 else f"k={args.neighbours}"
        scenarios = [(args.n, args.d, args.dropout, args.neighbours,
                      f"n={args.n} d={args.d:.0e} {args.dropout:.0%} drop {graph}", "-")]
    else:
        scenarios = [
            (20, 1_000_000, 0.2, 0, "n=20 d=1e6 20% drop full", "unmask < 1 s"),
            (20, 1_000_000, 0.2, 6, "n=20 d=1e6 20% drop k=6", "unmask < 1 s"),
            (50, 1_000_000, 0.0, 0, "n=50 d=1e6 no drop full", "unmask < 2 s"),
            (50, 1_000_000, 0.2, 0, "n=50 d=1e6 20% drop full", "-"),
            (50, 1_000_000, 0.2, 16, "n=50 d=1e6 20% drop k=16", "-"),
        ]
    header = (
        f"{'scenario':<28}{'client s':>9}{'srv recv s':>11}{'unmask s':>9}{'(cpu)':>7}"
        f"{'target':>14}"
        f"{'upload/f32':>11}{'plain s':>9}{'unmask/plain':>13}{'srv total/plain':>16}"
    )
    print(header)
    print("-" * len(header))
    for n, d, drop, k, label, target in scenarios:
        r = run(n, d, drop, k, label, target)
        total = r.server_receive_s + r.server_unmask_s
        print(
            f"{r.label:<28}{r.client_s:>9.3f}{r.server_receive_s:>11.3f}{r.server_unmask_s:>9.3f}"
            f"{r.server_unmask_cpu_s:>7.3f}{r.target:>14}"
            f"{r.upload_bytes / r.float32_bytes:>10.5f}x{r.plain_s:>9.4f}"
            f"{r.server_unmask_s / r.plain_s:>12.1f}x{total / r.plain_s:>15.1f}x",
            flush=True,
        )
    print(
        "\nclient s: mean time per surviving bank for the whole round (quantise, shares, masks, "
        "signatures); srv recv s: server time verifying and accumulating every message; "
        "unmask s: closing the last stage (Shamir reconstruction, mask removal), wall clock and "
        "(cpu) process CPU time, which is what a shared machine distorts least; upload/f32: "
        "masked-input message (header + vector + signature) / float32 update bytes."
    )


if __name__ == "__main__":
    main()
