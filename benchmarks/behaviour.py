"""Behaviour snapshot: the CLI's JSON contracts on the shared real traces and the suite's dev seeds, written to a
folder, so that a refactor can prove it changed nothing (``diff`` two snapshots).

What a snapshot holds, one file per command and input (all through ``kat_gui.cli.main``, the CLI's own code):
- ``kat info --json``, ``kat detect --json`` and ``kat explain --no-llm --json`` on every real Kineto / Nsight file
  in ``../shared/data`` that ingests (plus the 8-rank DLRM job as one run), and on every case of the benchmark
  suite's development seed set (``benchmarks/suite.py``);
- ``kat compare --json`` on the real pairs (HTA's trace_diff pair, Nsight profile1/profile16) and, for every faulty
  suite case, its healthy twin (same seed, no fault) against the faulty run;
- ``kat ingest`` failures as the one line they print (exit code included); a single file that names no rank is
  ingested again with ``--rank 0``.

Stores are written under ``--work`` (default ``bench-out/behaviour``); simulated traces are cached there, and the
work folder is written as ``<work>`` in the outputs so that snapshots made in different folders compare.

Usage:
    python benchmarks/behaviour.py snapshot OUTDIR [--quick] [--work DIR]
    python benchmarks/behaviour.py diff OLD_DIR NEW_DIR
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import suite  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def _cli(argv: list[str]) -> tuple[int, str, str]:
    from kat_gui import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, out.getvalue(), err.getvalue()


def _real_inputs() -> dict[str, list[Path]]:
    """name -> input paths for every real trace (a file each; the DLRM job as one run)."""
    runs: dict[str, list[Path]] = {}
    for sub in ("kineto/hta", "kineto/tracelens", "nsys_sqlite/extrap", "nsys_sqlite/nsys_ai"):
        for p in sorted((SHARED / sub).glob("*")):
            if p.suffix in (".gz", ".sqlite", ".json"):
                stem = p.name.removesuffix(".gz").removesuffix(".json").removesuffix(".sqlite")
                runs[stem.replace(".", "_")] = [p]
    runs["param_dlrm_8rank"] = sorted((SHARED / "kineto/param_dlrm_8rank").glob("*.json.gz"))
    return runs


REAL_PAIRS = (
    ("trace_diff__control__control", "trace_diff__test__test"),
    ("concurrent_example__concurrent_s16__profile16", "concurrent_example__concurrent_s1__profile1"),
    ("mfu_2gpu_before", "mfu_2gpu_after"),
)


def _normalise(out: Path, work: Path) -> None:
    """Write the work and data folders as ``<work>`` and ``<shared>`` in every output, so snapshots made in
    different folders (a worktree of an older commit, say) compare."""
    for p in out.iterdir():
        text = p.read_text(encoding="utf-8")
        new = text.replace(str(work), "<work>").replace(str(SHARED), "<shared>")
        if new != text:
            p.write_text(new, encoding="utf-8")


def _one_run(name: str, inputs: list[Path], work: Path, out: Path) -> Path | None:
    store = work / f"{name}.kat.h5"
    store.unlink(missing_ok=True)
    rc, _, err = _cli(["ingest", *map(str, inputs), "-o", str(store), "--name", name])
    if rc and "pass --rank" in err and len(inputs) == 1:  # a single-GPU file that names no rank
        rc, _, err = _cli(["ingest", str(inputs[0]), "-o", str(store), "--name", name, "--rank", "0"])
    (out / f"{name}.ingest.txt").write_text(f"exit {rc}\n{err.strip()}\n" if rc else "exit 0\n")
    if rc:
        return None
    rc, info, _ = _cli(["info", str(store), "--json"])
    (out / f"{name}.info.json").write_text(info)
    det = out / f"{name}.detect.json"
    rc, _, err = _cli(["detect", str(store), "--json", str(det)])
    if rc:
        det.write_text(f"exit {rc}\n{err.strip()}\n")
    rc, text, err = _cli(["explain", str(store), "--no-llm", "--json"])
    if not rc:  # the wall-clock time it took is the one field that is not behaviour
        text = re.sub(r'"total_s": [0-9.e+-]+', '"total_s": "<time>"', text)
    (out / f"{name}.explain.json").write_text(text if not rc else f"exit {rc}\n{err.strip()}\n")
    return store


def _compare(a: Path, b: Path, name: str, out: Path) -> None:
    dst = out / f"{name}.compare.json"
    rc, _, err = _cli(["compare", str(a), str(b), "--json", str(dst)])
    if rc:
        dst.write_text(f"exit {rc}\n{err.strip()}\n")


def snapshot(out: Path, work: Path, quick: bool) -> None:
    from kat_gui import simulate

    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    stores: dict[str, Path | None] = {}
    real = _real_inputs()
    for name, inputs in sorted(real.items()):
        stores[name] = _one_run(name, inputs, work, out)
        print(f"{name:<60} {'ok' if stores[name] else 'not ingested'}", flush=True)
    for a, b in REAL_PAIRS:
        if stores.get(a) and stores.get(b):
            _compare(stores[a], stores[b], f"{a}__vs__{b}", out)
    cases = suite.quick_cases() if quick else suite.cases()
    for case in cases:
        seed = suite.seed_for(case, "dev")
        spec = suite.build_spec(simulate, case)
        name = case["name"]
        sim = work / "sim" / name
        if not (sim / "truth.json").exists():
            suite.generate_case(simulate, case, sim, seed=seed)
        files = sorted(p for p in sim.glob("*.json") if p.name != "truth.json")
        stores[name] = _one_run(name, files, work, out)
        if spec.faults:
            twin = work / "sim" / f"{name}__twin"
            if not (twin / "truth.json").exists():
                twin.mkdir(parents=True, exist_ok=True)
                simulate.simulate(twin, spec.with_(faults=[]), seed=seed)
            tfiles = sorted(p for p in twin.glob("*.json") if p.name != "truth.json")
            stores[f"{name}__twin"] = _one_run(f"{name}__twin", tfiles, work, out)
            if stores[name] and stores[f"{name}__twin"]:
                _compare(stores[f"{name}__twin"], stores[name], f"{name}__twin__vs__{name}", out)
        print(f"{name:<60} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    _normalise(out, work)
    print(f"snapshot of {len(list(out.iterdir()))} files in {out} ({time.perf_counter() - t0:.0f} s)")


def diff(old: Path, new: Path) -> int:
    a = {p.name for p in old.iterdir()}
    b = {p.name for p in new.iterdir()}
    bad = 0
    for name in sorted(a ^ b):
        print(f"only in {'old' if name in a else 'new'}: {name}")
        bad += 1
    for name in sorted(a & b):
        if (old / name).read_bytes() != (new / name).read_bytes():
            print(f"differs: {name}")
            bad += 1
    print(f"{len(a & b)} files compared, {bad} differences")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("snapshot")
    s.add_argument("out")
    s.add_argument("--work", default=str(ROOT / "bench-out" / "behaviour"))
    s.add_argument("--quick", action="store_true", help="only the suite's quick cases")
    d = sub.add_parser("diff")
    d.add_argument("old")
    d.add_argument("new")
    args = ap.parse_args(argv)
    if args.cmd == "snapshot":
        snapshot(Path(args.out), Path(args.work), args.quick)
        return 0
    return diff(Path(args.old), Path(args.new))


if __name__ == "__main__":
    raise SystemExit(main())
