#!/usr/bin/env bash
# Installs what is missing, then runs Kinema's whole test suite:
#   1. a release build of kinema (the server tests run it as real processes);
#   2. swift test: every unit, fixture, CLI and server test (debug build); the job store and multi-node
#      tests run against a private PostgreSQL server started here (Debian's, installed when missing);
#   3. kinema selftest on the release build: every CPU op against its reference;
#   4. the API fuzzer (schemathesis against /openapi.yaml) and the WebUI browser test (headless Chromium).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/common.sh
kinema_install_system_packages
kinema_install_system_packages "$KINEMA_TEST_APT_PACKAGES"
kinema_select_blas_kernels

echo "== PostgreSQL test server"
kinema_start_test_postgres
trap kinema_stop_test_postgres EXIT

echo "== release build"
swift build -c release --product kinema
export KINEMA_BIN="$PWD/.build/release/kinema"

echo "== swift test"
swift build --build-tests
swift test --skip-build --disable-swift-testing

echo "== kinema selftest (release)"
"$KINEMA_BIN" selftest

echo "== API fuzzing (schemathesis)"
scripts/fuzz_api.sh

echo "== WebUI in a real browser (headless Chromium)"
tests/browser/run.sh
