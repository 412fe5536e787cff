"""The `kat` command as a user meets it: real traces in, a store out; bad input -> exit 2, one line, no file."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kat_gui.cli import main


def run_kat(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kat_gui", *args], capture_output=True, text=True, timeout=300
    )


def test_ingest_and_info_dlrm(tmp_path, dlrm_dir):
    out = tmp_path / "dlrm.kat.h5"
    res = run_kat("ingest", str(dlrm_dir), "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert out.is_file()
    assert "Traceback" not in res.stderr
    res = run_kat("info", str(out), "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert [r["rank"] for r in info["ranks"]] == list(range(8))
    assert info["counts"]["kernel"] == 245 + 310 + 246 + 315 + 251 + 245 + 246 + 246
    assert info["counts"]["memcpy"] == 16 * 8
    assert info["end_ns"] > info["start_ns"] > 1_600_000_000 * 10**9  # absolute epoch ns (2023)
    assert not list(tmp_path.glob("*.tmp*"))


def test_info_per_rank_kinds_and_kernel_time_by_class(tmp_path, dlrm_dir, capsys):
    """`kat info` shows what is inside: per rank, events by kind and GPU time per kernel class (stable keys:
    every kind, every class), the run's total per class; every older key is still there."""
    from kat_gui.detect.classify import CLASS_NAMES
    from kat_gui.events import EventKind

    out = tmp_path / "dlrm.kat.h5"
    assert main(["ingest", str(dlrm_dir), "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {
        "schema",
        "run",
        "path",
        "ranks",
        "counts",
        "start_ns",
        "end_ns",
        "duration_ns",
        "tracks",
    } <= info.keys()
    assert list(info["kernel_time_by_class"]) == list(CLASS_NAMES)
    kinds = [k.name.lower() for k in EventKind]
    for r in info["ranks"]:
        assert {"rank", "devices", "streams", "host_threads", "events", "source", "format"} <= r.keys()
        assert list(r["counts"]) == kinds and sum(r["counts"].values()) == r["events"]
        assert list(r["kernel_time_by_class"]) == list(CLASS_NAMES)
    assert [r["counts"]["kernel"] for r in info["ranks"]] == [245, 310, 246, 315, 251, 245, 246, 246]
    for c in CLASS_NAMES:
        assert info["kernel_time_by_class"][c] == sum(r["kernel_time_by_class"][c] for r in info["ranks"])
    run = info["kernel_time_by_class"]
    assert run["collective"] > 0 and run["compute"] > 0 and run["copy_host"] > 0
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "GPU time by kernel class: " in text and "collective " in text
    assert "rank  events by kind | GPU time by kernel class" in text


def test_info_text_summary(tmp_path, dlrm_dir, capsys):
    out = tmp_path / "r.kat.h5"
    assert (
        main(["ingest", str(dlrm_dir / "worker3_step_12.1694128201557.pt.trace.json.gz"), "-o", str(out)])
        == 0
    )
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1 ranks" in text and "kernel 315" in text


def _bad_inputs(tmp_path: Path, dlrm_dir: Path) -> dict[str, list[str]]:
    good = dlrm_dir / "worker0_step_12.1694128201545.pt.trace.json.gz"
    raw = gzip.decompress(good.read_bytes())
    cases: dict[str, list[str]] = {}

    p = tmp_path / "truncated.json.gz"
    p.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    cases["truncated gzip"] = [str(p)]

    p = tmp_path / "invalid.json"
    p.write_bytes(raw[: len(raw) // 2])
    cases["invalid json"] = [str(p)]

    p = tmp_path / "not_a_trace.json"
    p.write_text(json.dumps({"hello": "world", "items": [1, 2, 3]}))
    cases["json that is not a trace"] = [str(p)]

    p = tmp_path / "empty_trace.json"
    p.write_text(json.dumps({"schemaVersion": 1, "traceEvents": []}))
    cases["empty trace"] = [str(p)]

    p = tmp_path / "empty.json"
    p.write_bytes(b"")
    cases["empty file"] = [str(p)]

    p = tmp_path / "broken.sqlite"
    p.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    cases["unreadable sqlite"] = [str(p)]

    d = tmp_path / "no_traces"
    d.mkdir()
    (d / "notes.txt").write_text("nothing here")
    cases["directory with no traces"] = [str(d)]

    d = tmp_path / "collide"
    d.mkdir()
    shutil.copy(good, d / "a.json.gz")
    shutil.copy(good, d / "b.json.gz")  # both say distributedInfo.rank 0
    cases["ranks that collide"] = [str(d)]

    cases["missing file"] = [str(tmp_path / "does_not_exist.json")]
    return cases


@pytest.mark.parametrize(
    "case",
    [
        "truncated gzip",
        "invalid json",
        "json that is not a trace",
        "empty trace",
        "empty file",
        "unreadable sqlite",
        "directory with no traces",
        "ranks that collide",
        "missing file",
    ],
)
def test_bad_input_exit_2_one_line_no_output(tmp_path, dlrm_dir, case):
    inputs = _bad_inputs(tmp_path, dlrm_dir)[case]
    out = tmp_path / "out" / "run.kat.h5"
    out.parent.mkdir()
    res = run_kat("ingest", *inputs, "-o", str(out))
    assert res.returncode == 2, (case, res.returncode, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert lines[0].startswith("kat: error: ")
    named = [Path(i).name for i in inputs]
    assert any(n in lines[0] for n in named), lines[0]
    assert list(out.parent.iterdir()) == [], "a failed ingest must leave nothing behind"


def test_failed_ingest_keeps_existing_store(tmp_path, dlrm_dir):
    out = tmp_path / "run.kat.h5"
    assert (
        main(["ingest", str(dlrm_dir / "worker1_step_12.1694128201556.pt.trace.json.gz"), "-o", str(out)])
        == 0
    )
    before = out.read_bytes()
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["ingest", str(bad), "-o", str(out)]) == 2
    assert out.read_bytes() == before


def test_info_on_non_store(tmp_path):
    p = tmp_path / "x.kat.h5"
    p.write_text("not hdf5")
    res = run_kat("info", str(p))
    assert res.returncode == 2 and "x.kat.h5" in res.stderr and "Traceback" not in res.stderr


def test_simulate_list_and_run(tmp_path):
    res = run_kat("simulate", "--list")
    assert res.returncode == 0 and res.stdout.strip()
    name = res.stdout.split()[0]
    res = run_kat("simulate", str(tmp_path / "sim"), "--scenario", name, "--seed", "3")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "sim" / "truth.json").is_file()
    res = run_kat("simulate", str(tmp_path / "sim2"), "--scenario", "no-such-scenario")
    assert res.returncode == 2
