#!/usr/bin/env bash
# Create /work/main/.venv-pipecat (a venv separate from the project's .venv)
# with Pipecat and what bench/pipecat_twilio/server.py needs.
#
#   bash bench/pipecat_twilio/setup.sh          # idempotent; re-run freely
#   PIPECAT_VERSION=1.14.0 bash bench/pipecat_twilio/setup.sh   # pin another version
#
# Everything comes from PyPI. No torch is installed: Pipecat's Silero VAD runs
# its bundled ONNX model on onnxruntime (a core dependency of pipecat-ai).
# The TTS stand-in needs the espeak-ng program (Debian: apt-get install espeak-ng).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${PIPECAT_VENV:-$repo/.venv-pipecat}"
python="${PYTHON:-python3}"
pipecat_version="${PIPECAT_VERSION:-1.14.0}"

say() { printf '[pipecat setup] %s\n' "$*"; }

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    say "ERROR: pipecat-ai needs Python >= 3.11; $python is $("$python" -V 2>&1). Set PYTHON=..."
    exit 1
fi

if [[ -x "$venv/bin/python" ]]; then
    say "virtualenv exists: $venv"
else
    say "creating virtualenv: $python -m venv $venv"
    "$python" -m venv "$venv"
fi

pip=("$venv/bin/python" -m pip --disable-pip-version-check)

# Extras: [websocket] brings fastapi (FastAPIWebsocketTransport); [silero] is
# kept for clarity (its onnxruntime is already a core requirement in 1.x).
# pocketsphinx ships its generic US English model inside the wheel.
packages=(
    "pipecat-ai[silero,websocket]==${pipecat_version}"
    "fastapi>=0.115,<1"
    "uvicorn>=0.32,<1"
    "websockets>=13.1"
    "pocketsphinx>=5.0,<6"
)

say "installing into $venv: ${packages[*]}"
"${pip[@]}" install --quiet "${packages[@]}"

if "$venv/bin/python" -c "import torch" 2>/dev/null; then
    say "WARNING: torch got installed into $venv; nothing here needs it"
fi

say "installed versions:"
"$venv/bin/python" - <<'PY'
from importlib.metadata import version
for name in ("pipecat-ai", "onnxruntime", "fastapi", "uvicorn", "websockets", "pocketsphinx", "numpy"):
    print(f"    {name} {version(name)}")
PY

if command -v espeak-ng >/dev/null 2>&1; then
    say "espeak-ng found: $(command -v espeak-ng) ($(espeak-ng --version | head -n1))"
else
    say "WARNING: espeak-ng is not on PATH; the TTS stand-in needs it (apt-get install espeak-ng)"
fi

say "done. Start the server with:"
say "    $venv/bin/python $here/server.py --port 8765"
