"""Format sniffing by content, directory expansion, rank resolution and rank collisions."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from kat_gui.errors import KatInputError
from kat_gui.ingest import (
    IngestOptions,
    expand_paths,
    plan,
    rank_from_filename,
    read_traces,
    sniff_format,
)


@pytest.fixture()
def dlrm_files(dlrm_dir: Path) -> list[Path]:
    return sorted(dlrm_dir.glob("*.json.gz"))


def _strip_rank(src: Path, dst: Path) -> Path:
    """A copy of a Kineto file without distributedInfo, so only the file name can tell its rank."""
    text = gzip.decompress(src.read_bytes()).replace(b'"distributedInfo"', b'"distributedInfoRemoved"')
    dst.write_bytes(gzip.compress(text, compresslevel=1))
    return dst


def test_sniff_by_content_not_extension(tmp_path: Path, dlrm_files: list[Path]) -> None:
    plain = tmp_path / "trace.txt"
    plain.write_bytes(gzip.decompress(dlrm_files[0].read_bytes()))
    assert sniff_format(plain) == "kineto"
    gz_named_json = tmp_path / "trace.json"
    shutil.copy(dlrm_files[0], gz_named_json)  # gzip content behind a .json name
    assert sniff_format(gz_named_json) == "kineto"


def test_sniff_rejects_other_content(tmp_path: Path, shared_data: Path) -> None:
    for name, data in {"a.json": b'{"hello": 1}', "b.json": b"", "c.json.gz": b"\x1f\x8b\x08garbage"}.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(KatInputError) as info:
            sniff_format(p)
        assert str(p) in str(info.value)
    with pytest.raises(KatInputError, match="not a trace format KAT reads"):
        sniff_format(next((shared_data / "topology").rglob("*.xml")))


def test_expand_directory_sorted_and_plan(dlrm_dir: Path, dlrm_files: list[Path]) -> None:
    assert expand_paths([dlrm_dir]) == dlrm_files
    assert [fmt for _, fmt in plan([dlrm_dir])] == ["kineto"] * 8


def test_expand_errors(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("hi")
    with pytest.raises(KatInputError, match="no trace files"):
        expand_paths([tmp_path])
    with pytest.raises(KatInputError, match="no such file"):
        expand_paths([tmp_path / "missing.json"])


@pytest.mark.parametrize(
    ("name", "rank"),
    [
        ("rank-3.json", 3),
        ("trace_rank_12.json.gz", 12),
        ("rank7.pt.trace.json", 7),
        ("worker5_step_12.1694128201549.pt.trace.json.gz", 5),
        ("worker_2.json", 2),
        ("rep_3.sqlite", 3),
        ("rep-11.sqlite", 11),
        ("job_rep_4.nsys-rep", 4),
        ("report.nsys-rep", None),
        ("prep_3.json", None),
        ("job.json", None),
        ("ranking.json", None),
    ],
)
def test_rank_from_filename(name: str, rank: int | None) -> None:
    assert rank_from_filename(name) == rank


def test_read_traces_dlrm_dir(dlrm_dir: Path) -> None:
    seen: list[float] = []
    traces = list(read_traces([dlrm_dir], progress=lambda f, msg: seen.append(f)))
    assert [t.rank for t in traces] == list(range(8))
    assert all(t.meta["rank_source"] == "content" for t in traces)
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0)


def test_rank_from_name_and_option(tmp_path: Path, dlrm_files: list[Path]) -> None:
    named = _strip_rank(dlrm_files[2], tmp_path / "rank-5.json.gz")
    (t,) = read_traces([named])
    assert (t.rank, t.meta["rank_source"]) == (5, "file name")
    (t,) = read_traces([named], IngestOptions(rank=9))
    assert (t.rank, t.meta["rank_source"]) == (9, "option")
    anonymous = _strip_rank(dlrm_files[2], tmp_path / "trace.json.gz")
    with pytest.raises(KatInputError, match="cannot tell which rank"):
        list(read_traces([anonymous]))
    with pytest.raises(KatInputError, match="single file"):
        list(read_traces([named, anonymous], IngestOptions(rank=1)))


def test_rank_collision_names_both_files(tmp_path: Path, dlrm_files: list[Path]) -> None:
    a = _strip_rank(dlrm_files[0], tmp_path / "a_rank-1.json.gz")
    with pytest.raises(KatInputError) as info:
        list(read_traces([a, dlrm_files[1]]))  # content rank 1 vs file-name rank 1
    msg = str(info.value)
    assert "rank 1 appears twice" in msg and a.name in msg and dlrm_files[1].name in msg


FUNCTRACE_HEADER = "rank,device,stream,pid,tid,kind,name,start_ns,end_ns,correlation"


def _two_rank_csv(path: Path, ranks: tuple[int, int]) -> Path:
    rows = [FUNCTRACE_HEADER]
    for r in ranks:
        rows.append(f"{r},{r},7,100,100,kernel,gemm,{1_000 + r},{2_000 + r},{r + 1}")
        rows.append(f"{r},,,100,100,runtime,cudaLaunchKernel,{900 + r},{950 + r},{r + 1}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_read_many_yields_every_rank_of_a_file(tmp_path: Path) -> None:
    both = _two_rank_csv(tmp_path / "both.csv", (2, 5))
    traces = list(read_traces([both]))
    assert [t.rank for t in traces] == [2, 5]
    assert [len(t) for t in traces] == [2, 2]
    assert all(t.meta["rank_source"] == "content" for t in traces)
    assert [int(t.events["start_ns"].min()) for t in traces] == [902, 905]


def test_read_many_collision_across_files(tmp_path: Path) -> None:
    a = _two_rank_csv(tmp_path / "a.csv", (0, 1))
    b = _two_rank_csv(tmp_path / "b.csv", (1, 2))
    with pytest.raises(KatInputError) as info:
        list(read_traces([a, b]))
    msg = str(info.value)
    assert "rank 1 appears twice" in msg and "a.csv" in msg and "b.csv" in msg


def test_directory_walk_skips_files_that_are_not_traces(tmp_path, dlrm_dir):
    """A simulator output folder holds truth.json beside the rank files: the walk skips it, a named file is not."""
    import shutil

    import pytest

    from kat_gui.errors import KatInputError
    from kat_gui.ingest import plan, read_traces

    d = tmp_path / "run"
    d.mkdir()
    shutil.copy(dlrm_dir / "worker0_step_12.1694128201545.pt.trace.json.gz", d / "rank-0.json.gz")
    (d / "truth.json").write_text('{"schema": "kat.truth/1", "faults": []}')
    assert [p.name for p, _ in plan([d])] == ["rank-0.json.gz"]
    with pytest.raises(KatInputError, match="truth.json"):
        plan([d / "truth.json"])
    only = tmp_path / "only_json"
    only.mkdir()
    (only / "config.json").write_text('{"a": 1}')
    with pytest.raises(KatInputError, match="no trace files"):
        plan([only])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "rank-0.json").write_text('{"traceEvents": [{"ph": "X", "cat": "kernel"')  # a damaged trace
    with pytest.raises(KatInputError):
        list(read_traces([bad]))
