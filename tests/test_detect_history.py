"""Unit tests of the detector's building blocks: the change-window search behind link faults and sustained
rank shifts, host inference from device indices, and the fast positional peer matching."""

from __future__ import annotations

import numpy as np

from kat_gui.detect.frame import _hosts_from_devices
from kat_gui.detect.history import joint_windows, link_shifts
from kat_gui.detect.signals import peer_match


def _series(n: int, rng: np.random.Generator, shift: float = 0.0, at: int = 20, churn: float = 0.0):
    """log transfer = latency/bandwidth model of a random-walk batch + noise (+ a shift from step ``at``)."""
    batch = np.exp(np.cumsum(rng.normal(0, churn, n))) * 64
    size = np.log(batch)
    y = np.log(8_000 + 40 * batch) + rng.normal(0, 0.01, n)
    y[at:] += shift
    return np.arange(n), y, size[:, None]


def test_shift_found_at_its_onset_despite_batch_churn():
    rng = np.random.default_rng(1)
    steps, y, x = _series(60, rng, shift=np.log(1.1), at=25, churn=0.15)
    i, j, delta, z = joint_windows([(steps, y, np.column_stack([x, (x - x.mean()) ** 2]))], 60, 3, 0.005)
    assert abs(i - 25) <= 1 and j == 59
    assert abs(delta - np.log(1.1)) < 0.02 and z > 10


def test_batch_churn_alone_is_explained_by_the_covariate():
    for seed in range(5):
        rng = np.random.default_rng(seed)
        steps, y, x = _series(60, rng, churn=0.15)
        x2 = np.column_stack([x, (x - x.mean()) ** 2])
        bw = joint_windows([(steps, y, x2)], 60, 3, 0.005)
        assert bw is None or bw[3] < 7, bw
        # without the covariate the same churn looks like a shift: the model is what removes it
    rng = np.random.default_rng(0)
    steps, y, x = _series(60, rng, churn=0.3)
    naive = joint_windows([(steps, y, np.zeros((60, 0)))], 60, 3, 0.005)
    assert naive is not None and naive[3] > 7


def test_link_shifts_combines_collectives_of_one_group():
    rng = np.random.default_rng(3)
    n = 40
    inst_step = np.repeat(np.arange(n), 2)
    inst_key = np.tile([0, 1], n)
    y = np.log(10_000) + rng.normal(0, 0.01, 2 * n)
    y[inst_step >= 15] += np.log(1.08)
    out = link_shifts(
        np.array([7, 7]),
        np.array([1, 2]),
        inst_key,
        inst_step,
        y,
        np.full(2 * n, np.nan),
        np.zeros((n, 0)),
        n,
        3,
        0.005,
    )
    assert len(out) == 1 and out[0].group == 7
    assert abs(out[0].s0 - 15) <= 1 and out[0].s1 == n - 1 and out[0].z > 7


def test_hosts_from_repeated_devices():
    ranks = np.arange(8)
    two = {r: r % 4 for r in range(8)}
    hosts = _hosts_from_devices(ranks, two)
    assert hosts[0] == hosts[3] != hosts[4] == hosts[7]
    # every process sees only its own GPU (device 0 everywhere): says nothing about hosts
    assert _hosts_from_devices(ranks, dict.fromkeys(range(8), 0)) == {}
    # one host of eight GPUs
    assert _hosts_from_devices(ranks, {r: r for r in range(8)}) == {}


def test_positional_peer_match_agrees_with_exact_matching():
    rng = np.random.default_rng(5)
    n_ranks, n_steps, per_step = 4, 6, 5
    names = np.tile(np.array([3, 4, 3, 5, 4]), n_steps * n_ranks)
    rank = np.repeat(np.arange(n_ranks), n_steps * per_step)
    step = np.tile(np.repeat(np.arange(n_steps), per_step), n_ranks)
    value = rng.uniform(1_000, 2_000, len(rank))
    rows = np.arange(len(rank))
    fast = peer_match(rows, step, names, rank, value, n_ranks)
    # break the layout (rank 3's rows first): the exact (step, name, ordinal) path must give the same
    order = np.r_[np.flatnonzero(rank == 3), np.flatnonzero(rank != 3)]
    exact = peer_match(rows[order], step[order], names[order], rank[order], value[order], n_ranks)
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    np.testing.assert_allclose(fast.log_ratio, exact.log_ratio[back])
    assert np.isfinite(fast.log_ratio).all()


def test_two_rank_fault_stands_out_against_run_noise():
    """With two ranks the deviations of a fault are +d and -d; the noise scale must come from the steps'
    own variation, not from the spread of cells (which is d itself)."""
    from kat_gui.detect.signals import centred

    rng = np.random.default_rng(2)
    n_steps = 40
    d = rng.normal(0, 0.01, (2, n_steps))
    d[0, 20:] += 0.08  # rank 0 8 % slower than its peer from step 20
    d[1] = -d[0]  # each rank's log ratio to the other
    sig = centred("compute", d, np.ones_like(d, dtype=np.int64), 0.005)
    assert np.median(sig.z[0, 20:]) > 4
    assert np.abs(sig.z[:, :20]).max() < 4
