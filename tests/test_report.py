"""Postmortem report: a self-contained folder (no external reference), every trace string escaped (a hostile
kernel name stays text), host and user names scrubbed, comparison and annotations included, and the HTML
rendered by headless Chromium when it is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_compare import write_functrace_run

from kat_gui import cli
from kat_gui.annotations import AnnotationModel
from kat_gui.errors import KatInputError
from kat_gui.ingest import IngestOptions
from kat_gui.ingest.functrace import read
from kat_gui.report import Scrubber, md_escape, write_report
from kat_gui.store import TraceStore

HOSTILE = "<script>alert(1)</script>"
HOST = "gpu-node-17.corp.example"
USER = "alice"
SVG_NS = "http://www.w3.org/2000/svg"  # a namespace name in the standalone .svg: an identifier, never fetched


def _store(folder: Path, name: str, **kw) -> Path:
    """A store whose rank metadata names a host and whose sources sit in a user's home folder."""
    src = folder / "home" / USER / "traces" / name
    files = write_functrace_run(src, **kw)
    out = folder / f"{name}.kat.h5"
    with TraceStore.create(out, name) as w:
        for p in files:
            rt = read(p, IngestOptions())
            rt.meta["hostname"] = HOST
            w.add(rt)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    healthy = _store(tmp, "healthy", seed=0, extra_kernel=HOSTILE)
    degraded = _store(
        tmp, "degraded", seed=1, slow_rank=2, slow_factor=1.4, slow_from_step=10, extra_kernel=HOSTILE
    )
    notes = AnnotationModel(degraded)
    with TraceStore.open(degraded) as st:
        t0, _ = st.time_span()
    notes.add(
        f'rank 2 slows here {HOSTILE} on {HOST} "quoted"', start_ns=t0 + 5_000_000, end_ns=t0 + 6_000_000
    )
    notes.add("look at this GPU", "component", component="GPU2")
    return {"healthy": healthy, "degraded": degraded, "tmp": tmp}


@pytest.fixture(scope="module")
def report(runs):
    out = runs["tmp"] / "out"
    png = runs["tmp"] / f"{USER}-shot.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    write_report(runs["degraded"], out, compare_with=runs["healthy"], screenshots=[png])
    return out


def _external_refs(text: str) -> list[str]:
    text = text.replace(SVG_NS, "")
    bad = re.findall(r"(?:https?:|ftp:|file:|//[\w.-]+)", text)
    for m in re.finditer(r"""(?:src|href|xlink:href)\s*=\s*["']?([^"'\s>]+)""", text):
        ref = m.group(1)
        if ref.startswith(("/", "\\")) or ":" in ref or ".." in ref:
            bad.append(ref)
    bad += re.findall(r"url\(", text)
    bad += re.findall(r"@import|<link\b|<script\b|<iframe\b|<object\b|<embed\b", text, re.IGNORECASE)
    return bad


def test_folder_is_self_contained(report):
    files = sorted(p.relative_to(report).as_posix() for p in report.rglob("*") if p.is_file())
    assert files == [
        "comparison.json",
        "report.html",
        "report.md",
        "screenshots/screenshot-1.png",
        "timeline.svg",
    ]
    for name in ("report.html", "report.md", "timeline.svg"):
        text = (report / name).read_text(encoding="utf-8")
        assert _external_refs(text) == [], name
    html = (report / "report.html").read_text(encoding="utf-8")
    for ref in re.findall(r'src="([^"]+)"', html):
        assert (report / ref).is_file(), ref


def test_hostile_names_are_escaped(report):
    html = (report / "report.html").read_text(encoding="utf-8")
    assert HOSTILE not in html and "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    md = (report / "report.md").read_text(encoding="utf-8")
    assert HOSTILE not in md and "<script" not in md.lower()
    svg = (report / "timeline.svg").read_text(encoding="utf-8")
    assert "<script" not in svg.lower()


def test_host_and_user_names_scrubbed(report, runs):
    for p in report.rglob("*"):
        if p.suffix in (".html", ".md", ".svg", ".json"):
            text = p.read_text(encoding="utf-8")
            assert HOST not in text and "gpu-node-17" not in text, p.name
            assert f"/{USER}/" not in text and f"{USER}-shot" not in text, p.name
    html = (report / "report.html").read_text(encoding="utf-8")
    assert "host-1" in html, "the note's host name is replaced by its pseudonym"
    kept = runs["tmp"] / "kept"
    write_report(runs["degraded"], kept, scrub=False)
    assert HOST in (kept / "report.html").read_text(encoding="utf-8")


def test_contents(report):
    html = (report / "report.html").read_text(encoding="utf-8")
    for part in (
        "Run",
        "Timeline overview",
        "Findings",
        "Explanation",
        "Comparison with a healthy run",
        "Annotations",
        "Screenshots",
    ):
        assert f"<h2>{part}</h2>" in html, part
    # The comparison's top row is the slowed GEMM on rank 2, marked significant.
    row = re.search(r"<tr class='sig up'>(.*?)</tr>", html, re.S)
    assert row and "gemm_bf16_tn_128x128" in row.group(1) and ">2</td>" in row.group(1)
    assert "look at this GPU" in html and "component GPU2" in html
    md = (report / "report.md").read_text(encoding="utf-8")
    assert "| **!** |" in md and "gemm\\_bf16\\_tn\\_128x128" in md


def test_md_escape_and_scrubber_units():
    assert md_escape("a|b <i>*x*</i>\nnext") == "a\\|b &lt;i&gt;\\*x\\*&lt;/i&gt; next"
    s = Scrubber()
    s.add_host("node7.cluster.local")
    s.learn_paths(["/home/bob/traces/rank0.json", "C:\\Users\\carol\\x.json"])
    assert s("ran on node7 and node7.cluster.local by bob, carol") == "ran on host-1 and host-1 by user, user"
    assert s("node70 bobby") == "node70 bobby", "whole names only"
    assert Scrubber(enabled=False)("node7") == "node7"


def test_bad_inputs(tmp_path, runs, capsys):
    with pytest.raises(KatInputError, match="PNG"):
        (tmp_path / "x.png").write_text("not a png")
        write_report(runs["degraded"], tmp_path / "o", screenshots=[tmp_path / "x.png"])
    f = tmp_path / "file"
    f.write_text("")
    assert cli.main(["report", str(runs["degraded"]), "-o", str(f)]) == 2
    assert cli.main(["report", str(tmp_path / "missing.kat.h5"), "-o", str(tmp_path / "o")]) == 2
    capsys.readouterr()


def test_cli_report(runs, tmp_path, capsys):
    assert cli.main(["report", str(runs["healthy"]), "-o", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.html").is_file() and "wrote" in capsys.readouterr().out


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


@pytest.mark.slow
def test_renders_in_headless_chromium(report, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium installed (apt-get install chromium) to render the report")
    shot = tmp_path / "report.png"
    dom = subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", (report / "report.html").as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Postmortem report" in dom.stdout and "<script>alert" not in dom.stdout
    r = subprocess.run(
        [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            "--window-size=1200,1600",
            (report / "report.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    assert r.returncode == 0 and shot.stat().st_size > 10_000
