#!/usr/bin/env bash
# Extra test dependencies beyond pip's `.[test]`: a headless Chromium + its WebDriver (Debian packages) and
# Selenium in the venv, used by tests/test_report.py to check that the HTML report's images all load.
# Idempotent: installs only what is missing. Needs root (or sudo) for apt; without it, prints what to do
# and leaves the browser test to skip itself.
set -euo pipefail
VENV=${VENV:-.venv}

have_browser() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }

if ! have_browser; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
            echo "setup-test: chromium/chromedriver missing and not root; run as root:" \
                 "apt-get install -y chromium chromium-driver (the browser test will be skipped)" >&2
            SUDO="skip"
        fi
    fi
    if [ "$SUDO" != "skip" ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get update -q
        $SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-dejavu-core
    elif [ "$SUDO" != "skip" ]; then
        echo "setup-test: no apt-get; install chromium and chromedriver yourself (browser test will skip)" >&2
    fi
fi

if [ -x "$VENV/bin/python" ]; then
    "$VENV/bin/python" -c "import selenium" 2>/dev/null || "$VENV/bin/python" -m pip install -q selenium
    # Ray for tests/test_ray.py (the `ray` extra; also installed by setup.sh), psutil for its fault test
    "$VENV/bin/python" -c "import ray, psutil" 2>/dev/null || "$VENV/bin/python" -m pip install -q "ray[default]>=2.40" psutil
else
    echo "setup-test: no virtual env at $VENV (set VENV=...); skipping selenium install" >&2
fi
