"""``benchmarks/render.py --window``: a large run through the real window, as a user opens and reads it.

The store is ``render.py``'s synthetic tensor-parallel run (``--ranks`` x ``--kernels``, hosts of 8 GPUs) analysed
once by the real detector (``kat detect``: findings, anomalies and the overview's per-(rank, step) signals;
cached in ``benchmarks/.cache``). The real ``MainWindow`` (offscreen, 1600x1000) opens it:

- **open + first frame**: ``open_paths`` until the tab is built, the overview heatmap painted and the lanes (the
  focus set of a large run) drawn with the store's answer;
- **heatmap**: the overview's paint time per colour mode (median of repaints; the image is mapped once per mode,
  timed as *switch*), and the matrix size;
- **lanes**: the all-ranks view (hosts collapsed but the implicated one) and every host expanded (one lane per
  rank): the first frame after the change, then pans of 10 %, wheel-like zooms (x0.8 / x1.25) and page-down
  scrolls, each frame = the store's answer when the view needs a new one (read on the run's store thread, waited
  for here) + the paint, as ``render.bench``;
- **memory**: the peak RSS of the process at the end.

GUI-thread stalls are ``benchmarks/gui_stalls.py --detected`` on the same store (here every frame waits for its
data on purpose, so the GUI thread is held by design).
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def detected_store(base: Path) -> Path:
    """``base`` analysed by the current detector (its results replace the synthetic marks), cached beside it."""
    from kat_gui.detect import DETECTOR_VERSION, detect_store

    out = base.with_name(
        base.name.replace(".kat.h5", f"-detected-{DETECTOR_VERSION.replace('/', '_')}.kat.h5")
    )
    if not out.exists():
        tmp = out.with_name(out.name + ".tmp")
        shutil.copyfile(base, tmp)
        t = time.perf_counter()
        detect_store(tmp)
        print(f"detected {base.name} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        tmp.rename(out)
    return out


def _frames(tl, frame, act, n: int) -> list[float]:
    """Seconds of ``n`` frames, each after ``act(i)``."""
    out = []
    for i in range(n):
        act(i)
        t = time.perf_counter()
        frame(tl)
        out.append(time.perf_counter() - t)
    return out


def _lanes_rows(tl, frame, label: str, change, repeats: int) -> dict:
    from PySide6 import QtCore

    t = time.perf_counter()
    change()
    frame(tl)
    first = time.perf_counter() - t
    tl.fit_all()
    frame(tl)
    pans = _frames(tl, frame, lambda i: tl.pan(0.1 if (i // 5) % 2 == 0 else -0.1), repeats)
    zooms = _frames(tl, frame, lambda i: tl.zoom(0.8 if i % 2 == 0 else 1.25), 6)
    scrolls = _frames(tl, frame, lambda _i: tl.handle_key(QtCore.Qt.Key.Key_PageDown), min(repeats, 10))
    return {
        "view": label,
        "lanes": len(tl.lanes),
        "first_ms": first * 1e3,
        "pan_ms": statistics.median(pans) * 1e3,
        "zoom_ms": statistics.median(zooms) * 1e3,
        "scroll_ms": statistics.median(scrolls) * 1e3,
        "pan_max_ms": max(pans) * 1e3,
        "rects": tl.lanes_item.rect_count(),
    }


def bench_window(store: Path, frame, repeats: int = 15) -> dict:
    """Open ``store`` in the real window and measure (see the module docstring); ``frame`` is ``render.frame``."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gui_stalls as gs

    from kat_gui.ui.app import make_app
    from kat_gui.ui.main_window import MainWindow

    app = make_app()
    win = MainWindow(interactive=False, use_llm=False)
    win.resize(1600, 1000)
    win.show()
    gs.wait_ms(200)
    out: dict = {}
    t = time.perf_counter()
    win.open_paths([store])
    gs._wait_until(lambda: win.current_view() is not None)
    view = win.current_view()
    tl, hm = view.timeline, view.heatmap
    gs._wait_until(
        lambda: not win.busy() and tl.lanes_item.rect_count() > 0 and (hm is None or hm.canvas.paint_ms > 0)
    )
    out["open_s"] = time.perf_counter() - t
    out["focus_lanes"] = len(tl.lanes)
    out["implicated"] = sorted(view.model.culprit_ranks())
    out["heat"] = []
    if hm is not None:
        c = hm.canvas
        out["heat_shape"] = c.matrix.root.shape
        for mode in c.matrix.modes():
            t = time.perf_counter()
            hm.set_mode(mode)
            c.repaint()
            switch = time.perf_counter() - t
            ms = []
            for _ in range(repeats):
                c.repaint()
                ms.append(c.paint_ms)
            out["heat"].append({"mode": mode, "switch_ms": switch * 1e3, "paint_ms": statistics.median(ms)})
    out["lanes"] = [
        _lanes_rows(tl, frame, "focus set (as opened)", lambda: None, repeats),
        _lanes_rows(tl, frame, "all ranks (hosts collapsed)", lambda: tl.set_rank_filter(None), repeats),
        _lanes_rows(
            tl, frame, "all ranks, every host expanded", lambda: tl.set_all_hosts_collapsed(False), repeats
        ),
    ]
    win.close()
    app.processEvents()
    return out


def table(
    r: dict, ranks: int, kernels: int, store: Path, rss_mb: float, loads: tuple[float, float]
) -> list[str]:
    """The results as markdown lines."""
    import platform

    lines = [
        "# Large runs in the window: open, overview heatmap, lanes",
        "",
        f"Store: {kernels:,} kernels, {ranks} ranks (hosts of 8 GPUs), analysed by `kat detect`, "
        f"{store.stat().st_size / 1e6:.0f} MB. Real `MainWindow` 1600x1000 offscreen. Implicated: "
        f"{', '.join(map(str, r['implicated'])) or 'none'}.",
        "",
        f"- **Open + first frame** (tab built, heatmap painted, the {r['focus_lanes']} focus lanes drawn): "
        f"**{r['open_s'] * 1e3:.0f} ms**.",
    ]
    if r.get("heat_shape"):
        lines.append(f"- Heatmap matrix: {r['heat_shape'][0]:,} ranks x {r['heat_shape'][1]:,} steps.")
    for h in r["heat"]:
        lines.append(
            f"- **Heatmap** ({h['mode']}): paint {h['paint_ms']:.1f} ms (median of repaints); switching to it "
            f"(colour mapping + first paint) {h['switch_ms']:.1f} ms."
        )
    lines += [
        "",
        "| lanes | count | first frame ms | pan median ms | pan max ms | zoom median ms | page-down median ms | "
        "rectangles |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for x in r["lanes"]:
        lines.append(
            f"| {x['view']} | {x['lanes']} | {x['first_ms']:.0f} | {x['pan_ms']:.1f} | {x['pan_max_ms']:.1f} | "
            f"{x['zoom_ms']:.1f} | {x['scroll_ms']:.1f} | {x['rects']:,} |"
        )
    lines += [
        "",
        f"Peak RSS of the process: **{rss_mb:.0f} MB**.",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs; 1-minute load average "
        f"{loads[0]:.2f} at the start and {loads[1]:.2f} at the end. Run on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "Bar (issue: 1,024 ranks x 10M kernels): open + first frame < 1 s, heatmap < 100 ms, pan/zoom/scroll "
        "median < 50 ms, RSS < 1.5 GB; GUI-thread stalls < 50 ms (`benchmarks/gui_stalls.py --detected`).",
        "",
    ]
    return lines
