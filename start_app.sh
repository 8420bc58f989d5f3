#!/usr/bin/env bash
# Installs what is missing, builds Kinema in release mode and starts the WebUI and HTTP API on
# http://127.0.0.1:7860/ with the bundled default model (Models/kinema-tiny), or the model given:
#   ./start_app.sh                         the default model
#   ./start_app.sh --model ~/i2vgen-xl     another diffusers I2VGen-XL folder
#   ./start_app.sh --port 8080 --memory-budget 12GiB
# Every argument goes to `kinema serve` (see `kinema serve --help`). Stop it with Ctrl-C: a running
# job stops at its next step and is run again at the next start.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/common.sh
kinema_install_system_packages

echo "Building Kinema (release) ..."
swift build -c release --product kinema
echo "Starting the Kinema WebUI; open the URL it prints (http://127.0.0.1:7860/ by default)."
exec .build/release/kinema serve "$@"
