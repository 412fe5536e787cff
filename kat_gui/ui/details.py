"""Details of the selected event: every column and arg, its anomaly roles, and the same kernel on the other
ranks side by side with duration deltas (grey when within ±5%, red when slower, blue when faster).

The event and its peers are read on the run's store thread (one window query per rank for the peers); the
panel says so meanwhile and shows the text when it arrives, if that event is still the selected one."""

from __future__ import annotations

from typing import Any

from PySide6 import QtWidgets

from kat_gui.ui.async_reads import Deliver
from kat_gui.ui.run_model import ROLE_ROOT, RunModel, esc, fmt_ns

SKIP = {"name", "args", "name_id", "args_id", "track", "index", "kind"}
MAX_ARG_CHARS = 400


def _val(v: Any) -> str:
    text = str(v)
    return text if len(text) <= MAX_ARG_CHARS else text[:MAX_ARG_CHARS] + "…"


def delta_color(rel: float) -> str:
    """Colour of a relative duration difference: insignificant grey, slower red, faster blue."""
    if abs(rel) < 0.05:
        return "#888888"
    return "#C62828" if rel > 0 else "#1565C0"


class DetailsPanel(QtWidgets.QTextBrowser):
    """Rich text built from escaped trace strings only (trace content is untrusted)."""

    def __init__(self, model: RunModel, parent=None):
        super().__init__(parent)
        self.run = model
        self.setOpenLinks(False)
        self.current: tuple[int, int] | None = None
        self.shown: tuple[int, int] | None = None  # the event whose details are on screen
        self._deliver = Deliver(self)
        self.setHtml(
            "<p style='color:#777'>Click a kernel on the timeline (or a row of the anomaly table) to see "
            "its details and the same kernel on the other ranks.</p>"
        )

    def show_event(self, track: int, index: int) -> None:
        """Show this event's details once they are read (on the store thread)."""
        key = (int(track), int(index))
        self.current = key
        self.setHtml("<p style='color:#777'>reading the kernel and its peers…</p>")

        def arrived(fut) -> None:
            if self.current != key:
                return
            if fut.exception() is not None:
                self.setHtml(f"<p style='color:#C62828'>cannot read this event: {esc(fut.exception())}</p>")
                return
            self.setHtml(fut.result())
            self.shown = key

        if self._deliver.submit(self.run, lambda: self.html_for(*key), arrived) is None:
            self.setHtml("<p style='color:#777'>the run is closed</p>")

    def html_for(self, track: int, index: int) -> str:
        """The details of one event as rich text (reads the store: call it on the store thread)."""
        m = self.run
        ev = m.event(track, index)
        name = m.event_name(ev)
        dur = int(ev["end_ns"]) - int(ev["start_ns"])
        parts = [
            f"<h3 style='margin:2px'>{esc(name)}</h3>",
            f"<p>{esc(m.track_text(track))} · {esc(ev.get('kind_name', ''))} · duration <b>{fmt_ns(dur)}</b>"
            f" · starts {fmt_ns(int(ev['start_ns']) - m.t0_ns)} after run start</p>",
        ]
        rows = m.anomalies_of(track, index)
        a = m.anomalies
        for r in rows:
            role = int(a["role"][r])
            color = "#C62828" if role == ROLE_ROOT else "#B26A00"
            what = (
                "ROOT anomaly (this kernel itself is abnormal)"
                if role == ROLE_ROOT
                else "symptom (abnormal because it waited on a root elsewhere)"
            )
            f = int(a["finding"][r])
            summ = ""
            if 0 <= f < len(m.findings):
                summ = f" — finding #{f + 1}: {esc(m.findings[f].get('summary', ''))}"
            parts.append(
                f"<p style='color:{color}'><b>{what}</b> · component "
                f"{esc(m.component_name(int(a['component'][r])))} · score {float(a['score'][r]):.2f}"
                f"{summ}</p>"
            )
        peers = m.same_kernel_on_peers(track, index)
        if len(peers) > 1:
            how = (
                "the same collective instance"
                if peers[0].get("matched") == "collective instance"
                else "the same-named kernel starting nearest"
            )
            parts.append(
                f"<p><b>Same kernel on the other ranks</b> ({how}; delta = duration minus this one's)</p><table cellspacing=0 cellpadding=2 border=1 "
                "style='border-collapse:collapse'><tr><th>rank</th><th>duration</th><th>delta</th>"
                "<th>start offset</th><th>anomaly</th></tr>"
            )
            for p in peers:
                rel = p["delta_ns"] / dur if dur else 0.0
                color = delta_color(rel)
                marks = []
                for r in m.anomalies_of(p["track"], p["index"]):
                    marks.append("root" if int(a["role"][r]) == ROLE_ROOT else "symptom")
                me = " (this)" if p["self"] else ""
                delta = "" if p["self"] else f"{fmt_ns(p['delta_ns'])} ({rel:+.0%})"
                parts.append(
                    f"<tr><td>{p['rank']}{me}</td><td>{fmt_ns(p['dur_ns'])}</td>"
                    f"<td style='color:{color}'>{delta}"
                    f"</td><td>{fmt_ns(p['start_ns'] - int(ev['start_ns']))}</td>"
                    f"<td>{', '.join(marks)}</td></tr>"
                )
            parts.append("</table>")
        parts.append("<p><b>Columns</b></p><table cellspacing=0 cellpadding=2>")
        for k, v in ev.items():
            if k in SKIP or v in (-1, "", None):
                continue
            parts.append(f"<tr><td style='color:#555'>{esc(k)}</td><td>{esc(_val(v))}</td></tr>")
        parts.append("</table>")
        args = ev.get("args") or {}
        if args:
            parts.append("<p><b>Args</b></p><table cellspacing=0 cellpadding=2>")
            for k, v in args.items():
                parts.append(f"<tr><td style='color:#555'>{esc(k)}</td><td>{esc(_val(v))}</td></tr>")
            parts.append("</table>")
        return "".join(parts)
