#!/usr/bin/env bash
# Make sure python3 can create virtualenvs (with pip), installing Debian's
# python3-venv when it cannot. Debian ships the venv module without
# ensurepip, so `python3 -m venv --help` succeeds there while creating a venv
# fails: ensurepip is what to check for.
#
# Environment:
#   PYTHON  python interpreter to check (default: python3)
#
# Prints nothing on stdout; exits non-zero, saying what to install, when it
# cannot fix this itself.
set -euo pipefail

python="${PYTHON:-python3}"
has_ensurepip() { "${python}" -c 'import ensurepip' >/dev/null 2>&1; }

has_ensurepip && exit 0

if command -v apt-get >/dev/null; then
    if [[ "$(id -u)" -eq 0 ]]; then
        sudo=()
    elif command -v sudo >/dev/null; then
        sudo=(sudo)
    else
        echo "ensure-venv: ${python} cannot create virtualenvs (no ensurepip); as root run: apt-get install python3-venv" >&2
        exit 1
    fi
    echo "ensure-venv: ${python} has no ensurepip; installing python3-venv with apt-get" >&2
    if "${sudo[@]}" apt-get update -qq >&2 && "${sudo[@]}" apt-get install -y -qq python3-venv >&2; then
        has_ensurepip && exit 0
    fi
fi
echo "ensure-venv: ${python} cannot create virtualenvs (no ensurepip); install your distribution's venv package (Debian/Ubuntu: python3-venv) or set PYTHON to an interpreter that has it" >&2
exit 1
