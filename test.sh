#!/usr/bin/env bash
# Installs what is missing, then runs Kinema's whole test suite:
#   1. swift test: every unit, fixture and CLI test (debug build);
#   2. kinema selftest on a release build: every CPU op against its reference.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/common.sh
kinema_install_system_packages
kinema_select_blas_kernels

echo "== swift test"
swift build --build-tests
swift test --skip-build --disable-swift-testing

echo "== kinema selftest (release)"
swift build -c release --product kinema
.build/release/kinema selftest
