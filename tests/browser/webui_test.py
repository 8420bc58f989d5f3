#!/usr/bin/env python3
"""Drives Kinema's WebUI in headless Chromium against a running `kinema serve`.

Uploads an image, picks a preset, sets the size with the advanced settings, checks the crop
preview and the prediction, generates, follows the progress, waits until the video plays, then
checks the history ("reuse settings" included) and the page at 360 px wide. Saves screenshots.
Fails (exit status 1) when the page shows an error, logs a JavaScript error, or the video does
not play within the timeout.

    python webui_test.py --url http://127.0.0.1:7860 --image in.png --screenshot out.png
"""
import argparse
import os
import struct
import sys
import tempfile
import time
import zlib

from selenium import webdriver
from selenium.common.exceptions import JavascriptException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait


class PageError(Exception):
    pass


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the server's base URL")
    parser.add_argument("--image", help="the picture to upload (default: a generated 320x200 PNG)")
    parser.add_argument("--prompt", default="the camera slowly zooms in")
    parser.add_argument("--preset", default="recommended", help="the preset chip to click")
    parser.add_argument("--width", type=int, help="width to set in the advanced settings")
    parser.add_argument("--height", type=int, help="height to set in the advanced settings")
    parser.add_argument("--frames", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--seed", help="seed to type (blank: random)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the video")
    parser.add_argument("--screenshot", default="/tmp/kinema-webui.png")
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    parser.add_argument("--chromedriver", default=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    return parser.parse_args()


def write_test_png(path, width=320, height=200):
    """A wide gradient with a frame, so the crop preview's centre cut is visible."""
    rows = []
    for y in range(height):
        row = bytearray([0])
        for x in range(width):
            edge = x < 6 or y < 6 or x >= width - 6 or y >= height - 6
            row += bytes((250, 250, 250) if edge else (x * 255 // width, y * 255 // height, 160))
        rows.append(bytes(row))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    with open(path, "wb") as file:
        file.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows)))
                   + chunk(b"IEND", b""))


def make_driver(args):
    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--autoplay-policy=no-user-gesture-required", "--window-size=1280,1000", "--mute-audio"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=args.chromedriver), options=options)


def log(message):
    print("[webui-test] " + message, flush=True)


def check_no_error(driver):
    """Raises PageError when the page shows its error banner."""
    shown = driver.execute_script(
        "const e = document.getElementById('error');"
        "return e && !e.hidden && e.offsetParent !== null ? e.innerText : null;")
    if shown:
        raise PageError("the page shows an error: " + " ".join(shown.split()))


def wait_for(driver, what, predicate, timeout):
    """Polls predicate() until truthy, failing early when the page shows an error."""
    deadline = time.monotonic() + timeout
    while True:
        check_no_error(driver)
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutException("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(0.2)


def by_id(driver, element_id):
    return driver.find_element(By.ID, element_id)


def set_number(driver, name, value):
    """Types a value into a setting's number box, as a user would, and leaves the box."""
    box = by_id(driver, name + "-num")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(value))
    box.send_keys(Keys.TAB)
    shown = box.get_attribute("value")
    if float(shown) != float(value):
        raise PageError("%s shows %s after typing %s (outside the model's range?)" % (name, shown, value))
    slider = by_id(driver, name).get_attribute("value")
    if float(slider) != float(value):
        raise PageError("the %s slider shows %s, the box %s" % (name, slider, value))


def browser_errors(driver):
    """JavaScript errors and failed requests the browser logged."""
    try:
        entries = driver.get_log("browser")
    except Exception:  # noqa: BLE001 - logs are optional in some drivers
        return []
    return [entry["message"] for entry in entries if entry.get("level") == "SEVERE"]


