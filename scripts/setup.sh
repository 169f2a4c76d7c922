#!/usr/bin/env bash
# Set up (or update) the project's virtual environment in .venv.
#   scripts/setup.sh          daemon + trainer
#   scripts/setup.sh --test   daemon + trainer + test tools
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="[train,demo]"
[ "${1:-}" = "--test" ] && extras="[train,demo,test]"
PY="${PYTHON:-python3}"

# Capture filters are compiled by libpcap (loaded at run time through ctypes).
if ! ldconfig -p 2>/dev/null | grep -q 'libpcap\.so'; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing libpcap0.8 (needed for --filter)"
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libpcap0.8 >/dev/null
    else
        echo "setup: warning: libpcap not found; --filter needs it (Debian: apt-get install libpcap0.8)" >&2
    fi
fi
# The live-capture tests need iproute2 for their network namespace.
if [ -n "$extras" ] && ! command -v ip >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
fi
# The report tests render the page in headless Chromium and look at what it shows.
if [ "${1:-}" = "--test" ] && ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing chromium (the report tests render their page in it)"
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "setup: warning: chromium not found; the report tests need it (Debian: apt-get install chromium)" >&2
    fi
fi
# bench/live.py (and its test) sends captures at set rates with tcpreplay.
if [ "${1:-}" = "--test" ] && ! command -v tcpreplay >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing tcpreplay (bench/live.py and its test send captures with it)"
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tcpreplay >/dev/null
    else
        echo "setup: warning: tcpreplay not found; bench/live.py and its test need it (Debian: apt-get install tcpreplay)" >&2
    fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)

# torch: without a GPU take the pinned CPU build (small, fast); with one, keep or get
# the default CUDA build. The project's range (torch>=2.2) accepts either, so the
# install below never replaces the one chosen here. PyPI's torch for Linux x86_64 is
# the CUDA build (several GB of CUDA libraries); the CPU build, torch==2.13.0+cpu, is
# taken first from pip's configured sources (a local wheel or mirror: no network), then
# from PyTorch's CPU index (TORCH_CPU_INDEX to use a mirror) with the dependencies from
# PyPI, then the pinned version, then any.
cpu_index="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        "${pip[@]}" torch
    else
        "${pip[@]}" "torch==2.13.0+cpu" 2>/dev/null \
            || "${pip[@]}" --retries 1 --timeout 15 --extra-index-url "$cpu_index" "torch==2.13.0+cpu" \
            || "${pip[@]}" "torch==2.13.0" || "${pip[@]}" torch
    fi
fi
"${pip[@]}" -e ".${extras}"
# numba compiles on first call: do it now, once, in parallel, not in the first run (ids_daemon/precompile.py)
echo "setup: compiling the numba kernels into their cache (about a minute, once)"
.venv/bin/ids-daemon compile
echo "setup: ready (.venv)"
