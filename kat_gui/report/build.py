"""The postmortem report: one self-contained folder with ``report.html`` (inline CSS, inline SVG, local
image files only: nothing is fetched from anywhere) and ``report.md``, from a store (and optionally a
healthy run to compare with).

Every string that comes from a trace (kernel names, summaries, notes, paths) is untrusted: HTML output goes
through :func:`html.escape`, Markdown output through :func:`md_escape`, and both through the scrubber first.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from kat_gui import __version__
from kat_gui.annotations import Annotation, load_annotations
from kat_gui.compare.command import fmt_ns, window_line
from kat_gui.errors import KatInputError
from kat_gui.progress import Progress
from kat_gui.report.scrub import Scrubber
from kat_gui.report.timeline_svg import timeline_svg

TOP_DIFFS = 25


@dataclass
class ReportData:
    """Everything the report shows, already read from the stores (texts not yet escaped or scrubbed)."""

    run: str
    summary: dict[str, Any]
    findings: list[dict]
    explanation: str
    explanation_source: str
    comparison: Any | None
    notes: list[Annotation]
    svg_inline: str
    svg_file: str
    screenshots: list[Path] = field(default_factory=list)
    notes_text: list[str] = field(default_factory=list)


def md_escape(text: object) -> str:
    """Markdown-safe text for a table cell: HTML specials as entities, Markdown specials backslashed."""
    s = str(text).replace("\r", " ").replace("\n", " ")
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for ch in "\\`*_[]#|!":
        s = s.replace(ch, "\\" + ch)
    return s


def _run_summary(store, scrub: Scrubber) -> dict[str, Any]:
    t0, t1 = store.time_span()
    gpus: dict[str, int] = {}
    devices = set()
    for t in store.tracks:
        if t.kind == 0:
            devices.add((t.rank, t.device))
    for r in store.ranks:
        meta = r.get("meta") or {}
        props = meta.get("deviceProperties") or []
        for p in props:
            if isinstance(p, dict) and p.get("name"):
                gpus[str(p["name"])] = gpus.get(str(p["name"]), 0)
    names = sorted(gpus) or ["unknown GPU model"]
    return {
        "run": store.name,
        "ranks": sorted({int(r.get("rank", -1)) for r in store.ranks}),
        "gpus": len(devices),
        "gpu_models": names,
        "start_ns": int(t0),
        "end_ns": int(t1),
        "span_ns": int(t1 - t0),
        "events": store.counts_by_kind(),
        "sources": [Path(str(r.get("source", ""))).name for r in store.ranks],
        "formats": sorted({str(r.get("format", "")) for r in store.ranks}),
    }


def _explanation(store_path: Path, findings: list[dict]) -> tuple[str, str]:
    try:
        from kat_gui.explain import explain_store
    except ImportError:
        explain_store = None
    if explain_store is not None:
        try:
            ex = explain_store(store_path, use_llm=False)
            return ex.text, ex.source_line
        except Exception as e:  # an explanation failure must not cost the whole report
            reason = f"explanation unavailable ({type(e).__name__}); findings' own summaries shown"
    else:
        reason = "explanation module not installed; findings' own summaries shown"
    if not findings:
        return "No anomaly was found in this run.", reason
    return " ".join(str(f.get("summary", "")) for f in findings[:5]), reason


def collect(
    store_path: Path,
    compare_with: Path | None,
    scrub: Scrubber,
    screenshots: list[Path],
    progress: Progress | None = None,
) -> ReportData:
    """Read what the report shows; runs detection first when the store has no results yet."""
    from kat_gui.store import TraceStore

    with TraceStore.open(store_path) as st:
        has_results = st.get_json("detect/findings") is not None
    if not has_results:
        if progress:
            progress(0.05, "detecting (no results in the store yet)")
        from kat_gui.detect import detect_store

        detect_store(store_path)
    comparison = None
    if compare_with is not None:
        if progress:
            progress(0.3, "comparing with the other run")
        from kat_gui.compare import compare_stores

        comparison = compare_stores(compare_with, store_path)
    if progress:
        progress(0.6, "explaining")
    with TraceStore.open(store_path) as st:
        scrub.learn_rank_meta(st.ranks)
        findings = (st.get_json("detect/findings") or {}).get("findings", [])
        topo = st.get_json("topology")
        if isinstance(topo, dict):
            for n in topo.get("nodes", []):
                if isinstance(n, dict) and n.get("kind") == "host":
                    scrub.add_host(str(n.get("label") or n.get("id") or ""))
        if scrub.enabled:  # after the trace's own hosts, so they get the first pseudonyms
            scrub.learn_environment()
        summary = _run_summary(st, scrub)
        notes = load_annotations(st)
        anomalies = st.get_table("detect/anomalies")
        if progress:
            progress(0.7, "drawing the timeline overview")
        svg_inline = timeline_svg(st, anomalies, findings, notes, scrub, standalone=False)
        svg_file = timeline_svg(st, anomalies, findings, notes, scrub, standalone=True)
    if comparison is not None:
        scrub.learn_paths([comparison.healthy.path, comparison.degraded.path])
    text, source = _explanation(store_path, findings)
    return ReportData(
        run=summary["run"],
        summary=summary,
        findings=findings,
        explanation=text,
        explanation_source=source,
        comparison=comparison,
        notes=notes,
        svg_inline=svg_inline,
        svg_file=svg_file,
        screenshots=screenshots,
    )


# -------------------------------------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1100px;color:#1d1d1d;
line-height:1.45;padding:0 16px}
h1{font-size:1.6em;margin-bottom:0}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:2em}
.sub{color:#666;margin-top:4px}
table{border-collapse:collapse;width:100%;font-size:0.9em;margin:8px 0}
th,td{border:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
td.name{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:0.85em;word-break:break-all}
tr.insig td{color:#9a9a9a}tr.sig.up td.eff{color:#b00020;font-weight:600}tr.sig.down td.eff{color:#1b7f3b;font-weight:600}
.kv td:first-child{width:12em;color:#555}
.expl{background:#f7f9fc;border-left:4px solid #4a78c2;padding:8px 12px;white-space:pre-wrap}
.src{color:#666;font-size:0.85em}
.legend span{display:inline-block;margin-right:14px;font-size:0.85em}
.sw{display:inline-block;width:12px;height:12px;vertical-align:middle;margin-right:4px}
figure{margin:8px 0}figcaption{color:#666;font-size:0.85em}
img.shot{max-width:100%;border:1px solid #ccc}
.svgwrap{border:1px solid #eee}
"""


