"""Run-vs-run diff: align two runs by step, test every kernel, kernel class and rank metric for a shift, and
rank the differences (significant and largest effect first; noise comes out insignificant, shown grey).

Method (docs/compare.md):

1. Alignment. Each run's steps are numbered as the trace numbers them (``ProfilerStep#N``; else marker
   kernel or collective order, see :mod:`kat_gui.compare.run`). An :class:`Anchor` names the step (or a time,
   mapped to its step) of each run that lines up with the other's; by default each run's first step. Only
   the steps both runs have after their anchors are compared, so a longer run is cut to the shorter one.
2. Samples. Per kernel name, per (kernel name, rank), per kernel class and per (class, rank): the own
   duration of every instance. Per rank and step: busy time (sum of own durations), idle time (the step's
   GPU span minus busy and wait) and collective wait. Per step: the step time (latest end minus earliest
   start over ranks). Degraded rank r is paired with healthy rank r (or ``r mod n`` when the healthy run
   has fewer ranks).
3. Test. Two-sided Mann-Whitney U per row (normal approximation, ties corrected), Benjamini-Hochberg over all
   rows at once, and a minimum effect: a row is *significant* when q < ``alpha``, its relative effect is at
   least ``min_effect`` and its absolute median shift at least ``min_abs_ns``. The relative effect is the
   median's relative change, or the mean's when both move the same way and the mean moved more (a fault
   that covers a third of the steps moves the mean before it moves the median).
4. Located in time. Per row, the window of aligned steps in which it changed (a change-point search over
   its per-step effect); where that window is a part of the run, the row is tested again on those steps
   alone and reports them (``Difference.window``), so its p50s, means and effect agree.
5. Ranking. Significant causes first (kernels, classes, rank busy/idle), then significant symptoms
   (collective wait grows because another rank is late), then structural changes, then the rest; each
   block by the size of its effect.

The steps live in one module each: :mod:`~kat_gui.compare.alignment` (1), :mod:`~kat_gui.compare.samples`
and :mod:`~kat_gui.compare.workload` (2), :mod:`~kat_gui.compare.significance` and
:mod:`~kat_gui.compare.stats` (3), :mod:`~kat_gui.compare.window` (4), :mod:`~kat_gui.compare.structural`
and :mod:`~kat_gui.compare.ranking` (5); the result types in :mod:`~kat_gui.compare.result`. This module
runs them in order.

Units: times in ns; effects are relative changes (degraded/healthy - 1).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from kat_gui.compare.alignment import RankPairing, align_steps
from kat_gui.compare.ranking import demote_causeless_symptoms, rank_differences, rank_table
from kat_gui.compare.result import Anchor, Comparison, Params, RunSummary
from kat_gui.compare.run import RunData, load_run
from kat_gui.compare.samples import (
    GroupLayout,
    SampleColumns,
    add_kernel_samples,
    add_step_samples,
    kernel_samples,
)
from kat_gui.compare.significance import difference_rows, row_tests
from kat_gui.compare.structural import stopped_ranks, structural_rows, workload_rows
from kat_gui.compare.window import locate_changes
from kat_gui.compare.workload import workload_model
from kat_gui.progress import Progress, scaled

if TYPE_CHECKING:
    from kat_gui.store import TraceStore


def compare_runs(
    healthy: RunData,
    degraded: RunData,
    anchor: Anchor | int | None = None,
    params: Params | None = None,
    progress: Progress | None = None,
) -> Comparison:
    """The diff of two loaded runs (see the module docstring). ``anchor`` an int = the same step number in
    both runs. Loading is separate (:func:`load_run`) so a view can re-anchor without re-reading."""
    p = params or Params()
    runs = (healthy, degraded)
    # 1. Alignment: the compared steps.
    steps = align_steps(healthy, degraded, anchor)
    if progress:
        progress(0.1, "collecting samples")

    # 2. Samples: kernels in one name vocabulary, their test values, then per (rank, step) and per step.
    vocab, kernels = kernel_samples(runs, steps)
    pairing = RankPairing.of(healthy, degraded)
    layout = GroupLayout.of(n_names=len(vocab.names), n_slots=pairing.n_slots)
    model = workload_model(kernels, layout.n_names, p.common_mode, p.min_n)
    cols = SampleColumns()
    add_kernel_samples(cols, layout, pairing, kernels, model)
    step_times = add_step_samples(cols, layout, pairing, runs, steps, kernels, p.common_mode)
    samples = cols.join()
    if progress:
        progress(0.4, "testing")

    # 3. Tests and verdicts.
    tests = row_tests(samples, layout.n_groups, p)
    if progress:
        progress(0.8, "ranking")
    h_step = float(np.median(step_times[0])) if len(step_times[0]) else 0.0
    d_ranks = pairing.degraded_ranks
    rows = difference_rows(tests, layout, vocab, d_ranks, model.modelled, h_step, p)

    # 4. Changes located in time: rows that changed in a window of steps report that window.
    whole_run = rows
    if p.locate_in_time:
        located = locate_changes(
            samples,
            tests,
            rows,
            layout,
            vocab,
            d_ranks,
            model.modelled,
            h_step,
            steps,
            runs,
            p,
            model.covariate,
        )
        rows = [located.get(i, d) for i, d in enumerate(rows)]
    del samples

    # 5. Structural rows, then the reading order.
    structural = structural_rows(healthy, degraded, kernels, vocab, steps.steps_compared, p)
    structural += workload_rows(kernels, model, vocab, p)
    structural += stopped_ranks(healthy, degraded, h_step)
    if p.common_mode:
        if not any(d.significant and not d.symptom for d in rows + structural):
            rows = whole_run  # only symptoms were located: they are demoted below, over the whole run
        demote_causeless_symptoms(rows, structural)
    differences = rank_differences(rows, structural)
    ranks = rank_table(rows, d_ranks)
    if progress:
        progress(1.0, "done")
    return Comparison(
        healthy=RunSummary.of(healthy),
        degraded=RunSummary.of(degraded),
        alignment={
            "method_healthy": healthy.step_method,
            "method_degraded": degraded.step_method,
            "anchor_healthy_step": steps.anchor_healthy_step,
            "anchor_degraded_step": steps.anchor_degraded_step,
            "steps_compared": steps.steps_compared,
            "rank_pairs": pairing.to_json(),
        },
        differences=differences,
        step_time_healthy_ns=step_times[0],
        step_time_degraded_ns=step_times[1],
        ranks=ranks,
        params=p,
    )


def compare_stores(
    healthy: str | os.PathLike | TraceStore,
    degraded: str | os.PathLike | TraceStore,
    anchor: Anchor | int | None = None,
    progress: Progress | None = None,
    params: Params | None = None,
) -> Comparison:
    """Load two stores (paths or open TraceStores) and diff them; see :func:`compare_runs`.

    Raises KatInputError naming the file when an input is not a store or has no GPU work.
    """
    h = load_run(healthy, scaled(progress, 0.0, 0.4))
    d = load_run(degraded, scaled(progress, 0.4, 0.8))
    return compare_runs(h, d, anchor, params, scaled(progress, 0.8, 1.0))
