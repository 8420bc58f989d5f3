#!/usr/bin/env bash
# Fuzzes the HTTP API of `kinema serve` against its own OpenAPI document (/openapi.yaml) with
# schemathesis: no 5xx, every status, content type, header and body as documented, and 405 with an Allow
# header for a method a path does not answer.
#
#   scripts/fuzz_api.sh                  uses .build/debug/kinema
#   KINEMA_BIN=.build/release/kinema scripts/fuzz_api.sh
#
# 1. Starts the server (with its worker) on a free port with the tiny random-weight test model, a
#    fresh data directory and a small kinema.json; uploads a picture and runs one small job to the
#    end, checking every server-sent event of it against the document's schemas.
# 2. Restarts it without a worker (submitted jobs stay queued, so fuzzing does not wait on
#    generations) and runs schemathesis: examples, coverage, fuzzing and stateful phases, with the
#    picture and the finished job offered as known ids; then sends a fixed list of hostile values a
#    random search seldom draws (restarting the server after any that kills it, to report them all).
# 3. Restarts it with an API token and checks the 401 answers without one.
# Exits non-zero on any failure. Environment: FUZZ_MAX_EXAMPLES (default 25 per operation),
# FUZZ_SEED (schemathesis seed), FUZZ_VENV (default .venv-fuzz), FUZZ_KEEP=1 keeps the temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

KINEMA_BIN=${KINEMA_BIN:-.build/debug/kinema}
VENV=${FUZZ_VENV:-.venv-fuzz}
MAX_EXAMPLES=${FUZZ_MAX_EXAMPLES:-25}
SCHEMATHESIS_VERSION=">=4.3,<5"
FIXTURE=Tests/KinemaPipelineTests/Fixtures/pipelines/tiny_no_guidance

[ -x "$KINEMA_BIN" ] || { echo "error: $KINEMA_BIN is not built (swift build --product kinema)" >&2; exit 1; }
[ -d "$FIXTURE" ] || { echo "error: the test model $FIXTURE is missing" >&2; exit 1; }