def _diff_rows(comparison, top: int) -> list:
    rows = [d for d in comparison.differences if d.kind not in ("step_time",)]
    return rows[:top]


def _effect_text(d) -> str:
    if d.kind == "only_degraded":
        return "new"
    if d.kind == "only_healthy":
        return "gone"
    e = d.effect
    if e != e or abs(e) == float("inf"):
        return "new"
    return f"{e * 100:+.1f}%"


def render_html(data: ReportData, scrub: Scrubber) -> str:
    def h(x: object) -> str:
        return escape(scrub(x), quote=True)

    s = data.summary
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # Nothing may be fetched: no scripts at all, images only from this folder or inline.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src 'self' data:; style-src 'unsafe-inline'\">",
        f"<title>KAT report: {h(data.run)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Postmortem report: {h(data.run)}</h1>",
        f'<p class="sub">Written by KAT {h(__version__)}; host and user names '
        f"{'removed' if scrub.enabled else 'kept (scrubbing off)'}.</p>",
        "<h2>Run</h2>",
        '<table class="kv">',
        f"<tr><td>ranks</td><td>{len(s['ranks'])} ({h(_ranges(s['ranks']))})</td></tr>",
        f"<tr><td>GPUs</td><td>{s['gpus']} × {h(', '.join(s['gpu_models']))}</td></tr>",
        f"<tr><td>span</td><td>{h(fmt_ns(s['span_ns']))} (from {s['start_ns']} ns)</td></tr>",
        "<tr><td>events</td><td>"
        + h(", ".join(f"{k} {v:,}" for k, v in s["events"].items() if v))
        + "</td></tr>",
        f"<tr><td>trace format</td><td>{h(', '.join(s['formats']))}</td></tr>",
        "</table>",
        "<h2>Timeline overview</h2>",
        '<p class="legend"><span><i class="sw" style="background:#08519c"></i>GPU busy</span>'
        '<span><i class="sw" style="background:#c6dbef"></i>mostly idle</span>'
        '<span><i class="sw" style="background:#d62728"></i>anomalous kernel (root)</span>'
        '<span><i class="sw" style="background:#ff9f40"></i>symptom (waited on a root)</span>'
        '<span><i class="sw" style="background:#fde2e2"></i>finding window</span>'
        '<span><i class="sw" style="background:#f0b400"></i>annotation (numbered below)</span></p>',
        f'<div class="svgwrap">{data.svg_inline}</div>',
    ]
    parts.append("<h2>Findings</h2>")
    if not data.findings:
        parts.append("<p>No anomaly found: the ranks behave alike and steady.</p>")
    else:
        parts.append(
            "<table><tr><th>#</th><th>component</th><th>where</th><th>ranks</th><th>confidence</th>"
            "<th>window</th><th>summary</th></tr>"
        )
        t0 = s["start_ns"]
        for i, f in enumerate(data.findings, 1):
            win = "-"
            if f.get("end_ns"):
                win = f"{fmt_ns(f['start_ns'] - t0)} – {fmt_ns(f['end_ns'] - t0)}"
            parts.append(
                f"<tr><td class='num'>{i}</td><td>{h(f.get('component'))}</td><td>{h(f.get('component_id'))}</td>"
                f"<td>{h(_ranges(f.get('ranks', [])))}</td><td class='num'>{float(f.get('confidence', 0)):.2f}</td>"
                f"<td class='num'>{h(win)}</td><td>{h(f.get('summary'))}</td></tr>"
            )
        parts.append("</table>")
    parts += [
        "<h2>Explanation</h2>",
        f'<div class="expl">{h(data.explanation)}</div>',
        f'<p class="src">{h(data.explanation_source)}</p>',
    ]
    if data.comparison is not None:
        parts += _html_comparison(data.comparison, h, scrub)
    parts.append("<h2>Annotations</h2>")
    if not data.notes:
        parts.append("<p>No annotation.</p>")
    else:
        parts.append("<table><tr><th>#</th><th>pinned to</th><th>note</th></tr>")
        for i, a in enumerate(data.notes, 1):
            parts.append(
                f"<tr><td class='num'>{i}</td><td>{h(_where(a, s['start_ns']))}</td><td>{h(a.text)}</td></tr>"
            )
        parts.append("</table>")
    if data.screenshots:
        parts.append("<h2>Screenshots</h2>")
        for p in data.screenshots:
            parts.append(
                f'<figure><img class="shot" src="screenshots/{h(p.name)}" alt="{h(p.stem)}">'
                f"<figcaption>{h(p.stem)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


def short_name(name: str, width: int = 90) -> str:
    """A kernel name a table can hold: the full name stays in the cell's tooltip."""
    return name if len(name) <= width else name[: width - 1] + "…"


def _html_comparison(c, h, scrub_text) -> list[str]:
    out = [
        "<h2>Comparison with a healthy run</h2>",
        f"<p>Healthy run <b>{h(c.healthy.name)}</b> ({len(c.healthy.ranks)} ranks, {c.healthy.steps} steps) "
        f"vs this run ({len(c.degraded.ranks)} ranks, {c.degraded.steps} steps); healthy step "
        f"{c.alignment['anchor_healthy_step']} aligned with step {c.alignment['anchor_degraded_step']}, "
        f"{c.alignment['steps_compared']} steps compared.</p>",
    ]
    if len(c.step_time_healthy_ns) and len(c.step_time_degraded_ns):
        out.append(
            f"<p>Step time p50 {h(fmt_ns(float(np.median(c.step_time_healthy_ns))))} → "
            f"{h(fmt_ns(float(np.median(c.step_time_degraded_ns))))}; "
            f"p99 {h(fmt_ns(float(np.percentile(c.step_time_healthy_ns, 99))))} → "
            f"{h(fmt_ns(float(np.percentile(c.step_time_degraded_ns, 99))))}.</p>"
        )
    n_sig = len(c.significant())
    out.append(
        f"<p>{n_sig} significant difference(s) (false discovery rate {c.params.alpha:g}, effect at least "
        f"{c.params.min_effect * 100:g}%); grey rows are within noise.</p>"
    )
    rows = _diff_rows(c, TOP_DIFFS)
    located = [d for d in rows if d.window is not None]
    if located:  # rows whose change is located in time: a steps column, and where the first window lies
        out.append(f"<p>{h(window_line(c, located))}.</p>")
    out.append(
        "<table><tr><th>change</th><th>what</th><th>rank</th>"
        + ("<th>steps</th>" if located else "")
        + "<th>p50 healthy</th><th>p50 degraded</th>"
        "<th>mean healthy</th><th>mean degraded</th><th>q</th><th>note</th></tr>"
    )
    for d in rows:
        cls = ("sig " + ("up" if d.effect > 0 else "down")) if d.significant else "insig"
        what = d.name if d.name and d.kind not in ("class", "class_rank") else d.label
        out.append(
            f"<tr class='{cls}'><td class='num eff'>{h(_effect_text(d))}</td>"
            f"<td class='name' title='{h(what)}'>{h(short_name(scrub_text(what)))}</td>"
            f"<td class='num'>{'all' if d.rank is None else d.rank}</td>"
            + (f"<td class='num'>{h(_steps_text(d))}</td>" if located else "")
            + f"<td class='num'>{h(fmt_ns(d.p50_healthy_ns))}</td><td class='num'>{h(fmt_ns(d.p50_degraded_ns))}</td>"
            f"<td class='num'>{h(fmt_ns(d.mean_healthy_ns))}</td><td class='num'>{h(fmt_ns(d.mean_degraded_ns))}</td>"
            f"<td class='num'>{d.q_value:.0e}</td><td>{h(d.note)}</td></tr>"
        )
    out.append("</table>")
    return out


def _steps_text(d) -> str:
    """The steps a comparison row's numbers cover: its window (``steps 16-39``), else the whole run."""
    if d.window is None:
        return "all"
    a, b = d.window["steps"]
    return f"steps {a}-{b}"


def _ranges(ranks: list[int]) -> str:
    rs = sorted(int(r) for r in ranks)
    if not rs:
        return "-"
    out, a, b = [], rs[0], rs[0]
    for r in rs[1:] + [None]:
        if r is not None and r == b + 1:
            b = r
            continue
        out.append(f"{a}" if a == b else f"{a}-{b}")
        if r is not None:
            a = b = r
    return ", ".join(out)


def _where(a: Annotation, t0: int) -> str:
    if a.target == "kernel":
        return f"kernel: track {a.track}, event {a.index}" + (
            f" at {fmt_ns(a.start_ns - t0)}" if a.start_ns is not None else ""
        )
    if a.target == "rank":
        return f"rank {a.rank}"
    if a.target == "component":
        return f"component {a.component}"
    end = f" – {fmt_ns(a.end_ns - t0)}" if a.end_ns is not None and a.end_ns != a.start_ns else ""
    rank = f" on rank {a.rank}" if a.rank is not None else ""
    return f"time {fmt_ns((a.start_ns or t0) - t0)}{end}{rank}"


# -------------------------------------------------------------------------------------------- Markdown


def render_md(data: ReportData, scrub: Scrubber) -> str:
    def m(x: object) -> str:
        return md_escape(scrub(x))

    s = data.summary
    lines = [
        f"# Postmortem report: {m(data.run)}",
        "",
        f"{len(s['ranks'])} ranks, {s['gpus']} GPUs ({m(', '.join(s['gpu_models']))}), span {m(fmt_ns(s['span_ns']))}.",
        "",
        "![Timeline overview](timeline.svg)",
        "",
        "## Findings",
        "",
    ]
    if not data.findings:
        lines.append("No anomaly found.")
    else:
        lines += ["| # | component | where | ranks | confidence | summary |", "|---|---|---|---|---|---|"]
        for i, f in enumerate(data.findings, 1):
            lines.append(
                f"| {i} | {m(f.get('component'))} | {m(f.get('component_id'))} | {m(_ranges(f.get('ranks', [])))} "
                f"| {float(f.get('confidence', 0)):.2f} | {m(f.get('summary'))} |"
            )
    lines += ["", "## Explanation", "", m(data.explanation), "", f"_{m(data.explanation_source)}_", ""]
    c = data.comparison
    if c is not None:
        rows = _diff_rows(c, TOP_DIFFS)
        located = [d for d in rows if d.window is not None]
        lines += [
            "## Comparison with a healthy run",
            "",
            f"Healthy run {m(c.healthy.name)}; {c.alignment['steps_compared']} steps compared; "
            f"{len(c.significant())} significant difference(s). Rows marked `~` are within noise.",
            "",
        ]
        if located:
            lines += [m(window_line(c, located)) + ".", ""]
        steps_col = " steps |" if located else ""
        lines += [
            f"| | change | what | rank |{steps_col} p50 healthy | p50 degraded | q |",
            "|---|---|---|---|" + ("---|" if located else "") + "---|---|---|",
        ]
        for d in rows:
            what = d.name if d.name and d.kind not in ("class", "class_rank") else d.label
            steps = f" {m(_steps_text(d))} |" if located else ""
            lines.append(
                f"| {'**!**' if d.significant else '~'} | {m(_effect_text(d))} | {m(what)} | "
                f"{'all' if d.rank is None else d.rank} |{steps} {m(fmt_ns(d.p50_healthy_ns))} | "
                f"{m(fmt_ns(d.p50_degraded_ns))} | {d.q_value:.0e} |"
            )
        lines.append("")
    lines += ["## Annotations", ""]
    if not data.notes:
        lines.append("No annotation.")
    for i, a in enumerate(data.notes, 1):
        lines.append(f"{i}. {m(_where(a, s['start_ns']))}: {m(a.text)}")
    if data.screenshots:
        lines += ["", "## Screenshots", ""]
        for p in data.screenshots:
            lines.append(f"![{m(p.stem)}](screenshots/{p.name})")
    lines.append("")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- entry point


def write_report(
    store_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    compare_with: str | os.PathLike | None = None,
    scrub: bool = True,
    screenshots: list[str | os.PathLike] | None = None,
    progress: Progress | None = None,
) -> Path:
    """Write ``report.html``, ``report.md``, ``timeline.svg`` (and ``screenshots/*.png``) into ``out_dir``;
    return the HTML path. ``compare_with`` is the healthy run this one is compared with. ``scrub`` removes
    host and user names. ``screenshots`` are PNG files (the GUI's captures), copied into the folder.

    Raises KatInputError for a missing or non-store input, a screenshot that is not a PNG, or an output
    path that is a file.
    """
    store_path = Path(store_path)
    if not store_path.exists():
        raise KatInputError(store_path, "no such file")
    if compare_with is not None and not Path(compare_with).exists():
        raise KatInputError(compare_with, "no such file")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise KatInputError(out, "exists and is not a folder")
    shots: list[Path] = []
    for p in screenshots or []:
        p = Path(p)
        try:
            head = p.read_bytes()[:8]
        except OSError as e:
            raise KatInputError(p, f"cannot read the screenshot ({e.strerror})") from None
        if head != b"\x89PNG\r\n\x1a\n":
            raise KatInputError(p, "not a PNG image")
        shots.append(p)
    sc = Scrubber(enabled=scrub)
    data = collect(store_path, Path(compare_with) if compare_with else None, sc, shots, progress)
    out.mkdir(parents=True, exist_ok=True)
    if shots:
        (out / "screenshots").mkdir(exist_ok=True)
        names = []
        for i, p in enumerate(shots, 1):
            # Files are renamed: a screenshot's own name may carry a user or host name.
            dst = out / "screenshots" / f"screenshot-{i}.png"
            shutil.copyfile(p, dst)
            names.append(dst)
        data.screenshots = names
    _write(out / "timeline.svg", data.svg_file)
    _write(out / "report.md", render_md(data, sc))
    html_path = out / "report.html"
    _write(html_path, render_html(data, sc))
    if data.comparison is not None:
        _write(out / "comparison.json", sc(json.dumps(data.comparison.to_json(), indent=1)))
    if progress:
        progress(1.0, "done")
    return html_path


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    # a lone surrogate (a damaged trace's or note's text) is written as an escape, not a crash
    tmp.write_text(text, encoding="utf-8", errors="backslashreplace")
    os.replace(tmp, path)
