#!/usr/bin/env bash
# The WebUI's real browser test: starts `kinema serve` with the bundled model (Models/kinema-tiny, what
# ./start_app.sh serves; BROWSER_TEST_MODEL=DIR for another) and drives
# the page in headless Chromium (tests/browser/webui_test.py): upload, preset, sizes through the
# advanced settings, prediction, generate, progress, the video playing, history, reuse settings,
# 360 px layout. Fails when the page shows an error or the video does not play.
#
#   tests/browser/run.sh                          uses .build/release/kinema
#   KINEMA_BIN=.build/debug/kinema tests/browser/run.sh
#
# Environment: KINEMA_BIN (the kinema executable), SCREENSHOT_DIR (where screenshots go; default
# /tmp: kinema-webui.png, kinema-webui-360.png), WEBUI_TIMEOUT (seconds to wait for the video,
# default 600). Installs Debian's chromium and chromium-driver when missing, and selenium in a
# virtual environment at .venv-browser.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
source scripts/common.sh

kinema_bin=${KINEMA_BIN:-.build/release/kinema}
screenshot_dir=${SCREENSHOT_DIR:-/tmp}
timeout=${WEBUI_TIMEOUT:-600}

if [ ! -x "$kinema_bin" ]; then
    echo "error: no kinema executable at $kinema_bin; build it (swift build -c release --product kinema) or set KINEMA_BIN" >&2
    exit 1
fi

# Chromium and its driver from Debian.
kinema_install_system_packages "chromium chromium-driver"

# Selenium in its own virtual environment.
venv=$root/.venv-browser
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import selenium" 2>/dev/null; then
    echo "Installing selenium into $venv ..."
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "selenium>=4.20,<5"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/kinema-webui.XXXXXX")
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# The test picks the "recommended" preset, then sets a small non-square size and few steps through
# the sliders (a few seconds on a 2-core CPU).
model=${BROWSER_TEST_MODEL:-$root/Models/kinema-tiny}

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "Starting $kinema_bin serve on 127.0.0.1:$port ..."
"$kinema_bin" serve --port "$port" --model "$model" --data-dir "$work/data" > "$work/server.log" 2>&1 &
server_pid=$!

url=http://127.0.0.1:$port
for _ in $(seq 300); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "error: the server exited while starting:" >&2
        cat "$work/server.log" >&2
        exit 1
    fi
    python3 -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$url/healthz" 2>/dev/null && break
    sleep 0.2
done

mkdir -p "$screenshot_dir"
status=0
"$venv/bin/python" tests/browser/webui_test.py --url "$url" \
    --width 96 --height 80 --steps 8 \
    --timeout "$timeout" --screenshot "$screenshot_dir/kinema-webui.png" || status=$?
if [ $status -ne 0 ]; then
    echo "--- server log (last 40 lines)" >&2
    tail -n 40 "$work/server.log" >&2
fi
exit $status
