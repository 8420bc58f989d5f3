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
