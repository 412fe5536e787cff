"""Export the trained LoRA adapter (``train.py`` output) to a GGUF LoRA file that llama.cpp applies at load time.

The converter is llama.cpp's own ``convert_lora_to_gguf.py``, taken from the llama-cpp-python source
distribution of the exact version KAT runs (the pin in ``requirements/runtime.txt``), so the file format matches
the runtime. The source archive is fetched from the package registry with pip once and kept in ``--work``.

The adapter is written as f16 (~9.8 MB for r=16): small enough to commit, and the base stays the untouched Q4_1
file. Never merge and re-quantize to Q4_1: the LoRA deltas are smaller than half a Q4_1 step and vanish.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NEEDED = ("convert_lora_to_gguf.py", "convert_hf_to_gguf.py", "gguf-py/", "conversion/")


def llama_version() -> str:
    text = (ROOT / "requirements" / "runtime.txt").read_text(encoding="utf-8")
    m = re.search(r"^llama-cpp-python==([^\s;#]+)", text, re.M)
    if not m:
        raise SystemExit("requirements/runtime.txt does not pin llama-cpp-python")
    return m.group(1)


def converter_dir(work: Path, version: str) -> Path:
    """The llama.cpp folder holding the converter (downloaded and unpacked once)."""
    dest = work / f"llama.cpp-{version}"
    if (dest / "convert_lora_to_gguf.py").is_file():
        return dest
    work.mkdir(parents=True, exist_ok=True)
    sdist = work / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.is_file():
        print(
            f"[export] fetching the llama-cpp-python {version} source archive (converter scripts)", flush=True
        )
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
             f"llama-cpp-python=={version}", "-d", str(work)],
            check=True,
        )  # fmt: skip
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    with tarfile.open(sdist) as tar:
        members = [
            m
            for m in tar.getmembers()
            if m.name.startswith(prefix)
            and m.name[len(prefix) :].startswith(NEEDED)
            and (m.isfile() or m.isdir())
        ]
        for m in members:
            m.name = m.name[len(prefix) :]
        tmp = work / f".llama.cpp-{version}.tmp"
        tar.extractall(tmp, members=members, filter="data")
    tmp.rename(dest)
    return dest


def export(train_out: Path, outfile: Path, work: Path) -> Path:
    conv = converter_dir(work.resolve(), llama_version())
    train_out, outfile = train_out.resolve(), outfile.resolve()
    outfile.parent.mkdir(parents=True, exist_ok=True)
    env = {"PYTHONPATH": str(conv / "gguf-py")}
    subprocess.run(
        [sys.executable, str(conv / "convert_lora_to_gguf.py"), "--base", str(train_out / "base"),
         "--outtype", "f16", "--outfile", str(outfile), str(train_out / "adapter")],
        check=True, env={**os.environ, **env}, cwd=conv,
    )  # fmt: skip
    return outfile


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-out", type=Path, required=True, help="the --out folder of train.py")
    ap.add_argument("--outfile", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True, help="where the converter source is kept")
    args = ap.parse_args(argv)
    path = export(args.train_out, args.outfile, args.work)
    log = json.loads((args.train_out / "train_log.json").read_text(encoding="utf-8"))
    print(f"[export] {path} ({path.stat().st_size / 1e6:.1f} MB), trained {log['steps']} steps", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