def run(driver, args):
    url = args.url.rstrip("/") + "/"
    driver.get(url)
    wait_for(driver, "the page to load the server's capabilities",
             lambda: driver.execute_script("return document.body.dataset.ready") == "true", 60)
    log("page loaded: " + driver.title)

    # Upload through the file picker; the crop preview appears at once, the image id after the upload.
    by_id(driver, "file-input").send_keys(os.path.abspath(args.image))
    image_id = wait_for(driver, "the upload to finish",
                        lambda: by_id(driver, "dropzone").get_attribute("data-image-id"), 60)
    log("uploaded, image_id " + image_id)

    by_id(driver, "prompt").send_keys(args.prompt)

    chip = driver.find_element(By.CSS_SELECTOR, '[data-testid="preset-%s"]' % args.preset)
    chip.click()
    if chip.get_attribute("aria-pressed") != "true":
        raise PageError("the preset %s is not shown as selected after clicking it" % args.preset)
    log("preset %s: %s" % (args.preset, " ".join(chip.text.split())))

    driver.find_element(By.CSS_SELECTOR, "#advanced summary").click()
    for name in ("width", "height", "frames", "steps"):
        value = getattr(args, name)
        if value is not None:
            set_number(driver, name, value)
    if args.seed:
        by_id(driver, "seed").send_keys(args.seed)
    width = int(float(by_id(driver, "width-num").get_attribute("value")))
    height = int(float(by_id(driver, "height-num").get_attribute("value")))

    # The crop preview is drawn at the chosen size.
    canvas = by_id(driver, "crop-canvas")
    wait_for(driver, "the crop preview at %dx%d" % (width, height),
             lambda: canvas.is_displayed() and canvas.get_attribute("width") == str(width)
             and canvas.get_attribute("height") == str(height), 10)
    log("crop preview %dx%d: %s" % (width, height, by_id(driver, "crop-caption").text))

    # The prediction for these settings (debounced): it must exist and say the request fits.
    def plan_ready():
        fits = by_id(driver, "plan").get_attribute("data-fits")
        state = by_id(driver, "plan-state").text
        return fits if fits and "updating" not in state else None
    fits = wait_for(driver, "the prediction", plan_ready, 60)
    memory, seconds = by_id(driver, "plan-memory").text, by_id(driver, "plan-time").text
    log("prediction: fits=%s, peak %s, time %s" % (fits, memory, seconds))
    if fits != "true" or memory in ("", "–"):
        raise PageError("the prediction does not show a fitting plan: fits=%s memory=%r warning=%r"
                        % (fits, memory, by_id(driver, "plan-warning").text))

    by_id(driver, "generate").click()
    job_id = wait_for(driver, "the job to be accepted",
                      lambda: by_id(driver, "current").is_displayed() and by_id(driver, "current").get_attribute("data-job-id"), 30)
    log("job " + job_id + " accepted")

    seen = set()
    video = by_id(driver, "video")

    def video_plays():
        status = by_id(driver, "job-status").text
        progress = " ".join(t for t in (by_id(driver, "progress-phase").text, by_id(driver, "progress-step").text,
                                        by_id(driver, "progress-eta").text) if t)
        line = status + (": " + progress if progress else "")
        if line not in seen:
            seen.add(line)
            log("  " + line)
        if status in ("failed", "cancelled"):
            raise PageError("the job ended " + status + ": " + by_id(driver, "job-message").text)
        state = driver.execute_script(
            "const v = arguments[0]; return v.hidden ? null : "
            "{ready: v.readyState, time: v.currentTime, paused: v.paused, error: v.error && v.error.code, "
            " width: v.videoWidth, height: v.videoHeight, src: v.currentSrc};", video)
        if state and state["error"]:
            raise PageError("the video element failed to load %s (MediaError %s)" % (state["src"], state["error"]))
        if state and state["ready"] >= 2 and not state["paused"] and state["time"] > 0:
            return state
        return None

    state = wait_for(driver, "the video to play", video_plays, args.timeout)
    log("video plays: %dx%d, readyState %d, currentTime %.2f s, %s" % (
        state["width"], state["height"], state["ready"], state["time"], state["src"]))
    if (state["width"], state["height"]) != (width, height):
        raise PageError("the video is %dx%d, the request %dx%d" % (state["width"], state["height"], width, height))
    if not any("step " in line for line in seen):
        log("note: no step k/N was shown while running (the job may have finished between polls)")

    downloads = [a.get_attribute("data-testid") for a in driver.find_elements(By.CSS_SELECTOR, "#current-downloads a")]
    log("downloads: " + ", ".join(downloads))
    if "download-video.mp4" not in downloads:
        raise PageError("no MP4 download link for the finished job")

    # History: the finished job is listed with its thumbnail; "reuse settings" refills the form.
    card_selector = '#history [data-job-id="%s"]' % job_id
    card = wait_for(driver, "the job in the history",
                    lambda: (driver.find_elements(By.CSS_SELECTOR, card_selector) or [None])[0], 30)
    wait_for(driver, "the history card to show succeeded",
             lambda: driver.find_element(By.CSS_SELECTOR, card_selector).get_attribute("data-status") == "succeeded", 30)
    card = driver.find_element(By.CSS_SELECTOR, card_selector)
    wait_for(driver, "the history thumbnail", lambda: driver.execute_script(
        "const i = arguments[0].querySelector('.thumb img'); return i.complete && i.naturalWidth > 0;", card), 30)
    log("history: " + " | ".join(card.text.split("\n")[:3]))
    job_seed = driver.execute_script(
        "return fetch('/api/v1/jobs/' + arguments[0]).then(r => r.text())"
        ".then(t => (t.match(/\"seed\"\\s*:\\s*(\\d+)/) || [])[1]);", job_id)
    by_id(driver, "prompt").clear()
    by_id(driver, "seed").clear()
    card.find_element(By.CSS_SELECTOR, '[data-action="reuse"]').click()
    wait_for(driver, "reuse settings to fill the form",
             lambda: by_id(driver, "prompt").get_attribute("value") == args.prompt
             and by_id(driver, "seed").get_attribute("value") == job_seed
             and by_id(driver, "dropzone").get_attribute("data-image-id") == image_id, 30)
    log("reuse settings: prompt, seed %s and image filled" % job_seed)

    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(args.screenshot)
    log("screenshot " + args.screenshot)

    # Usable at 360 px: nothing wider than the viewport.
    driver.set_window_size(360, 900)
    time.sleep(0.5)
    viewport, content = driver.execute_script(
        "return [window.innerWidth, document.documentElement.scrollWidth];")
    narrow = os.path.splitext(args.screenshot)[0] + "-360.png"
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(narrow)
    log("at %d px wide the page is %d px wide; screenshot %s" % (viewport, content, narrow))
    if content > viewport + 1:
        raise PageError("at %d px wide the page scrolls sideways (%d px wide)" % (viewport, content))
    check_no_error(driver)


def main():
    args = parse_args()
    if not args.image:
        args.image = os.path.join(tempfile.mkdtemp(prefix="kinema-webui-"), "input.png")
        write_test_png(args.image)
    driver = make_driver(args)
    try:
        run(driver, args)
        errors = browser_errors(driver)
        if errors:
            raise PageError("the browser logged errors:\n  " + "\n  ".join(errors))
    except (PageError, TimeoutException, JavascriptException) as error:
        failed = os.path.splitext(args.screenshot)[0] + "-failed.png"
        try:
            driver.save_screenshot(failed)
            log("screenshot of the failure: " + failed)
            for message in browser_errors(driver):
                log("browser: " + message)
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass
        print("FAIL: %s" % error, file=sys.stderr)
        return 1
    finally:
        driver.quit()
    print("PASS: the WebUI generated a video that plays")
    return 0


if __name__ == "__main__":
    sys.exit(main())
