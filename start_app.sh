#!/usr/bin/env bash
# Installs what is missing, builds Kinema in release mode and runs its main job.
# Until the WebUI exists that is `kinema selftest`, which checks every op of the CPU backend.
# Arguments are passed to kinema instead, e.g. ./start_app.sh inspect MODEL_DIR
set -euo pipefail
cd "$(dirname "$0")"
source scripts/common.sh
kinema_install_system_packages

echo "Building Kinema (release) ..."
swift build -c release --product kinema
if [ $# -eq 0 ]; then
    exec .build/release/kinema selftest
fi
exec .build/release/kinema "$@"
