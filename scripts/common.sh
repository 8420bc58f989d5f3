# Shared by ./test.sh and ./start_app.sh: install what a fresh Debian/Ubuntu machine lacks.
# Sourced, not run.

# Debian packages Kinema needs to build and run.
KINEMA_APT_PACKAGES="libopenblas-dev pkg-config ffmpeg"

# Extra packages for the end-to-end tests only: the WebUI browser test and the API fuzzer (PyPI).
KINEMA_TEST_APT_PACKAGES="chromium chromium-driver python3-venv"

# Installs the missing ones of the packages named (default: KINEMA_APT_PACKAGES).
kinema_install_system_packages() {
    local missing=()
    for package in ${1:-$KINEMA_APT_PACKAGES}; do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "Installing ${missing[*]} ..."
        local sudo=""
        [ "$(id -u)" -ne 0 ] && sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if ! command -v swift >/dev/null 2>&1; then
        if [ -x /opt/swift/usr/bin/swift ]; then
            export PATH="/opt/swift/usr/bin:$PATH"
        else
            echo "error: no Swift toolchain found. Install Swift 6 (https://www.swift.org/install/linux/) and run this again." >&2
            exit 1
        fi
    fi
}

# Debian 12's OpenBLAS (0.3.21) does not recognise recent Xeon/EPYC CPUs and falls back to
# generic SSE kernels; the kinema executable corrects this itself (BLAS.suggestedCoreType), but
# test processes load OpenBLAS directly, so make the same choice here: SkylakeX on Intel CPUs
# with AVX-512, Haswell elsewhere with AVX2 and FMA. A value already set is kept.
kinema_select_blas_kernels() {
    [ -n "${OPENBLAS_CORETYPE:-}" ] && return
    if grep -q GenuineIntel /proc/cpuinfo && grep -qw avx512f /proc/cpuinfo && grep -qw avx512bw /proc/cpuinfo \
        && grep -qw avx512dq /proc/cpuinfo && grep -qw avx512vl /proc/cpuinfo; then
        export OPENBLAS_CORETYPE=SkylakeX
    elif grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then
        export OPENBLAS_CORETYPE=Haswell
    fi
}

# The random-weight test pipeline copied to DEST with a kinema.json whose recommended settings (FRAMES
# frames, 64x64, 4 steps, no guidance) and ranges (32-256 px, 2-16 frames, 2-50 steps) suit a quick
# CPU run. Used by the API fuzzer and the browser test.
kinema_make_test_model() {
    local dest=$1 frames=${2:-4}
    cp -R Tests/KinemaPipelineTests/Fixtures/pipelines/tiny_no_guidance "$dest"
    rm -f "$dest/reference.safetensors"
    cat > "$dest/kinema.json" <<JSON
{"width": 64, "height": 64, "frames": $frames, "fps": 8, "steps": 4, "guidance": 1,
 "ranges": {"width": {"min": 32, "max": 256, "step": 8}, "height": {"min": 32, "max": 256, "step": 8},
            "frames": {"min": 2, "max": 16, "step": 1}, "steps": {"min": 2, "max": 50, "step": 1}}}
JSON
}

# A private, throw-away PostgreSQL server for the tests: Debian's `postgresql` package (installed when
# missing), a new cluster in a temporary folder on a free loopback port, trust authentication for the
# superuser `kinema`, fsync off (nothing in it outlives the run; a crash of the server process alone loses
# nothing with it, unlike synchronous_commit = off, which the crash test showed losing acknowledged jobs). Exports KINEMA_TEST_POSTGRES_URL and
# KINEMA_TEST_POSTGRES_DIR (the tests stop and restart the server through pg_ctl on it); stop it with
# kinema_stop_test_postgres. PostgreSQL refuses to run as root, so as root the cluster belongs to `postgres`.
kinema_start_test_postgres() {
    kinema_install_system_packages postgresql
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [ -x "$bin/initdb" ] || { echo "error: PostgreSQL's initdb was not found under /usr/lib/postgresql" >&2; return 1; }
    local dir port as=()
    dir=$(mktemp -d /tmp/kinema-postgres.XXXXXX)
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$dir"
        as=(runuser -u postgres --)
    fi
    "${as[@]}" "$bin/initdb" -D "$dir/data" -U kinema --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; return 1; }
    cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
fsync = off
full_page_writes = off
max_connections = 300
CONF
    "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
        || { cat "$dir/server.log" >&2; return 1; }
    export KINEMA_TEST_POSTGRES_DIR="$dir"
    export KINEMA_TEST_POSTGRES_BIN="$bin"
    export KINEMA_TEST_POSTGRES_URL="postgres://kinema@127.0.0.1:$port/postgres?sslmode=disable"
    echo "PostgreSQL test server: $KINEMA_TEST_POSTGRES_URL (cluster in $dir)"
}

# Stops the server kinema_start_test_postgres started and removes its cluster.
kinema_stop_test_postgres() {
    [ -n "${KINEMA_TEST_POSTGRES_DIR:-}" ] || return 0
    local as=()
    [ "$(id -u)" -eq 0 ] && as=(runuser -u postgres --)
    "${as[@]}" "$KINEMA_TEST_POSTGRES_BIN/pg_ctl" -D "$KINEMA_TEST_POSTGRES_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$KINEMA_TEST_POSTGRES_DIR"
    unset KINEMA_TEST_POSTGRES_DIR KINEMA_TEST_POSTGRES_URL
}