# --- schemathesis in its own virtual environment
if ! "$VENV/bin/schemathesis" --version >/dev/null 2>&1; then
    echo "== installing schemathesis into $VENV"
    python3 -m venv "$VENV" || { echo "error: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2; exit 1; }
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis$SCHEMATHESIS_VERSION"
fi
PY="$VENV/bin/python"
echo "== $("$VENV/bin/schemathesis" --version)"

# --- a temporary model and data directory
work=$(mktemp -d "${TMPDIR:-/tmp}/kinema-fuzz.XXXXXX")
server_pid=""
stop_server() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    server_pid=""
}
cleanup() {
    local status=$?
    stop_server
    if [ "$status" -ne 0 ] || [ "${FUZZ_KEEP:-0}" = 1 ]; then
        echo "fuzz files kept in $work (server logs: $work/server-*.log)" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

kinema_make_test_model "$work/model" 4
data="$work/data"

# Starts the server on a free port and sets $base. (`--port 0` would be simpler, but the
# configuration check refuses it.)
start_server() {
    local name=$1; shift
    local log="$work/server-$name.log" port attempt
    server_name=$name
    for attempt in 1 2 3; do
        port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        base="http://127.0.0.1:$port"
        "$KINEMA_BIN" serve --model "$work/model" --data-dir "$data" --port "$port" "$@" >"$log" 2>&1 &
        server_pid=$!
        for _ in $(seq 1 600); do
            kill -0 "$server_pid" 2>/dev/null || break
            curl -fsS "$base/healthz" >/dev/null 2>&1 && return 0
            sleep 0.1
        done
        stop_server
        grep -qi "address already in use" "$log" || break
    done
    cat "$log" >&2
    echo "error: the server did not come up (log above)" >&2
    exit 1
}

# --- 1. one real job, its events checked against the document
start_server worker
echo "== server (with worker) at $base"
curl -fsS "$base/openapi.yaml" -o "$work/openapi.yaml"
[ -s "$work/openapi.yaml" ] || { echo "error: $base/openapi.yaml is empty (is the build older than the document?)" >&2; exit 1; }
if ! cmp -s "$work/openapi.yaml" Sources/KinemaServer/Resources/openapi.yaml; then
    echo "warning: the served /openapi.yaml differs from Sources/KinemaServer/Resources/openapi.yaml; rebuild $KINEMA_BIN to fuzz the current one" >&2
fi

"$PY" - "$base" "$work" <<'PY'
"""Uploads a picture, runs one small job and checks its event stream, job and outputs against the document."""
import json, struct, sys, time, zlib
import jsonschema_rs, requests, yaml

base, work = sys.argv[1], sys.argv[2]
document = yaml.safe_load(open(f"{work}/openapi.yaml"))
failures = []

def validator(name):
    schema = dict(document)
    schema["$ref"] = f"#/components/schemas/{name}"
    return jsonschema_rs.Draft202012Validator(schema, validate_formats=True)

schemas = {name: validator(name) for name in ("Job", "Progress", "Error", "Upload", "JobAccepted", "ResolvedParameters", "CancelResult")}

def check(name, value, what):
    errors = [f"{e.instance_path}: {e.message}" for e in schemas[name].iter_errors(value)]
    if errors:
        failures.append(f"{what} does not match {name}: {errors[:3]}")

def png(width, height):
    pixel = lambda x, y: bytes(((x * 7 + y * 3) % 256, (x * 5) % 256, (y * 11) % 256))
    rows = b"".join(b"\x00" + b"".join(pixel(x, y) for x in range(width)) for y in range(height))
    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")

upload = requests.post(f"{base}/api/v1/uploads", data=png(48, 40), headers={"Content-Type": "image/png"}, timeout=60)
assert upload.status_code == 201, f"upload answered {upload.status_code}: {upload.text}"
check("Upload", upload.json(), "the upload answer")
image_id = upload.json()["image_id"]
assert (upload.json()["width"], upload.json()["height"]) == (48, 40), upload.text

params = {"image_id": image_id, "prompt": "a test pattern drifting", "width": 64, "height": 64, "frames": 4, "steps": 12, "seed": 7}
submit = requests.post(f"{base}/api/v1/jobs", json=params, headers={"Idempotency-Key": "fuzz-setup"}, timeout=60)
assert submit.status_code == 202, f"submit answered {submit.status_code}: {submit.text}"
check("JobAccepted", submit.json(), "the submit answer")
job_id = submit.json()["id"]
assert submit.headers.get("Location") == f"/api/v1/jobs/{job_id}", submit.headers

def events(last_event_id=None, timeout=900):
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    with requests.get(f"{base}/api/v1/jobs/{job_id}/events", headers=headers, stream=True, timeout=timeout) as stream:
        assert stream.status_code == 200, f"events answered {stream.status_code}"
        assert stream.headers["Content-Type"].startswith("text/event-stream"), stream.headers
        event = {}
        for line in stream.iter_lines(decode_unicode=True):
            if line == "":
                if event:
                    yield event
                event = {}
            else:
                field, _, value = line.partition(":")
                event[field] = value.removeprefix(" ")

started = time.monotonic()
seen, last_id, final = {}, -1, None
for event in events():
    kind, event_id = event.get("event"), int(event.get("id", "-1"))
    if event_id <= last_id:
        failures.append(f"event id {event_id} after {last_id}: ids must grow")
    last_id = event_id
    data = json.loads(event["data"])
    check({"status": "Job", "done": "Job", "progress": "Progress", "error": "Error"}.get(kind, "Error"), data, f"a '{kind}' event")
    seen[kind] = seen.get(kind, 0) + 1
    if kind == "done":
        final = data
if final is None:
    sys.exit(f"the event stream ended without a 'done' event: {seen}")
print(f"   job {job_id}: {final['status']} in {time.monotonic() - started:.1f} s; events {seen}")
if final["status"] != "succeeded":
    sys.exit(f"the setup job did not succeed: {final.get('error')}")
if not seen.get("progress"):
    failures.append("no 'progress' event while the job ran")

resumed = list(events(last_event_id=str(last_id), timeout=30))
if resumed:
    failures.append(f"a stream resumed after the last event sent {len(resumed)} more")

job = requests.get(f"{base}/api/v1/jobs/{job_id}", timeout=30).json()
check("Job", job, "the finished job")
types = {"video.mp4": "video/mp4", "preview.gif": "image/gif", "preview.webp": "image/webp", "poster.png": "image/png", "params.json": "application/json"}
if sorted(job["outputs"]) != sorted(types):
    failures.append(f"outputs are {sorted(job['outputs'])}")
for name, path in job["outputs"].items():
    answer = requests.get(base + path, timeout=30)
    if answer.status_code != 200 or not answer.headers.get("Content-Type", "").startswith(types[name]) or not answer.content:
        failures.append(f"{path}: {answer.status_code} {answer.headers.get('Content-Type')} ({len(answer.content)} bytes)")
    part = requests.get(base + path, headers={"Range": "bytes=0-3"}, timeout=30)
    if part.status_code != 206 or part.content != answer.content[:4]:
        failures.append(f"{path} with Range bytes=0-3: {part.status_code}, {len(part.content)} bytes")
check("ResolvedParameters", requests.get(f"{base}/api/v1/jobs/{job_id}/params.json", timeout=30).json(), "params.json")

cancel = requests.post(f"{base}/api/v1/jobs/{job_id}/cancel", timeout=30)
check("CancelResult", cancel.json(), "a cancel answer")
if cancel.json().get("cancelled") != "already_finished":
    failures.append(f"cancelling a finished job: {cancel.text}")

json.dump({"image_id": image_id, "job_id": job_id}, open(f"{work}/ids.json", "w"))
if failures:
    sys.exit("setup job checks failed:\n  " + "\n  ".join(failures))
PY
stop_server

# --- 2. schemathesis, no worker
start_server fuzz --no-worker --queue-limit 20
echo "== server (no worker) at $base"
read -r image_id job_id < <("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["image_id"], d["job_id"])' "$work/ids.json")
# A second finished job (cancelled while queued) is what DELETE may remove; the succeeded one stays for its outputs.
other_id=$(curl -fsS -X POST "$base/api/v1/jobs" -H 'Content-Type: application/json' \
    -d "{\"image_id\":\"$image_id\",\"prompt\":\"to be deleted\",\"width\":32,\"height\":32,\"frames\":2,\"steps\":2}" \
    | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["id"])')
curl -fsS -X POST "$base/api/v1/jobs/$other_id/cancel" >/dev/null

cat > "$work/schemathesis.toml" <<TOML
# Known ids, offered about half the time; the rest are generated (and answered 404).
[dictionaries]
images = { values = ["$image_id"] }
jobs = { values = ["$job_id"] }
deletable = { values = ["$other_id"] }

[parameters]
"path.image_id" = { dictionary = "images", probability = 0.5 }
"body.image_id" = { dictionary = "images", probability = 0.7 }
"path.id" = { dictionary = "jobs", probability = 0.5 }

[[operations]]
include-operation-id = "deleteJob"
parameters = { "path.id" = { dictionary = "deletable", probability = 0.5 } }

# A queued job's stream stays open: read two events at most.
[[operations]]
include-operation-id = "jobEvents"
max-stream-events = 2
request-timeout = 5
TOML

seed_args=()
[ -n "${FUZZ_SEED:-}" ] && seed_args=(--seed "$FUZZ_SEED")
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,unsupported_method,allow_header_conformance
echo "== schemathesis run against $base (max $MAX_EXAMPLES examples per operation)"
# One worker: schemathesis's coverage phase is not thread-safe on Python 3.11 (hypothesis AST errors).
# The served document, run from its downloaded copy: schemathesis skips the operation that serves the
# document it loaded, and GET /openapi.yaml is one of ours.
failed=()
"$VENV/bin/schemathesis" --config-file "$work/schemathesis.toml" run "$work/openapi.yaml" --url "$base" \
    --checks "$checks" --max-examples "$MAX_EXAMPLES" --workers 1 --request-timeout 20 \
    --no-color --report junit --report-dir "$work/report" "${seed_args[@]}" || failed+=(schemathesis)
if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "error: the server died during fuzzing; the end of its log:" >&2
    grep -E "Fatal error|runtime failure| at /.*/Sources/" "$work/server-fuzz.log" | head -n 12 >&2 || tail -n 20 "$work/server-fuzz.log" >&2
    failed+=(server-crash)
    start_server fuzz-again --no-worker --queue-limit 20
fi

# Hostile values a random search seldom draws (extreme numbers, non-ASCII multipart headers, ranges at
# Int.max): each must be a documented 4xx (or success), never a 5xx or a dead server.
echo "== edge cases"
cat > "$work/edge_cases.py" <<'PY'
"""Sends the edge cases from number START on; exits 3 after one the server did not survive, printing its number last."""
import json, sys
import jsonschema_rs, requests, yaml

base, work, image_id, start = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
document = yaml.safe_load(open(f"{work}/openapi.yaml"))
error_schema = dict(document, **{"$ref": "#/components/schemas/Error"})
error_validator = jsonschema_rs.Draft202012Validator(error_schema)
boundary = "kinemaEdge"

def multipart(header_name):
    return (f"--{boundary}\r\n".encode() + header_name + b': form-data; name="file"\r\n\r\nxx\r\n' + f"--{boundary}--\r\n".encode(),
            {"Content-Type": f"multipart/form-data; boundary={boundary}"})

plan = lambda **fields: ("POST", "/api/v1/plan", json.dumps({"prompt": "edge", **fields}).encode(), {"Content-Type": "application/json"})
big = "9223372036854775807"
probes = [
    (plan(guidance=1e300), {422}), (plan(guidance=-1e19), {422}), (plan(guidance=1e19), {422}),
    (plan(width=9.3e18), {422}), (plan(width=-9223372036854775808), {422}), (plan(seed=1e19), {422}),
    (plan(seed=int(big) + 1), {422}), (plan(frames=2**64), {422}),
    (plan(memory_budget=big), {200, 422}), (plan(memory_budget="1e30GiB"), {200, 422}),
    (plan(memory_budget="99999999999999TiB"), {200, 422}), (plan(memory_budget="0.5"), {200, 422}),
    (plan(prompt="x" * 1001), {422}), (plan(prompt="a\u0000b"), {422}), (plan(negative_prompt="y" * 1001), {422}),
    (("POST", "/api/v1/plan", b"[" * 20000 + b"]" * 20000, {"Content-Type": "application/json"}), {400}),
    (("POST", "/api/v1/uploads", *multipart(b"Content-Disposition\xc2\x86")), {400, 415, 422}),
    (("POST", "/api/v1/uploads", *multipart(b"\xff")), {400, 415, 422}),
    (("POST", "/api/v1/jobs", *multipart(b"\xc3\xa9")), {400, 415, 422}),
    (("POST", "/api/v1/jobs", json.dumps({"image_id": image_id, "prompt": "edge"}).encode(),
      {"Content-Type": "application/json", "Idempotency-Key": "k" * 256}), {400}),
]
for path in (f"/api/v1/uploads/{image_id}", "/openapi.yaml", "/"):
    for value in (f"bytes=0-{big}", f"bytes={big}-", f"bytes=-{big}", f"bytes={big}-{big}", "bytes=-9223372036854775808", "bytes=0-0,-1"):
        probes.append((("GET", path, None, {"Range": value}), {206, 416}))

failures = []
for number, ((method, path, body, headers), allowed) in enumerate(probes):
    if number < start:
        continue
    label = f"{method} {path} {headers if method == 'GET' else (body[:60] if body else b'')!r}"
    try:
        answer = requests.request(method, base + path, data=body, headers=headers, timeout=60)
    except requests.RequestException as error:
        print(f"   {label}: no answer ({error.__class__.__name__}): the server crashed")
        print(number)
        sys.exit(3)
    if answer.status_code not in allowed:
        failures.append(f"{label}: {answer.status_code} (expected {sorted(allowed)}): {answer.text[:200]}")
    elif answer.status_code >= 400:
        try:
            errors = [e.message for e in error_validator.iter_errors(answer.json())]
        except ValueError:
            errors = ["not JSON"]
        if errors:
            failures.append(f"{label}: the error body is not the documented shape: {errors[:2]}")
print(f"   requests {start}-{len(probes) - 1}: {len(failures)} failed")
if failures:
    sys.exit("edge cases failed:\n  " + "\n  ".join(failures))
PY
next=0
for restart in $(seq 1 20); do
    set +e
    "$PY" "$work/edge_cases.py" "$base" "$work" "$image_id" "$next" | tee "$work/edge.out"
    status=${PIPESTATUS[0]}
    set -e
    [ "$status" = 0 ] && break
    [ "$restart" = 1 ] && failed+=(edge-cases)
    [ "$status" = 3 ] || break
    # The server crashed: show why, start it again and go on after the request that killed it.
    grep -E "Fatal error|runtime failure" "$work/server-$server_name.log" | head -n 2 >&2 || true
    grep -E " at /.*/Sources/Kinema" "$work/server-$server_name.log" | head -n 3 >&2 || true
    next=$(( $(tail -n 1 "$work/edge.out") + 1 ))
    stop_server
    start_server "edge-$restart" --no-worker --queue-limit 20
done
stop_server
if [ ${#failed[@]} -gt 0 ]; then
    echo "error: API fuzzing failed: ${failed[*]}" >&2
    exit 1
fi

# --- 3. with an API token: every /api/v1 answer without it is a documented 401
token=fuzz-token-$RANDOM$RANDOM
start_server token --no-worker --api-token "$token"
echo "== server (API token) at $base"
"$VENV/bin/schemathesis" --config-file "$work/schemathesis.toml" run "$work/openapi.yaml" --url "$base" \
    --checks "$checks" --phases examples,fuzzing --max-examples 3 --workers 1 --request-timeout 20 --no-color "${seed_args[@]}"
status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$base/api/v1/capabilities")
[ "$status" = 200 ] || { echo "error: the right token was answered $status" >&2; exit 1; }
# A job of its own (the fuzzing above may have deleted the first one); it stays queued (no worker), so
# its event stream stays open: two seconds of it are enough to see the answer's status.
token_job=$(curl -s -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d "{\"image_id\":\"$image_id\",\"prompt\":\"token check\"}" "$base/api/v1/jobs" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
status=$(curl -s -m 2 -o /dev/null -w '%{http_code}' "$base/api/v1/jobs/$token_job/events?token=$token" || true)
[ "$status" = 200 ] || { echo "error: the event stream with ?token= was answered $status" >&2; exit 1; }
status=$(curl -s -o /dev/null -w '%{http_code}' "$base/api/v1/capabilities?token=$token")
[ "$status" = 401 ] || { echo "error: ?token= outside the event stream was answered $status, not 401" >&2; exit 1; }
stop_server
echo "== API fuzzing passed"
