#!/usr/bin/env python3
"""How much do status polls slow a running generation? (issue 5, item 8)

Starts `kinema serve` (release build) with a model, then runs N pairs of the same job (same seed and
settings): one with no client traffic, one while a poller sends RATE GET /api/v1/jobs/{id} requests per
second over one keep-alive connection. Pairs alternate which run goes first. The generation time of a job
is finished_at - started_at as the server records it. Prints each pair and the median slowdown.

    python3 tools/bench_polling.py --kinema .build/release/kinema --model Models/kinema-tiny --pairs 5
Standard library only.
"""
import argparse, http.client, json, os, random, shutil, signal, statistics, subprocess, sys, tempfile, threading, time
from datetime import datetime


def request(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.read()


def parse_time(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinema", default=".build/release/kinema")
    parser.add_argument("--model", default="Models/kinema-tiny")
    parser.add_argument("--image", help="input picture (default: a random PNG made by the server test helper is not available, so one is synthesised)")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--rate", type=float, default=200.0, help="polls per second")
    parser.add_argument("--job", default="{}", help="extra job fields as JSON, e.g. '{\"steps\": 20}'")
    args = parser.parse_args()

    data = tempfile.mkdtemp(prefix="kinema-poll-")
    log = open(os.path.join(data, "server.log"), "w+")
    server = subprocess.Popen([args.kinema, "serve", "--model", args.model, "--data-dir", data, "--port", "0"], stdout=log, stderr=log)
    try:
        port = None
        for _ in range(600):
            time.sleep(0.1)
            log.seek(0)
            text = log.read()
            if "at http://127.0.0.1:" in text:
                port = int(text.split("at http://127.0.0.1:")[1].split("/")[0])
                break
        if port is None:
            sys.exit("the server did not start:\n" + text)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        if args.image:
            image = open(args.image, "rb").read()
        else:
            image = make_png(96, 96)
        status, body = request(conn, "POST", "/api/v1/uploads", image, {"Content-Type": "image/png"})
        image_id = json.loads(body)["image_id"]
        job = {"image_id": image_id, "prompt": "the camera pans to the left", "seed": 1234}
        job.update(json.loads(args.job))

        def run(poll):
            status, body = request(conn, "POST", "/api/v1/jobs", json.dumps(job), {"Content-Type": "application/json"})
            job_id = json.loads(body)["id"]
            stop = threading.Event()
            count = [0]

            def poller():
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                interval = 1.0 / args.rate
                next_time = time.monotonic()
                while not stop.is_set():
                    request(c, "GET", f"/api/v1/jobs/{job_id}")
                    count[0] += 1
                    next_time += interval
                    delay = next_time - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
            thread = threading.Thread(target=poller) if poll else None
            if thread:
                thread.start()
            start = time.monotonic()
            while True:
                time.sleep(0.25)
                _, body = request(conn, "GET", f"/api/v1/jobs/{job_id}")
                state = json.loads(body)
                if state["status"] in ("succeeded", "failed", "cancelled"):
                    break
            stop.set()
            if thread:
                thread.join()
            if state["status"] != "succeeded":
                sys.exit(f"job failed: {state.get('error')}")
            seconds = parse_time(state["finished_at"]) - parse_time(state["started_at"])
            rate = count[0] / (time.monotonic() - start)
            return seconds, rate

        run(False)  # warm-up: loads the model files into the page cache
        ratios = []
        for pair in range(args.pairs):
            order = [False, True] if pair % 2 == 0 else [True, False]
            result = {}
            for poll in order:
                result[poll] = run(poll)
            ratio = result[True][0] / result[False][0]
            ratios.append(ratio)
            print(f"pair {pair + 1}: quiet {result[False][0]:.2f} s, polled {result[True][0]:.2f} s at {result[True][1]:.0f} polls/s -> {ratio:.3f}x", flush=True)
        print(f"median slowdown over {args.pairs} pairs: {statistics.median(ratios):.3f}x ({(statistics.median(ratios) - 1) * 100:+.1f}%)")
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(data, ignore_errors=True)


def make_png(width, height):
    import struct, zlib
    rng = random.Random(7)
    raw = b"".join(b"\x00" + bytes(rng.randrange(256) for _ in range(width * 3)) for _ in range(height))
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xffffffff)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


if __name__ == "__main__":
    main()
