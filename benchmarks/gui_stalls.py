"""GUI-thread stalls while opening, zooming and panning a big run through the real window.

A ``QTimer`` on the GUI thread beats every 5 ms; any gap between two beats is time the GUI thread could not
serve its event loop (it was busy reading, computing or painting). The benchmark drives the real
``MainWindow`` (offscreen) the way a user does — *File ▸ Open* of a ``.kat.h5`` store (``open_paths``: the
loader, the run model, the first frame), mouse-wheel zooms at the cursor, mouse drags and the A/D keys to
pan, wheel zooms back out — with the Qt event loop running between input events (a ``QEventLoop``), so the
window repaints and receives its workers' results as it would on screen, and reports the largest gap per
phase.

The store is ``benchmarks/render.py``'s synthetic tensor-parallel run (``--ranks`` x ``--kernels``, cached in
``benchmarks/.cache``), with its detection results marked as the current detector's so opening it does not
re-run detection (the window would otherwise re-analyse a store written by an unknown detector).

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/gui_stalls.py [--kernels 10000000 --ranks 64]

Writes ``benchmarks/results/gui_stalls.md``. Bar: no gap over 50 ms while opening, panning and zooming.
Run it on a quiet machine (it waits while the 1-minute load average is above ``--max-load``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import threading
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

BEAT_MS = 5
BAR_MS = 50.0


def prepare_store(ranks: int, kernels: int, detected: bool = False) -> Path:
    """render.py's cached store, copied once with ``detect/meta`` naming the current detector (its synthetic
    marks kept); ``detected``: analysed by the real detector instead (``render_window.detected_store``)."""
    import render
    import render_window

    from kat_gui.detect import DETECTOR_VERSION
    from kat_gui.store import TraceStore

    cache = ROOT / "benchmarks" / ".cache"
    cache.mkdir(exist_ok=True)
    base = cache / f"render-{ranks}x{kernels}-{render.CACHE_LAYOUT}.kat.h5"
    if not base.exists():
        t = time.perf_counter()
        render.make_store(base, ranks, kernels)
        print(f"built {base.name} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    if detected:
        return render_window.detected_store(base)
    out = (
        cache / f"stalls-{ranks}x{kernels}-{render.CACHE_LAYOUT}-{DETECTOR_VERSION.replace('/', '_')}.kat.h5"
    )
    if not out.exists():
        tmp = out.with_suffix(".tmp")
        shutil.copyfile(base, tmp)
        st = TraceStore.open(tmp, "r+")
        try:
            st.put_json(
                "detect/meta", {"detector": DETECTOR_VERSION, "note": "synthetic (benchmarks/render.py)"}
            )
        finally:
            st.close()
        tmp.rename(out)
    return out


class Heartbeat:
    """Beats every BEAT_MS on the GUI thread; records every gap with the phase it fell in."""

    def __init__(self) -> None:
        from PySide6 import QtCore

        self.phase = "idle"
        self.gaps: list[tuple[str, float]] = []
        self._last = time.perf_counter()
        self.timer = QtCore.QTimer()
        self.timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
        self.timer.setInterval(BEAT_MS)
        self.timer.timeout.connect(self._beat)

    def start(self) -> None:
        self._last = time.perf_counter()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def _beat(self) -> None:
        now = time.perf_counter()
        self.gaps.append((self.phase, (now - self._last) * 1e3))
        self._last = now

    def set_phase(self, name: str) -> None:
        # The gap running into the phase change belongs to the phase that caused it.
        self.phase = name


class StallSampler:
    """``--why``: a thread that, while the heartbeat is late by more than ``after_ms``, samples the GUI
    thread's Python stack every 2 ms and counts the innermost KAT/pyqtgraph frames (where the time goes)."""

    def __init__(self, hb: Heartbeat, after_ms: float = 20.0):
        self.hb, self.after_ms = hb, after_ms
        self.counts: Counter = Counter()
        self.main = threading.main_thread().ident
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            if (time.perf_counter() - self.hb._last) * 1e3 < self.after_ms:
                continue
            frame = sys._current_frames().get(self.main)
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)
            keep = [f for f in stack if "kat_gui" in f.filename or "pyqtgraph" in f.filename][-3:]
            key = " < ".join(f"{Path(f.filename).name}:{f.name}" for f in reversed(keep)) or stack[-1].name
            self.counts[(self.hb.phase, key)] += 1


