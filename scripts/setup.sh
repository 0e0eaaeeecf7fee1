#!/usr/bin/env bash
# Idempotent set-up: makes .venv in the repository and installs the project (editable) with its
# test dependencies. A second run with pyproject.toml and this script unchanged takes a second.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
stamp=.venv/.ascood-setup
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
# torch and torchvision are pinned exactly in pyproject.toml; on this machine pip takes both from
# local disk. Never use uv or poetry here: they would download several GB of CUDA wheels.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
echo "$want" > "$stamp"
echo "set-up done: .venv is ready"
