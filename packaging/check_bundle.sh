#!/usr/bin/env bash
# Install the built bundle with networking disabled and use it: `make bundle-check` (after `make bundle`).
#
# Unpacks dist/kat-offline-<version>-linux-<arch>.tar.gz into a scratch folder, then, inside a network namespace
# with no interfaces (`unshare -n`, needs root or user namespaces) — else with pip pointed at an unreachable
# index and proxy — runs install.sh, `kat gui --demo --screenshot`, `kat simulate`/`ingest`/`explain` with the
# bundled model, and the same with the frozen app. Prints sizes and times; keeps the screenshots in
# build/bundle-check/.
#
# Environment: KAT_CHECK_DIR (scratch folder, default build/bundle-check), PYTHON (for the venv install).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
VERSION="$("$PYTHON" -c 'import re; print(re.search(r"__version__ = \"(.+?)\"", open("kat_gui/__init__.py").read()).group(1))')"
NAME="kat-offline-${VERSION}-linux-$(uname -m)"
TAR="$ROOT/dist/$NAME.tar.gz"
CHK="${KAT_CHECK_DIR:-$ROOT/build/bundle-check}"
say() { echo "bundle-check: $*"; }
die() { echo "bundle-check: FAILED: $*" >&2; exit 1; }
secs_since() { echo "$((($(date +%s%N) - $1) / 1000000))" | sed -E 's/([0-9]{3})$/.\1/; s/^\./0./'; }

[ -f "$TAR" ] || die "$TAR not found; run 'make bundle' first"
rm -rf "$CHK"
mkdir -p "$CHK/home"
say "unpacking $(du -h "$TAR" | cut -f1) archive"
tar -C "$CHK" -xzf "$TAR"
B="$CHK/$NAME"

# No network for everything below: an empty network namespace when possible.
if unshare -n true 2>/dev/null; then
    OFF=(unshare -n)
    say "network disabled with unshare -n (no interfaces at all)"
else
    OFF=()
    say "unshare -n unavailable: pip gets --no-index and an unreachable index/proxy instead"
fi
export HOME="$CHK/home" XDG_DATA_HOME="$CHK/home/share" KAT_CACHE_DIR="$CHK/cache" QT_QPA_PLATFORM=offscreen
export PIP_INDEX_URL=http://127.0.0.1:9/simple http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9
# A hung command (a window that never quits) fails the check instead of blocking it.
off() { timeout "${KAT_CHECK_TIMEOUT:-300}" "${OFF[@]}" "$@"; }
if [ ${#OFF[@]} -gt 0 ]; then
    off python3 -c 'import socket; socket.create_connection(("1.1.1.1", 53), timeout=2)' 2>/dev/null &&
        die "the network is still reachable inside the namespace"
fi

# 1. The venv install.
t0=$(date +%s%N)
off "$B/install.sh" --prefix "$CHK/opt" --bin-dir "$CHK/bin" --python "$PYTHON"
t_install=$(secs_since "$t0")
KAT="$CHK/opt/venv/bin/kat"
sysinfo="$("$CHK/opt/venv/bin/python" -c 'import llama_cpp; print(llama_cpp.llama_print_system_info().decode())')"
case "$sysinfo" in *"AVX512 = 1"*) die "llama.cpp was built with AVX-512 (not portable): $sysinfo" ;; esac

run_checks() {  # $1 = kat executable, $2 = label
    local kat="$1" tag="$2"
    say "[$tag] kat gui --demo --screenshot"
    off "$kat" gui --demo --screenshot "$CHK/demo-$tag.png" --quit
    [ -s "$CHK/demo-$tag.png" ] || die "[$tag] no screenshot"
    say "[$tag] simulate, ingest, explain with the bundled model"
    off "$kat" simulate "$CHK/sim-$tag" --scenario gpu_throttle_tp4 --seed 3 >/dev/null
    off "$kat" ingest "$CHK/sim-$tag"/rank-*.pt.trace.json -o "$CHK/sim-$tag.kat.h5" >/dev/null
    off "$kat" explain "$CHK/sim-$tag.kat.h5" | tee "$CHK/explain-$tag.txt"
    grep -qi "gpu" "$CHK/explain-$tag.txt" || die "[$tag] the explanation does not name the GPU fault"
}
run_checks "$KAT" venv

# 2. The frozen app, when the bundle has one.
if [ -x "$B/app/kat/kat" ]; then
    t1=$(date +%s%N)
    off "$B/install.sh" --frozen --prefix "$CHK/opt-frozen" --bin-dir "$CHK/bin-frozen" --no-desktop
    t_frozen=$(secs_since "$t1")
    # A clean environment: the frozen app must not lean on any Python of this machine.
    rm -rf "$CHK/cache"
    (
        unset PYTHONPATH VIRTUAL_ENV PYTHONHOME
        export PATH=/usr/bin:/bin
        run_checks "$CHK/opt-frozen/app/kat/kat" frozen
    )
    say "frozen install: ${t_frozen}s"
fi

say "archive $(du -h "$TAR" | cut -f1), unpacked $(du -sh "$B" | cut -f1) (wheelhouse $(du -sh "$B/wheelhouse" | cut -f1)$([ -d "$B/app" ] && echo ", frozen app $(du -sh "$B/app" | cut -f1)"))"
say "offline venv install: ${t_install}s"
say "OK; screenshots in $CHK/demo-*.png"