def wait_ms(ms: int) -> None:
    """Run the GUI event loop for ``ms`` (``QTest.qWait`` would sleep the GUI thread in 10 ms slices)."""
    from PySide6 import QtCore

    loop = QtCore.QEventLoop()
    QtCore.QTimer.singleShot(ms, loop.quit)
    loop.exec()


def _wait_until(cond, timeout_s: float = 120.0) -> float:
    t = time.perf_counter()
    while not cond():
        if time.perf_counter() - t > timeout_s:
            raise TimeoutError("the window did not get there in time")
        wait_ms(5)
    return time.perf_counter() - t


def _wheel(plot, x_px: float, notches: int) -> None:
    from PySide6 import QtCore, QtGui, QtWidgets

    vp = plot.viewport()
    pos = QtCore.QPointF(x_px, vp.height() / 2)
    ev = QtGui.QWheelEvent(
        pos,
        QtCore.QPointF(vp.mapToGlobal(pos.toPoint())),
        QtCore.QPoint(0, 0),
        QtCore.QPoint(0, 120 * notches),
        QtCore.Qt.MouseButton.NoButton,
        QtCore.Qt.KeyboardModifier.NoModifier,
        QtCore.Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QtWidgets.QApplication.sendEvent(vp, ev)


def _drag(plot, x0: int, dx: int, steps: int, step_ms: int) -> None:
    from PySide6 import QtCore
    from PySide6.QtTest import QTest

    vp = plot.viewport()
    y = vp.height() // 2
    left = QtCore.Qt.MouseButton.LeftButton
    QTest.mousePress(vp, left, QtCore.Qt.KeyboardModifier.NoModifier, QtCore.QPoint(x0, y))
    for i in range(1, steps + 1):
        QTest.mouseMove(vp, QtCore.QPoint(x0 + dx * i, y))
        wait_ms(step_ms)
    QTest.mouseRelease(vp, left, QtCore.Qt.KeyboardModifier.NoModifier, QtCore.QPoint(x0 + dx * steps, y))


def drive(store: Path, wheel_ms: int = 40, pan_ms: int = 16, why: bool = False) -> tuple[Heartbeat, dict]:
    """Open ``store`` in a real window and zoom/pan it; returns the heartbeat and some facts."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtCore
    from PySide6.QtTest import QTest

    from kat_gui.ui.app import make_app
    from kat_gui.ui.main_window import MainWindow

    app = make_app()
    win = MainWindow(interactive=False, use_llm=False)
    win.resize(1600, 1000)
    win.show()
    wait_ms(200)
    hb = Heartbeat()
    facts: dict = {}
    hb.start()
    sampler = StallSampler(hb) if why else None
    if sampler:
        sampler.start()
    wait_ms(100)

    # --- open: loader on a worker, the run model, the window's first frame of the whole run.
    hb.set_phase("open")
    t = time.perf_counter()
    win.open_paths([store])
    _wait_until(lambda: win.current_view() is not None)
    view = win.current_view()
    tl = view.timeline
    _wait_until(lambda: not win.busy() and tl.lanes_item.rect_count() > 0)
    facts["open_s"] = time.perf_counter() - t
    # Every rank's lane (a run of more than 48 ranks opens on the implicated ranks and some peers): the
    # same 64 lanes for every version of the window.
    if tl.rank_filter is not None:
        tl.set_rank_filter(None)
        tl.set_all_hosts_collapsed(False)  # a large run's all-ranks view starts with hosts collapsed
        _wait_until(lambda: tl.lanes_item.rect_count() > 0 and rank_lanes(tl) == a_ranks(view))
    facts["lanes"] = len(tl.lanes)
    wait_ms(300)
    # --- control: the opened window left alone (what the machine itself does to a 5 ms timer).
    hb.set_phase("idle (control)")
    wait_ms(2000)
    plot = tl.plot
    vp = plot.viewport()
    mid = vp.width() / 2
    plot.setFocus()

    def wheel(n: int, notches: int) -> None:  # n wheel events at the plot's centre, wheel_ms apart
        for _ in range(n):
            _wheel(plot, mid, notches)
            wait_ms(wheel_ms)

    def key(k, n: int, gap_ms: int) -> None:
        for _ in range(n):
            QTest.keyClick(plot, k)
            wait_ms(gap_ms)

    # --- zoom in with the wheel (31 notches ~ 1/10,000 of the run, 40 ~ 1/150,000), at 25 notches/s.
    hb.set_phase("zoom in (wheel)")
    wheel(40, 1)
    wait_ms(300)
    facts["deep_view_s"] = tl.x_range()[1] - tl.x_range()[0]

    # --- pan there: a mouse drag, then the keys.
    hb.set_phase("pan (drag, keys)")
    before = tl.x_range()[0]
    _drag(plot, int(vp.width() * 0.3), 24, 40, pan_ms)
    facts["drag_moved"] = tl.x_range()[0] != before
    wait_ms(200)
    key(QtCore.Qt.Key.Key_D, 10, 60)
    key(QtCore.Qt.Key.Key_A, 10, 60)
    wait_ms(300)

    # --- zoom out to 1/100 of the run (the densest view: rasterised lanes), and pan there.
    hb.set_phase("zoom out (wheel)")
    wheel(24, -1)
    wait_ms(300)
    facts["dense_view_s"] = tl.x_range()[1] - tl.x_range()[0]
    facts["dense_rects"] = tl.lanes_item.rect_count()
    facts["dense_raster"] = tl.lanes_item.uses_raster()
    hb.set_phase("pan (drag, keys)")
    _drag(plot, int(vp.width() * 0.7), -24, 40, pan_ms)
    wait_ms(200)
    key(QtCore.Qt.Key.Key_D, 10, 60)
    wait_ms(300)

    # --- quick zoom in and out at the dense level (each step crosses a 2x resolution boundary: new reads).
    hb.set_phase("zoom in/out (keys)")
    key(QtCore.Qt.Key.Key_W, 6, 80)
    key(QtCore.Qt.Key.Key_S, 6, 80)
    wait_ms(300)

    # --- back to the whole run with the wheel.
    hb.set_phase("zoom out (wheel)")
    wheel(20, -1)
    wait_ms(400)
    hb.set_phase("idle")
    wait_ms(50)
    hb.stop()
    if sampler:
        sampler.stop()
        facts["why"] = sampler.counts
    facts["queries"] = tl.lanes_item.queries
    win.close()
    app.processEvents()
    return hb, facts


def rank_lanes(tl) -> int:
    """Lanes that draw one rank (not host headers or a collapsed host's summary lane)."""
    return len({ln.rank for ln in tl.lanes if ln.kind == "rank"})


def a_ranks(view) -> int:
    return len(view.model.ranks)


def summarize(hb: Heartbeat) -> list[dict]:
    phases: dict[str, list[float]] = {}
    for ph, g in hb.gaps:
        phases.setdefault(ph, []).append(g)
    rows = []
    order = ["open", "zoom in (wheel)", "pan (drag, keys)", "zoom out (wheel)", "zoom in/out (keys)"]
    for ph in order:
        g = phases.get(ph, [])
        if not g:
            continue
        s = sorted(g)
        rows.append(
            {
                "phase": ph,
                "beats": len(g),
                "max": s[-1],
                "p99": s[min(len(s) - 1, int(0.99 * len(s)))],
                "median": statistics.median(s),
                "over16": sum(x > 16.7 for x in g),
                "over50": sum(x > BAR_MS for x in g),
            }
        )
    allg = [g for ph, g in hb.gaps if ph in order]
    idle = sorted(phases.get("idle (control)", [0.0]))
    rows.append(
        {
            "phase": "**all of the above**",
            "beats": len(allg),
            "max": max(allg),
            "p99": sorted(allg)[int(0.99 * len(allg))],
            "median": statistics.median(allg),
            "over16": sum(x > 16.7 for x in allg),
            "over50": sum(x > BAR_MS for x in allg),
        }
    )
    rows.append(
        {
            "phase": "idle window (control, not in the bar)",
            "beats": len(idle),
            "max": idle[-1],
            "p99": idle[min(len(idle) - 1, int(0.99 * len(idle)))],
            "median": statistics.median(idle),
            "over16": sum(x > 16.7 for x in idle),
            "over50": sum(x > BAR_MS for x in idle),
        }
    )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernels", type=int, default=10_000_000)
    ap.add_argument("--ranks", type=int, default=64)
    ap.add_argument("--runs", type=int, default=1, help="repeat the whole drive (a fresh window each time)")
    ap.add_argument("--max-load", type=float, default=2.0, help="wait while the 1-minute load is above this")
    ap.add_argument("--label", default="", help="what code this is (written into the table)")
    ap.add_argument("--detected", action="store_true", help="the store analysed by the real detector")
    ap.add_argument("--why", action="store_true", help="sample the GUI thread's stack during stalls (stderr)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gui_stalls.md")
    a = ap.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("KAT_CONFIG_DIR", str(ROOT / "benchmarks" / ".cache" / "gui-config"))
    store = prepare_store(a.ranks, a.kernels, a.detected)
    while os.getloadavg()[0] > a.max_load:
        print(f"load {os.getloadavg()[0]:.1f} > {a.max_load}: waiting", file=sys.stderr)
        time.sleep(20)
    load0 = os.getloadavg()[0]
    results = []
    for _ in range(a.runs):
        hb, facts = drive(store, why=a.why)
        results.append((summarize(hb), facts))
        for (phase, where), n in sorted(facts.get("why", {}).items(), key=lambda kv: -kv[1])[:25]:
            print(f"{n * 2:5d} ms  {phase:20s} {where}", file=sys.stderr)
    load1 = os.getloadavg()[0]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "# GUI-thread stalls: opening, zooming and panning a big run",
        "",
        f"Store: {a.kernels:,} kernels, {a.ranks} ranks ({store.stat().st_size / 1e6:.0f} MB, "
        f"`benchmarks/render.py`'s synthetic run{', analysed by `kat detect`' if a.detected else ''}). Real "
        "`MainWindow` 1600x1000 offscreen, driven with input "
        f"events; a {BEAT_MS} ms `QTimer` heartbeat on the GUI thread; a *gap* is the time between two beats "
        f"(ideal: {BEAT_MS} ms). Wheel notches every 40 ms, drag steps every 16 ms, keys every 60-80 ms.",
        "",
        "| run | phase | beats | max gap ms | p99 ms | median ms | gaps > 16.7 ms | gaps > 50 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, (rows, _facts) in enumerate(results):
        for r in rows:
            lines.append(
                f"| {i + 1}{(' ' + a.label) if a.label else ''} | {r['phase']} | {r['beats']} | {r['max']:.1f} | "
                f"{r['p99']:.1f} | {r['median']:.1f} | {r['over16']} | {r['over50']} |"
            )
    lines.append("")
    for i, (_rows, f) in enumerate(results):
        lines.append(
            f"Run {i + 1}: open to first full frame {f['open_s']:.2f} s; deepest view {f['deep_view_s'] * 1e6:.1f} µs; "
            f"dense view {f['dense_view_s'] * 1e3:.1f} ms with {f['dense_rects']:,} rectangles "
            f"({'raster' if f['dense_raster'] else 'vector'}); {f['queries']} window reads; "
            f"the drag {'moved' if f['drag_moved'] else 'did NOT move'} the view; {f['lanes']} lanes."
        )
    lines += [
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared VM), Python {platform.python_version()}; "
        f"1-minute load average {load0:.2f} at the start, {load1:.2f} at the end. Run on {when}.",
        "",
        f"Bar: no GUI-thread gap over {BAR_MS:.0f} ms while opening, panning and zooming.",
        "",
    ]
    text = "\n".join(lines)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
