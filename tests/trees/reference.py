"""A pooled histogram GBDT written the straightforward way, as the reference for the tests.

It shares no code with ``fraudfl.trees`` beyond the binned matrix it is given: it keeps the
row set of every node, builds each node's histograms with ``np.bincount`` on the pooled rows,
scans bins and missing directions in Python loops, and tracks margins by row sets instead of
traversing trees. The federated implementation (per-bank packed vectors, summed, unpacked,
cumulative-sum split search, leaf sums in a separate step, vectorised traversal) must reproduce
its splits and leaf values: a bug in the layout, the sum, the split scan, the routing or the
leaf step shows up as a difference. Running ``fraudfl.trees`` itself on the pooled rows would
only show that its sums decompose over banks, and would share any such bug.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

TIE = 1e-9


@dataclass
class RefTree:
    splits: dict[int, tuple[int, int, bool]] = field(default_factory=dict)
    leaves: dict[int, float] = field(default_factory=dict)


@dataclass
class RefModel:
    base: np.ndarray
    rounds: list[list[RefTree]]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _columns(seed: int, colsample: float, n_features: int, r: int) -> list[int]:
    if colsample >= 1.0:
        return list(range(n_features))
    k = max(1, round(colsample * n_features))
    rng = np.random.default_rng([seed, r])
    return sorted(int(f) for f in rng.choice(n_features, size=k, replace=False))


def fit_reference(Xb: np.ndarray, y: np.ndarray, *, num_class: int, n_estimators: int,
                  max_depth: int, learning_rate: float, reg_lambda: float,
                  min_child_weight: float, min_child_samples: int, gamma: float,
                  colsample_bytree: float, max_bin: int, seed: int) -> RefModel:
    n, n_features = Xb.shape
    missing = max_bin
    k_out = 1 if num_class == 2 else num_class
    counts = np.bincount(y, minlength=num_class).astype(float)
    if num_class == 2:
        p1 = counts[1] / n
        base = np.array([math.log(p1 / (1 - p1))])
    else:
        base = np.log(counts / n)
    margin = np.tile(base, (n, 1))
    rounds = []
    for r in range(n_estimators):
        feats = _columns(seed, colsample_bytree, n_features, r)
        if k_out == 1:
            p = _sigmoid(margin[:, 0])[:, None]
            target = y[:, None].astype(float)
        else:
            e = np.exp(margin - margin.max(axis=1, keepdims=True))
            p = e / e.sum(axis=1, keepdims=True)
            target = np.eye(num_class)[y]
        grads, hesses = p - target, p * (1 - p)
        trees = []
        for k in range(k_out):
            g, h = grads[:, k], hesses[:, k]
            tree = RefTree()
            frontier = [(0, np.arange(n))]
            final = []
            for _depth in range(max_depth):
                nxt = []
                for node, rows in frontier:
                    split = _best_split(Xb, rows, g, h, feats, max_bin, missing, reg_lambda,
                                        min_child_weight, min_child_samples, gamma)
                    if split is None:
                        final.append((node, rows))
                        continue
                    f, t, dl = split
                    tree.splits[node] = split
                    codes = Xb[rows, f]
                    go_left = np.where(codes == missing, dl, codes <= t)
                    nxt += [(2 * node + 1, rows[go_left]), (2 * node + 2, rows[~go_left])]
                frontier = nxt
            final += frontier
            for node, rows in final:
                value = -learning_rate * g[rows].sum() / (h[rows].sum() + reg_lambda)
                tree.leaves[node] = value
                margin[rows, k] += value
            trees.append(tree)
        rounds.append(trees)
    return RefModel(base, rounds)


def _best_split(Xb, rows, g, h, feats, max_bin, missing, lam, mcw, mcs, gamma):
    G, H, C = g[rows].sum(), h[rows].sum(), len(rows)
    candidates = []
    for f in feats:
        codes = Xb[rows, f].astype(np.int64)
        hg = np.bincount(codes, weights=g[rows], minlength=max_bin + 1)
        hh = np.bincount(codes, weights=h[rows], minlength=max_bin + 1)
        hc = np.bincount(codes, minlength=max_bin + 1)
        for t in range(max_bin):
            gl0, hl0, cl0 = hg[: t + 1].sum(), hh[: t + 1].sum(), hc[: t + 1].sum()
            for dl in (False, True):
                gl = gl0 + (hg[missing] if dl else 0.0)
                hl = hl0 + (hh[missing] if dl else 0.0)
                cl = cl0 + (hc[missing] if dl else 0)
                gr, hr, cr = G - gl, H - hl, C - cl
                if hl < mcw or hr < mcw or cl < mcs or cr < mcs:
                    continue
                gain = 0.5 * (gl**2 / (hl + lam) + gr**2 / (hr + lam) - G**2 / (H + lam)) - gamma
                candidates.append((gain, f, t, dl))
    if not candidates:
        return None
    best = max(c[0] for c in candidates)
    if best <= 0:
        return None
    for gain, f, t, dl in candidates:
        if gain >= best - TIE * abs(best):
            return (f, t, dl)
    raise AssertionError("unreachable")


def reference_margin(model: RefModel, Xb: np.ndarray, max_bin: int) -> np.ndarray:
    """Row-by-row traversal of the reference model (slow, obvious)."""
    out = np.tile(model.base, (len(Xb), 1))
    for trees in model.rounds:
        for k, tree in enumerate(trees):
            for i, row in enumerate(Xb):
                node = 0
                while node in tree.splits:
                    f, t, dl = tree.splits[node]
                    left = dl if row[f] == max_bin else row[f] <= t
                    node = 2 * node + (1 if left else 2)
                out[i, k] += tree.leaves[node]
    return out
