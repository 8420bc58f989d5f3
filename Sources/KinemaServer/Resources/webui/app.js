// Kinema WebUI: plain JavaScript against the HTTP API of /api/v1 (no framework, no build step).
"use strict";

(() => {
  const API = "/api/v1";
  const PARAMS = ["width", "height", "frames", "fps", "steps", "guidance"];
  const PARAM_LABELS = { width: "Width", height: "Height", frames: "Frames", fps: "FPS", steps: "Steps", guidance: "Guidance" };
  const PARAM_UNITS = { width: "px", height: "px", frames: "", fps: "", steps: "", guidance: "" };
  const PHASES = { encode: "Encoding image and prompt", denoise: "Denoising", decode: "Decoding frames", encode_video: "Writing the video" };
  const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
  const MAX_SEED = (1n << 63n) - 1n;
  const HISTORY_PAGE = 12;
  // The plan endpoint needs a prompt, but memory and time do not depend on its words.
  const PLAN_PLACEHOLDER_PROMPT = "prediction";

  const $ = (id) => document.getElementById(id);

  const state = {
    caps: null,
    model: null,          // the selected entry of caps.models
    preset: null,         // name of the selected preset, null when the values were edited
    image: null,          // {id, width, height, bitmap, name}
    upload: null,         // the upload in flight (a promise of the image id)
    uploadSeq: 0,
    job: null,            // the job shown in the "current" panel
    events: null,         // its EventSource
    pollTimer: null,
    planTimer: null,
    planSeq: 0,
    planAbort: null,
    historyCursor: null,
    mediaCache: new Map(),
  };

  // ---------------------------------------------------------------------------------------------
  // Token and requests

  const token = (() => {
    const params = new URLSearchParams(location.search);
    const fromURL = params.get("token");
    if (fromURL) {
      try { localStorage.setItem("kinema.token", fromURL); } catch (_) { /* storage may be off */ }
      params.delete("token");
      const rest = params.toString();
      history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
      return fromURL;
    }
    try { return localStorage.getItem("kinema.token") || ""; } catch (_) { return ""; }
  })();

  class ApiError extends Error {
    constructor(status, code, message, field) {
      super(message);
      this.status = status;
      this.code = code;
      this.field = field || null;
    }
  }

  // Seeds go up to 2^63-1, past the integers a JavaScript number holds exactly: keep them as
  // strings when reading JSON (a key "seed" can only appear unescaped as an object key).
  function parseJSON(text) {
    return JSON.parse(text.replace(/"seed"\s*:\s*(-?\d+)/g, '"seed":"$1"'));
  }

  // JSON for a request body; `seed` (a decimal string) is written as a JSON integer.
  function bodyJSON(params) {
    const { seed, ...rest } = params;
    let text = JSON.stringify(rest);
    if (seed !== undefined && seed !== null && seed !== "") {
      text = text.slice(0, -1) + (text.length > 2 ? "," : "") + '"seed":' + String(seed) + "}";
    }
    return text;
  }

  function authHeaders(extra) {
    const headers = Object.assign({}, extra || {});
    if (token) headers["Authorization"] = "Bearer " + token;
    return headers;
  }

  async function api(method, path, { json, form, headers, signal } = {}) {
    const init = { method, headers: authHeaders(headers), signal };
    if (json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = bodyJSON(json);
    } else if (form !== undefined) {
      init.body = form;
    }
    let response;
    try {
      response = await fetch(API + path, init);
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, "network", "Cannot reach the Kinema server (" + error.message + ").");
    }
    const text = await response.text();
    let body = null;
    if (text) {
      try { body = parseJSON(text); } catch (_) { body = null; }
    }
    if (!response.ok) {
      const error = body && body.error;
      if (error) throw new ApiError(response.status, error.code || "error", error.message || response.statusText, error.field);
      throw new ApiError(response.status, "http_" + response.status,
        "The server answered " + response.status + " " + response.statusText + ".");
    }
    return body;
  }

  // A URL the page can put in <video>/<img>/<a>: the path itself, or with a token (which such
  // elements cannot send as a header) a blob fetched with it.
  async function mediaURL(path) {
    if (!token) return path;
    if (state.mediaCache.has(path)) return state.mediaCache.get(path);
    const promise = fetch(path, { headers: authHeaders() }).then((response) => {
      if (!response.ok) throw new ApiError(response.status, "http_" + response.status, "Could not load " + path + ".");
      return response.blob();
    }).then((blob) => URL.createObjectURL(blob));
    state.mediaCache.set(path, promise);
    promise.catch(() => state.mediaCache.delete(path));
    return promise;
  }

  // ---------------------------------------------------------------------------------------------
  // Errors

  const FIELD_ELEMENTS = {
    prompt: "prompt", negative_prompt: "negative-prompt", seed: "seed", memory_budget: "memory-budget",
    image_id: "dropzone", file: "dropzone", model: "model", allow_degrade: "allow-degrade",
    width: "width-num", height: "height-num", frames: "frames-num", fps: "fps-num", steps: "steps-num", guidance: "guidance-num",
  };

  function showError(error, title) {
    const box = $("error");
    let message = error && error.message ? error.message : String(error);
    if (error instanceof ApiError) {
      if (error.status === 401) message += " Enter the server's API token below (API token), or open the page with ?token=….";
      if (error.code === "queue_full") message += " Try again when a job has finished.";
      if (error.code === "does_not_fit") message += " Allow degrading (Advanced settings) or choose a smaller size.";
    }
    $("error-title").textContent = title || "Error";
    $("error-text").textContent = message;
    box.dataset.code = error && error.code ? error.code : "";
    box.dataset.source = "";
    box.hidden = false;
    markField(error && error.field);
  }

  function clearError() {
    $("error").hidden = true;
    $("error-text").textContent = "";
    markField(null);
  }

  function markField(field) {
    document.querySelectorAll(".invalid").forEach((element) => {
      element.classList.remove("invalid");
      element.removeAttribute("aria-invalid");
    });
    const id = field && FIELD_ELEMENTS[field];
    if (!id || !$(id)) return;
    const element = $(id);
    element.classList.add("invalid");
    element.setAttribute("aria-invalid", "true");
    if (PARAMS.some((name) => id === name + "-num")) $("advanced").open = true;
    if (["seed", "memory-budget", "allow-degrade"].includes(id)) $("advanced").open = true;
  }

  // ---------------------------------------------------------------------------------------------
  // Formatting

  function formatBytes(bytes) {
    if (bytes === null || bytes === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let value = Number(bytes);
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return (unit === 0 ? value.toFixed(0) : value.toFixed(value < 10 ? 2 : 1)) + " " + units[unit];
  }

  function formatSeconds(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + " s";
    const m = Math.floor(s / 60);
    if (m < 60) return m + " min " + String(s % 60).padStart(2, "0") + " s";
    return Math.floor(m / 60) + " h " + String(m % 60).padStart(2, "0") + " min";
  }

  function formatNumber(value) {
    const number = Number(value);
    return Number.isInteger(number) ? String(number) : String(Math.round(number * 100) / 100);
  }

  function formatTime(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    if (isNaN(date)) return iso;
    return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  }

  function describeParams(params) {
    if (!params) return "";
    const parts = [];
    if (params.width && params.height) parts.push(params.width + "×" + params.height);
    if (params.frames) parts.push(params.frames + " frames" + (params.fps ? " @ " + params.fps + " fps" : ""));
    if (params.steps) parts.push(params.steps + " steps");
    if (params.guidance !== undefined && params.guidance !== null) parts.push("guidance " + formatNumber(params.guidance));
    return parts.join(" · ");
  }

  // ---------------------------------------------------------------------------------------------
  // Capabilities, models, presets, sliders

  function rangesOf(model) {
    const ranges = Object.assign({}, state.caps.ranges || {});
    if (model && model.ranges) Object.assign(ranges, model.ranges);
    return ranges;
  }

  function inRange(range, value) {
    if (!range) return true;
    if (value < range.min - 1e-9 || value > range.max + 1e-9) return false;
    return true;
  }

  function presetsFor(model) {
    const ranges = rangesOf(model);
    // The server lists each model's presets by name; else keep those inside the model's ranges.
    const named = model && Array.isArray(model.presets) ? new Set(model.presets) : null;
    const presets = (state.caps.presets || []).filter((preset) => preset.name !== "recommended"
      && (named ? named.has(preset.name) : PARAMS.every((name) => inRange(ranges[name], Number(preset[name])))));
    const recommended = model && model.recommended
      ? Object.assign({ name: "recommended", label: "Recommended" }, model.recommended, { name: "recommended" })
      : (state.caps.presets || []).find((preset) => preset.name === "recommended");
    if (recommended) {
      const own = (state.caps.presets || []).find((preset) => preset.name === "recommended");
      presets.push(Object.assign({}, recommended, { label: (model && model.name === state.caps.default_model && own && own.label) || "Recommended" }));
    }
    return presets;
  }

  function buildSliders() {
    const container = $("sliders");
    container.textContent = "";
    for (const name of PARAMS) {
      const row = document.createElement("div");
      row.className = "slider-row";
      row.innerHTML =
        '<label class="label" for="' + name + '-num">' + PARAM_LABELS[name] + "</label>" +
        '<input type="range" id="' + name + '" data-testid="' + name + '-slider" aria-label="' + PARAM_LABELS[name] + '">' +
        '<span class="num"><input type="number" id="' + name + '-num" data-testid="' + name + '" inputmode="decimal">' +
        '<span class="unit muted small">' + PARAM_UNITS[name] + "</span></span>" +
        '<span class="range-hint muted small" id="' + name + '-hint"></span>';
      container.appendChild(row);
      const slider = row.querySelector('input[type="range"]');
      const number = row.querySelector('input[type="number"]');
      slider.addEventListener("input", () => { number.value = slider.value; settingsEdited(); });
      number.addEventListener("input", () => {
        if (number.value !== "" && !isNaN(Number(number.value))) slider.value = number.value;
        settingsEdited();
      });
      number.addEventListener("change", () => {
        const value = clampToRange(name, Number(number.value));
        number.value = formatNumber(value);
        slider.value = value;
        settingsEdited();
      });
    }
  }

  function applyRanges(model) {
    const ranges = rangesOf(model);
    for (const name of PARAMS) {
      const range = ranges[name] || { min: 1, max: 100, step: 1 };
      for (const input of [$(name), $(name + "-num")]) {
        input.min = range.min;
        input.max = range.max;
        input.step = range.step;
      }
      $(name + "-hint").textContent = formatNumber(range.min) + "–" + formatNumber(range.max) +
        (range.step !== 1 ? ", step " + formatNumber(range.step) : "");
    }
  }

  function clampToRange(name, value) {
    const range = rangesOf(state.model)[name];
    if (!range || isNaN(value)) return isNaN(value) ? (range ? range.min : 0) : value;
    let clamped = Math.min(range.max, Math.max(range.min, value));
    if (range.step > 0) clamped = range.min + Math.round((clamped - range.min) / range.step) * range.step;
    clamped = Math.min(range.max, clamped);
    return Math.round(clamped * 1000) / 1000;
  }

  function setParam(name, value) {
    const clamped = clampToRange(name, Number(value));
    $(name).value = clamped;
    $(name + "-num").value = formatNumber(clamped);
  }

  function currentValues() {
    const values = {};
    for (const name of PARAMS) values[name] = Number($(name + "-num").value);
    return values;
  }

  function renderPresets() {
    const container = $("presets");
    container.textContent = "";
    for (const preset of presetsFor(state.model)) {
      const chip = document.createElement("button");
      chip.type = "button";
      chip.className = "chip";
      chip.dataset.preset = preset.name;
      chip.dataset.testid = "preset-" + preset.name;
      chip.setAttribute("aria-pressed", String(preset.name === state.preset));
      const title = document.createElement("span");
      title.textContent = shortPresetLabel(preset);
      const detail = document.createElement("span");
      detail.className = "chip-detail";
      detail.textContent = preset.width + "×" + preset.height + " · " + preset.frames + "f";
      chip.append(title, detail);
      chip.title = (preset.label || preset.name) + " — " + describeParams(preset);
      chip.addEventListener("click", () => selectPreset(preset.name));
      container.appendChild(chip);
    }
    const custom = document.createElement("span");
    custom.className = "chip custom";
    custom.id = "preset-custom";
    custom.textContent = "Custom";
    custom.hidden = state.preset !== null;
    container.appendChild(custom);
  }

  function shortPresetLabel(preset) {
    const label = preset.label || preset.name;
    const short = label.replace(/\s*\(.*\)\s*$/, "");
    return short.startsWith("Recommended") ? "Recommended" : short;
  }

  function selectPreset(name, { quiet } = {}) {
    const preset = presetsFor(state.model).find((candidate) => candidate.name === name);
    if (!preset) return false;
    for (const param of PARAMS) setParam(param, preset[param]);
    state.preset = name;
    syncPresetChips();
    if (!quiet) settingsChanged();
    return true;
  }

  function syncPresetChips() {
    document.querySelectorAll("#presets .chip[data-preset]").forEach((chip) => {
      chip.setAttribute("aria-pressed", String(chip.dataset.preset === state.preset));
    });
    const custom = $("preset-custom");
    if (custom) custom.hidden = state.preset !== null;
    $("settings-summary").textContent = "— " + describeParams(currentValues());
  }

  // The values were edited by hand: keep the preset only while they still equal it.
  function settingsEdited() {
    if (state.preset) {
      const preset = presetsFor(state.model).find((candidate) => candidate.name === state.preset);
      const values = currentValues();
      if (!preset || PARAMS.some((name) => Number(preset[name]) !== values[name])) state.preset = null;
    }
    syncPresetChips();
    settingsChanged();
  }

  function selectModel(name) {
    const model = (state.caps.models || []).find((candidate) => candidate.name === name) || (state.caps.models || [])[0] || null;
    state.model = model;
    if (model) $("model").value = model.name;
    applyRanges(model);
    state.preset = null;
    renderPresets();
    if (!selectPreset("recommended", { quiet: true })) {
      const first = presetsFor(model)[0];
      if (first) selectPreset(first.name, { quiet: true });
    }
    syncPresetChips();
    settingsChanged();
  }

  async function loadCapabilities() {
    const caps = await api("GET", "/capabilities");
    state.caps = caps;
    $("version").textContent = caps.version ? "Kinema " + caps.version : "Kinema";
    if (caps.device) {
      const parts = [String(caps.device.kind || "").toUpperCase()];
      if (caps.device.threads) parts.push(caps.device.threads + " threads");
      if (caps.device.memory_bytes) parts.push(formatBytes(caps.device.memory_bytes) + " memory");
      if (caps.memory_budget) parts.push("budget " + caps.memory_budget);
      $("device-info").textContent = parts.filter(Boolean).join(" · ");
    }
    const select = $("model");
    select.textContent = "";
    for (const model of caps.models || []) {
      const option = document.createElement("option");
      option.value = model.name;
      option.textContent = model.name;
      select.appendChild(option);
    }
    $("model-field").hidden = (caps.models || []).length < 2;
    selectModel(caps.default_model);
  }

  // ---------------------------------------------------------------------------------------------
  // Image upload and crop preview

  function setupDropzone() {
    const zone = $("dropzone");
    const input = $("file-input");
    zone.addEventListener("click", (event) => {
      if (event.target !== input) input.click();
    });
    zone.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); input.click(); }
    });
    input.addEventListener("change", () => {
      if (input.files && input.files[0]) useFile(input.files[0]);
    });
    for (const type of ["dragenter", "dragover"]) {
      zone.addEventListener(type, (event) => {
        event.preventDefault();
        zone.classList.add("dragging");
      });
    }
    for (const type of ["dragleave", "drop"]) {
      zone.addEventListener(type, (event) => {
        event.preventDefault();
        zone.classList.remove("dragging");
      });
    }
    zone.addEventListener("drop", (event) => {
      const file = event.dataTransfer && event.dataTransfer.files && event.dataTransfer.files[0];
      if (file) useFile(file);
    });
    // Dropping outside the zone must not navigate away from the page.
    window.addEventListener("dragover", (event) => event.preventDefault());
    window.addEventListener("drop", (event) => event.preventDefault());
    document.addEventListener("paste", (event) => {
      const items = event.clipboardData ? Array.from(event.clipboardData.files || []) : [];
      const file = items.find((candidate) => candidate.type.startsWith("image/"));
      if (file) { event.preventDefault(); useFile(file); }
    });
  }

  function setUploadState(text, kind) {
    const element = $("upload-state");
    element.textContent = text || "";
    element.className = "upload-state small" + (kind ? " " + kind : "");
    element.hidden = !text;
  }

  async function useFile(file) {
    clearError();
    if (file.type && !file.type.startsWith("image/")) {
      showError(new ApiError(415, "unsupported_media_type", file.name + " is not an image (" + file.type + ")."), "Cannot use this file");
      return;
    }
    const limit = state.caps && state.caps.upload_limit_bytes;
    if (limit && file.size > limit) {
      showError(new ApiError(413, "too_large", file.name + " is " + formatBytes(file.size) + "; the server accepts images up to " + formatBytes(limit) + "."), "Cannot use this file");
      return;
    }
    let bitmap;
    try {
      bitmap = await loadBitmap(file);
    } catch (_) {
      showError(new ApiError(415, "not_an_image", "The browser cannot read " + file.name + " as an image."), "Cannot use this file");
      return;
    }
    const seq = ++state.uploadSeq;
    state.image = { id: null, width: bitmap.width, height: bitmap.height, bitmap, name: file.name };
    drawCrop();
    setUploadState("Uploading " + file.name + " …", "busy");
    const form = new FormData();
    form.append("file", file, file.name || "image");
    const upload = api("POST", "/uploads", { form }).then((result) => {
      if (seq !== state.uploadSeq) return null;
      state.image.id = result.image_id;
      state.image.width = result.width || state.image.width;
      state.image.height = result.height || state.image.height;
      setUploadState("Uploaded · " + state.image.width + "×" + state.image.height, "ok");
      $("dropzone").dataset.imageId = result.image_id;
      drawCrop();
      settingsChanged();
      return result.image_id;
    }, (error) => {
      if (seq !== state.uploadSeq) return null;
      state.image = null;
      drawCrop();
      setUploadState("", "");
      showError(error, "Upload failed");
      throw error;
    });
    upload.catch(() => {});
    state.upload = upload;
  }

  function loadBitmap(blob) {
    return new Promise((resolve, reject) => {
      const url = URL.createObjectURL(blob);
      const image = new Image();
      image.onload = () => resolve(image);
      image.onerror = () => { URL.revokeObjectURL(url); reject(new Error("not an image")); };
      image.src = url;
    });
  }

  // I2VGen-XL's input crop (diffusers' _center_crop_wide): scale the picture by the smaller of the
  // two ratios so it covers width×height (floor of size / scale), then cut the centre.
  function cropGeometry(sourceWidth, sourceHeight, width, height) {
    const scale = Math.min(sourceWidth / width, sourceHeight / height);
    const resizedWidth = Math.round(Math.floor(sourceWidth / scale));
    const resizedHeight = Math.round(Math.floor(sourceHeight / scale));
    const x1 = Math.floor((resizedWidth - width) / 2);
    const y1 = Math.floor((resizedHeight - height) / 2);
    const fx = resizedWidth / sourceWidth;
    const fy = resizedHeight / sourceHeight;
    return { resizedWidth, resizedHeight, sx: x1 / fx, sy: y1 / fy, sw: width / fx, sh: height / fy };
  }

  function drawCrop() {
    const figure = $("crop");
    const hint = $("dropzone-hint");
    const image = state.image;
    if (!image || !image.bitmap) {
      figure.hidden = true;
      hint.hidden = false;
      $("image-info").textContent = "";
      $("dropzone").classList.remove("has-image");
      return;
    }
    const { width, height } = currentValues();
    if (!(width > 0 && height > 0)) return;
    const canvas = $("crop-canvas");
    canvas.width = width;
    canvas.height = height;
    // Shown at a readable size whatever the resolution; small sizes keep their pixels visible.
    canvas.style.setProperty("--aspect", String(width / height));
    canvas.classList.toggle("pixelated", Math.max(width, height) < 256);
    const context = canvas.getContext("2d");
    context.imageSmoothingEnabled = true;
    context.imageSmoothingQuality = "high";
    const geometry = cropGeometry(image.bitmap.naturalWidth || image.width, image.bitmap.naturalHeight || image.height, width, height);
    context.clearRect(0, 0, width, height);
    context.drawImage(image.bitmap, geometry.sx, geometry.sy, geometry.sw, geometry.sh, 0, 0, width, height);
    figure.hidden = false;
    hint.hidden = true;
    $("dropzone").classList.add("has-image");
    $("image-info").textContent = (image.name ? image.name + " · " : "") + image.width + "×" + image.height;
    $("crop-caption").textContent = "What the model sees: " + width + "×" + height +
      " (scaled to " + geometry.resizedWidth + "×" + geometry.resizedHeight + ", centre cropped). Click or drop to replace.";
  }

  async function useStoredImage(imageId) {
    const seq = ++state.uploadSeq;
    setUploadState("Loading the stored image …", "busy");
    const path = API + "/uploads/" + encodeURIComponent(imageId);
    const response = await fetch(path, { headers: authHeaders() }).catch(() => null);
    if (seq !== state.uploadSeq) return;
    if (!response || !response.ok) {
      setUploadState("", "");
      if (!state.image) drawCrop();
      throw new ApiError(response ? response.status : 0, "unknown_image",
        "The image of that job is no longer stored on the server; choose the image again.", "image_id");
    }
    const blob = await response.blob();
    const bitmap = await loadBitmap(blob);
    if (seq !== state.uploadSeq) return;
    state.image = { id: imageId, width: bitmap.naturalWidth, height: bitmap.naturalHeight, bitmap, name: "" };
    state.upload = Promise.resolve(imageId);
    $("dropzone").dataset.imageId = imageId;
    setUploadState("Stored image · " + bitmap.naturalWidth + "×" + bitmap.naturalHeight, "ok");
    drawCrop();
  }

  // ---------------------------------------------------------------------------------------------
  // Parameters and the plan

  function readSeed() {
    const text = $("seed").value.trim();
    if (text === "") return null;
    if (!/^\d+$/.test(text) || BigInt(text) > MAX_SEED) {
      throw new ApiError(0, "invalid_seed", "The seed must be a whole number from 0 to " + MAX_SEED + ", or blank for a random one.", "seed");
    }
    return BigInt(text).toString();
  }

  function requestParams({ forPlan } = {}) {
    const values = currentValues();
    const params = {};
    if (state.image && state.image.id) params.image_id = state.image.id;
    const prompt = $("prompt").value.trim();
    params.prompt = prompt || (forPlan ? PLAN_PLACEHOLDER_PROMPT : "");
    const negative = $("negative-prompt").value.trim();
    if (negative) params.negative_prompt = negative;
    if (state.model) params.model = state.model.name;
    for (const name of PARAMS) params[name] = name === "guidance" ? values[name] : Math.round(values[name]);
    if (state.preset) params.preset = state.preset;
    const budget = $("memory-budget").value.trim();
    if (budget) params.memory_budget = budget;
    if ($("allow-degrade").checked) params.allow_degrade = true;
    if (!forPlan) {
      const seed = readSeed();
      if (seed !== null) params.seed = seed;
    }
    return params;
  }

  function settingsChanged() {
    drawCrop();
    schedulePlan();
  }

  function schedulePlan() {
    if (!state.caps) return;
    clearTimeout(state.planTimer);
    $("plan-state").textContent = "updating …";
    state.planTimer = setTimeout(runPlan, 350);
  }

  async function runPlan() {
    const seq = ++state.planSeq;
    if (state.planAbort) state.planAbort.abort();
    const controller = new AbortController();
    state.planAbort = controller;
    // Values outside the model's ranges (e.g. while a number is being typed) are explained here,
    // without asking the server.
    const values = currentValues();
    const ranges = rangesOf(state.model);
    const outside = PARAMS.find((name) => !isFinite(values[name]) || !inRange(ranges[name], values[name]));
    if (outside) {
      const range = ranges[outside];
      renderPlanFailure(new ApiError(0, "out_of_range", PARAM_LABELS[outside] + " must be between " +
        formatNumber(range.min) + " and " + formatNumber(range.max) + ".", outside), { local: true });
      markField(outside);
      return;
    }
    try {
      const plan = await api("POST", "/plan", { json: requestParams({ forPlan: true }), signal: controller.signal });
      if (seq !== state.planSeq) return;
      renderPlan(plan);
      if ($("error").dataset.source === "plan") { clearError(); $("error").dataset.source = ""; }
      if ($("error").hidden) markField(null);
    } catch (error) {
      if (error.name === "AbortError" || seq !== state.planSeq) return;
      renderPlanFailure(error);
    }
  }

  function renderPlan(plan) {
    const warning = $("plan-warning");
    const section = $("plan");
    $("plan-memory").textContent = plan.predicted_peak_bytes != null ? formatBytes(plan.predicted_peak_bytes) : "–";
    $("plan-time").textContent = plan.predicted_seconds != null ? "≈ " + formatSeconds(plan.predicted_seconds) : "not known yet";
    const budget = plan.memory_budget_bytes != null ? "budget " + formatBytes(plan.memory_budget_bytes) : "no memory budget";
    $("plan-state").textContent = budget;
    const detail = [];
    if (plan.phase_peak_bytes) {
      const phases = Object.entries(plan.phase_peak_bytes).map(([phase, bytes]) => phase + " " + formatBytes(bytes));
      if (phases.length) detail.push("by phase: " + phases.join(", "));
    }
    if (plan.weight_bytes != null) detail.push("weights " + formatBytes(plan.weight_bytes));
    if (plan.plan) {
      const knobs = plan.plan;
      detail.push([knobs.device, knobs.weights, "weights " + knobs.residency, "guidance " + knobs.guidance,
        "decode " + knobs.decode_chunk + " frame" + (knobs.decode_chunk === 1 ? "" : "s") + " at a time",
        knobs.splits > 1 ? "UNet activations in " + knobs.splits + " parts" : "",
        knobs.vae_tile != null ? "lossy: VAE tiles of " + knobs.vae_tile + " latent px" : "",
        knobs.token_merge != null ? "lossy: " + Math.round(knobs.token_merge * 100) + "% of tokens merged" : "",
        knobs.threads + " threads"].filter(Boolean).join(" · "));
    }
    $("plan-detail").textContent = detail.join(" — ");
    const degradations = plan.degradations || [];
    section.classList.remove("fits", "degraded", "no-fit");
    if (!plan.fits) {
      section.classList.add("no-fit");
      warning.hidden = false;
      warning.className = "warning danger";
      warning.textContent = "Does not fit" + (plan.reason ? ": " + plan.reason : ".") +
        ($("allow-degrade").checked ? "" : " Allow degrading under Advanced settings, raise the memory budget, or choose a smaller size.");
    } else if (plan.lossy || degradations.length) {
      section.classList.add("degraded");
      warning.hidden = false;
      warning.className = "warning";
      let text = "Fits only by degrading";
      if (degradations.length) text += ": " + degradations.join("; ");
      if (plan.params) {
        const resolved = describeParams(plan.params);
        if (resolved) text += ". It will run as " + resolved + ".";
      }
      if (plan.reason) text += " " + plan.reason;
      warning.textContent = text;
    } else {
      section.classList.add("fits");
      warning.hidden = true;
      warning.textContent = "";
    }
    section.dataset.fits = String(!!plan.fits);
  }

  function renderPlanFailure(error, { local } = {}) {
    const section = $("plan");
    section.classList.remove("fits", "degraded");
    section.classList.add("no-fit");
    section.dataset.fits = "unknown";
    $("plan-memory").textContent = "–";
    $("plan-time").textContent = "–";
    $("plan-state").textContent = "";
    $("plan-detail").textContent = "";
    const warning = $("plan-warning");
    warning.hidden = false;
    warning.className = "warning danger";
    warning.textContent = "No prediction: " + error.message;
    if (!local) {
      showError(error, "These settings are not accepted");
      $("error").dataset.source = "plan";
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Submitting and following a job

  function idempotencyKey() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
  }

  async function submit(event) {
    event.preventDefault();
    clearError();
    const button = $("generate");
    if (button.disabled) return;
    if (!$("prompt").value.trim()) {
      showError(new ApiError(0, "missing_prompt", "Write a prompt: what should happen in the video.", "prompt"), "Missing prompt");
      $("prompt").focus();
      return;
    }
    if (!state.image) {
      showError(new ApiError(0, "missing_image", "Choose or drop an image first.", "image_id"), "Missing image");
      return;
    }
    button.disabled = true;
    button.textContent = "Submitting …";
    try {
      if (!state.image.id) {
        // The upload shows its own error when it fails.
        try { await state.upload; } catch (_) { return; }
        if (!state.image || !state.image.id) return;
      }
      const params = requestParams();
      const accepted = await api("POST", "/jobs", { json: params, headers: { "Idempotency-Key": idempotencyKey() } });
      followJob(accepted.id, accepted);
      refreshHistory();
    } catch (error) {
      showError(error, "Could not start the job");
    } finally {
      button.disabled = false;
      button.textContent = "Generate";
    }
  }

  function stopFollowing() {
    if (state.events) { state.events.close(); state.events = null; }
    clearTimeout(state.pollTimer);
    state.pollTimer = null;
  }

  function followJob(id, summary) {
    stopFollowing();
    state.job = Object.assign({ id, status: "queued" }, summary || {});
    try { localStorage.setItem("kinema.currentJob", id); } catch (_) { /* storage may be off */ }
    const panel = $("current");
    panel.hidden = false;
    panel.dataset.jobId = id;
    $("video").hidden = true;
    $("video").removeAttribute("src");
    $("current-downloads").textContent = "";
    renderJob(state.job);
    if (window.matchMedia("(max-width: 860px)").matches) panel.scrollIntoView({ behavior: "smooth", block: "start" });

    const url = API + "/jobs/" + encodeURIComponent(id) + "/events" + (token ? "?token=" + encodeURIComponent(token) : "");
    let source;
    try { source = new EventSource(url); } catch (_) { pollJob(id); return; }
    state.events = source;
    source.addEventListener("status", (message) => onJobUpdate(id, parseJSON(message.data)));
    source.addEventListener("progress", (message) => {
      if (!state.job || state.job.id !== id) return;
      const progress = parseJSON(message.data);
      Object.assign(state.job, progress);
      if (state.job.status === "queued") state.job.status = "running";
      renderJob(state.job);
    });
    source.addEventListener("done", (message) => {
      source.close();
      if (state.events === source) state.events = null;
      onJobUpdate(id, parseJSON(message.data));
    });
    source.addEventListener("error", (message) => {
      if (message.data) {
        // An "error" event from the server, e.g. the job was deleted.
        source.close();
        if (state.events === source) state.events = null;
        let error = null;
        try { error = parseJSON(message.data).error; } catch (_) { /* fall through */ }
        showError(new ApiError(0, (error && error.code) || "stream_error", (error && error.message) || "The job's event stream failed."), "Job");
        return;
      }
      // A dropped connection: EventSource reconnects by itself with Last-Event-ID, unless the
      // server refused the stream; then follow the job by polling.
      if (source.readyState === EventSource.CLOSED && state.events === source) {
        state.events = null;
        pollJob(id);
      }
    });
  }

  async function pollJob(id) {
    clearTimeout(state.pollTimer);
    if (!state.job || state.job.id !== id) return;
    try {
      const job = await api("GET", "/jobs/" + encodeURIComponent(id));
      onJobUpdate(id, job);
      if (FINISHED.has(job.status)) return;
    } catch (error) {
      if (error.status === 404) {
        showError(new ApiError(404, "not_found", "The job was deleted."), "Job");
        return;
      }
    }
    state.pollTimer = setTimeout(() => pollJob(id), 1000);
  }

  function onJobUpdate(id, job) {
    if (!state.job || state.job.id !== id) return;
    state.job = Object.assign(state.job, job);
    renderJob(state.job);
    updateHistoryCard(job);
    if (FINISHED.has(job.status)) {
      stopFollowing();
      try { localStorage.removeItem("kinema.currentJob"); } catch (_) { /* storage may be off */ }
      if (job.status === "failed") showError(new ApiError(0, "job_failed", job.error || "The generation failed."), "Generation failed");
      refreshHistory();
    }
  }

  function renderJob(job) {
    const status = job.status || "queued";
    const badge = $("job-status");
    badge.textContent = status;
    badge.className = "badge " + status;
    $("current").dataset.status = status;
    const progress = $("progress");
    const finished = FINISHED.has(status);
    $("progress-block").hidden = finished && status === "succeeded";
    if (status === "queued") {
      progress.removeAttribute("value");
      $("progress-phase").textContent = job.queue_position ? "Queued, position " + job.queue_position : "Queued";
      $("progress-step").textContent = "";
      $("progress-eta").textContent = "";
    } else if (!finished) {
      if (job.progress != null) progress.value = job.progress; else progress.removeAttribute("value");
      $("progress-phase").textContent = PHASES[job.phase] || (job.phase ? job.phase : "Starting");
      const unit = job.phase === "denoise" ? "step " : job.phase === "decode" ? "frame " : "";
      $("progress-step").textContent = job.step != null && job.total_steps ? unit + job.step + "/" + job.total_steps : "";
      $("progress-eta").textContent = job.eta_s != null && job.phase ? "ETA " + formatSeconds(job.eta_s) : "";
    } else {
      progress.value = status === "succeeded" ? 1 : (job.progress || 0);
      $("progress-phase").textContent = status === "cancelled" ? "Cancelled" : status === "failed" ? "Failed" : "Done";
      $("progress-step").textContent = "";
      $("progress-eta").textContent = "";
    }
    const cancel = $("cancel");
    cancel.hidden = finished;
    cancel.disabled = !!job.cancel_requested;
    cancel.textContent = job.cancel_requested ? "Cancelling …" : "Cancel";
    const lines = [];
    if (job.params && job.params.prompt) lines.push("“" + job.params.prompt + "”");
    if (job.params) lines.push(describeParams(job.params));
    if (job.seed != null) lines.push("seed " + job.seed);
    if (status === "failed" && job.error) lines.push(job.error);
    $("job-message").textContent = lines.filter(Boolean).join(" · ");
    if (status === "succeeded") showVideo(job);
  }

  async function showVideo(job) {
    const outputs = job.outputs || {};
    const video = $("video");
    renderDownloads($("current-downloads"), job);
    if (!outputs["video.mp4"]) return;
    if (video.dataset.jobId === job.id && video.getAttribute("src")) { video.hidden = false; return; }
    video.dataset.jobId = job.id;
    try {
      if (outputs["poster.png"]) video.poster = await mediaURL(outputs["poster.png"]);
      video.src = await mediaURL(outputs["video.mp4"]);
      video.hidden = false;
      video.muted = true;
      const played = video.play();
      if (played && played.catch) played.catch(() => { /* autoplay may be blocked; controls remain */ });
    } catch (error) {
      showError(error, "Could not load the video");
    }
  }

  function renderDownloads(container, job) {
    container.textContent = "";
    const outputs = job.outputs || {};
    const files = [["video.mp4", "MP4"], ["preview.gif", "GIF"], ["preview.webp", "WebP"], ["params.json", "params.json"]];
    for (const [file, label] of files) {
      if (!outputs[file]) continue;
      const link = document.createElement("a");
      link.className = "download";
      link.textContent = label;
      link.dataset.testid = "download-" + file;
      link.download = "kinema-" + String(job.id).slice(0, 8) + "-" + file;
      link.href = outputs[file];
      if (token) {
        link.addEventListener("click", async (event) => {
          if (link.dataset.ready) return;
          event.preventDefault();
          try {
            link.href = await mediaURL(outputs[file]);
            link.dataset.ready = "1";
            link.click();
          } catch (error) { showError(error, "Download failed"); }
        });
      }
      container.appendChild(link);
    }
  }

  async function cancelJob() {
    if (!state.job) return;
    const button = $("cancel");
    button.disabled = true;
    try {
      const result = await api("POST", "/jobs/" + encodeURIComponent(state.job.id) + "/cancel");
      if (result.cancelled === "at_next_step") {
        state.job.cancel_requested = true;
        renderJob(state.job);
      } else if (state.events === null) {
        pollJob(state.job.id);
      }
    } catch (error) {
      button.disabled = false;
      showError(error, "Could not cancel");
    }
  }

  // ---------------------------------------------------------------------------------------------
  // History

  async function refreshHistory() {
    try {
      const page = await api("GET", "/jobs?limit=" + HISTORY_PAGE);
      $("history").textContent = "";
      renderHistoryPage(page);
    } catch (error) {
      showError(error, "Could not load the history");
    }
  }

  async function loadMore() {
    if (!state.historyCursor) return;
    const button = $("load-more");
    button.disabled = true;
    try {
      const page = await api("GET", "/jobs?limit=" + HISTORY_PAGE + "&cursor=" + encodeURIComponent(state.historyCursor));
      renderHistoryPage(page);
    } catch (error) {
      showError(error, "Could not load more");
    } finally {
      button.disabled = false;
    }
  }

  function renderHistoryPage(page) {
    const list = $("history");
    for (const job of page.jobs || []) {
      if (list.querySelector('[data-job-id="' + CSS.escape(job.id) + '"]')) continue;
      list.appendChild(historyCard(job));
    }
    state.historyCursor = page.next_cursor || null;
    $("load-more").hidden = !state.historyCursor;
    $("history-empty").hidden = list.children.length > 0;
  }

  function historyCard(job) {
    const card = $("history-item").content.firstElementChild.cloneNode(true);
    fillHistoryCard(card, job);
    return card;
  }

  function updateHistoryCard(job) {
    const card = $("history").querySelector('[data-job-id="' + CSS.escape(job.id) + '"]');
    if (card) fillHistoryCard(card, job);
  }

  function fillHistoryCard(card, job) {
    card.dataset.jobId = job.id;
    card.dataset.status = job.status;
    card.dataset.testid = "history-item";
    const params = job.params || {};
    const outputs = job.outputs || {};
    const badge = card.querySelector(".status");
    badge.textContent = job.status;
    badge.className = "badge status " + job.status;
    const prompt = card.querySelector(".card-prompt");
    prompt.textContent = params.prompt || "(no prompt)";
    prompt.title = params.prompt || "";
    const extras = [];
    if (params.negative_prompt) extras.push("not: " + params.negative_prompt);
    if (job.seed != null) extras.push("seed " + job.seed);
    if (params.model) extras.push(params.model);
    if (params.preset) extras.push(params.preset);
    card.querySelector(".card-params").textContent = [describeParams(params)].concat(extras).join(" · ");
    const times = [formatTime(job.created_at)];
    if (job.retry_of) times.push("retry");
    if (job.status === "failed" && job.error) times.push(job.error);
    card.querySelector(".card-time").textContent = times.join(" · ");
    card.querySelector('[data-action="retry"]').hidden = !FINISHED.has(job.status);
    renderDownloads(card.querySelector(".downloads"), job);

    const thumb = card.querySelector(".thumb");
    const img = thumb.querySelector("img");
    const poster = outputs["poster.png"];
    const preview = outputs["preview.webp"] || outputs["preview.gif"];
    const still = poster || (params.image_id ? API + "/uploads/" + encodeURIComponent(params.image_id) : null);
    if (still && img.dataset.src !== still) {
      img.dataset.src = still;
      mediaURL(still).then((url) => { img.src = url; }, () => { img.removeAttribute("src"); });
    }
    thumb.classList.toggle("pending", !poster);
    thumb.disabled = job.status !== "succeeded";
    if (preview && !thumb.dataset.bound) {
      thumb.dataset.bound = "1";
      const animate = () => mediaURL(preview).then((url) => { img.src = url; }, () => {});
      const rest = () => { if (img.dataset.src) mediaURL(img.dataset.src).then((url) => { img.src = url; }, () => {}); };
      thumb.addEventListener("mouseenter", animate);
      thumb.addEventListener("focus", animate);
      thumb.addEventListener("mouseleave", rest);
      thumb.addEventListener("blur", rest);
    }
    if (!card.dataset.bound) {
      card.dataset.bound = "1";
      thumb.addEventListener("click", () => showHistoryJob(card.dataset.jobId));
      card.querySelector('[data-action="reuse"]').addEventListener("click", () => reuseSettings(card.dataset.jobId));
      card.querySelector('[data-action="retry"]').addEventListener("click", () => retryJob(card.dataset.jobId));
      const remove = card.querySelector('[data-action="delete"]');
      remove.addEventListener("click", () => deleteJob(card, remove));
    }
  }

  async function fetchJob(id) {
    return api("GET", "/jobs/" + encodeURIComponent(id));
  }

  async function showHistoryJob(id) {
    try {
      const job = await fetchJob(id);
      if (job.status !== "succeeded") return;
      stopFollowing();
      state.job = job;
      $("current").hidden = false;
      $("current").dataset.jobId = job.id;
      renderJob(job);
      $("current").scrollIntoView({ behavior: "smooth", block: "start" });
    } catch (error) {
      showError(error, "Could not show the job");
    }
  }

  async function reuseSettings(id) {
    clearError();
    try {
      const job = await fetchJob(id);
      const params = job.params || {};
      if (params.model && state.model && params.model !== state.model.name
          && (state.caps.models || []).some((model) => model.name === params.model)) {
        selectModel(params.model);
      }
      $("prompt").value = params.prompt || "";
      $("negative-prompt").value = params.negative_prompt || "";
      for (const name of PARAMS) if (params[name] != null) setParam(name, params[name]);
      state.preset = null;
      if (params.preset) {
        const preset = presetsFor(state.model).find((candidate) => candidate.name === params.preset);
        const values = currentValues();
        if (preset && PARAMS.every((name) => Number(preset[name]) === values[name])) state.preset = params.preset;
      }
      const seed = job.seed != null ? job.seed : params.seed;
      $("seed").value = seed != null ? String(seed) : "";
      $("memory-budget").value = params.memory_budget || "";
      $("allow-degrade").checked = !!params.allow_degrade;
      $("advanced").open = true;
      syncPresetChips();
      settingsChanged();
      $("gen-form").scrollIntoView({ behavior: "smooth", block: "start" });
      if (params.image_id) await useStoredImage(params.image_id);
    } catch (error) {
      showError(error, "Could not reuse the settings");
    }
  }

  async function retryJob(id) {
    clearError();
    try {
      const accepted = await api("POST", "/jobs/" + encodeURIComponent(id) + "/retry");
      followJob(accepted.id, accepted);
      refreshHistory();
    } catch (error) {
      showError(error, "Could not retry");
    }
  }

  async function deleteJob(card, button) {
    if (!button.dataset.armed) {
      button.dataset.armed = "1";
      button.textContent = "Really delete?";
      setTimeout(() => { delete button.dataset.armed; button.textContent = "Delete"; }, 4000);
      return;
    }
    const id = card.dataset.jobId;
    try {
      await api("DELETE", "/jobs/" + encodeURIComponent(id));
      card.remove();
      $("history-empty").hidden = $("history").children.length > 0;
      if (state.job && state.job.id === id) {
        stopFollowing();
        state.job = null;
        $("current").hidden = true;
        $("video").removeAttribute("src");
      }
    } catch (error) {
      showError(error, "Could not delete");
    }
  }

  // Jobs in the history that are still queued or running (e.g. from another tab) are refreshed
  // now and then; the current job follows its event stream instead.
  async function refreshUnfinished() {
    const cards = Array.from($("history").querySelectorAll(".card"))
      .filter((card) => !FINISHED.has(card.dataset.status) && !(state.job && state.job.id === card.dataset.jobId));
    for (const card of cards.slice(0, 10)) {
      try { fillHistoryCard(card, await fetchJob(card.dataset.jobId)); } catch (error) {
        if (error.status === 404) card.remove();
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Start

  async function resumeCurrentJob() {
    let id = null;
    try { id = localStorage.getItem("kinema.currentJob"); } catch (_) { /* storage may be off */ }
    if (!id) return;
    try {
      const job = await fetchJob(id);
      if (!FINISHED.has(job.status)) followJob(job.id, job);
      else localStorage.removeItem("kinema.currentJob");
    } catch (_) {
      try { localStorage.removeItem("kinema.currentJob"); } catch (__) { /* storage may be off */ }
    }
  }

  function bindEvents() {
    $("gen-form").addEventListener("submit", submit);
    $("error-close").addEventListener("click", clearError);
    $("cancel").addEventListener("click", cancelJob);
    $("load-more").addEventListener("click", loadMore);
    $("history-refresh").addEventListener("click", refreshHistory);
    $("model").addEventListener("change", () => selectModel($("model").value));
    $("seed-clear").addEventListener("click", () => { $("seed").value = ""; markField(null); });
    $("seed").addEventListener("input", () => {
      try { readSeed(); markField(null); } catch (error) { markField("seed"); }
    });
    $("memory-budget").addEventListener("input", schedulePlan);
    $("memory-budget").addEventListener("change", schedulePlan);
    $("allow-degrade").addEventListener("change", schedulePlan);
    $("prompt").addEventListener("input", () => { if ($("prompt").classList.contains("invalid")) markField(null); });
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      try { localStorage.setItem("kinema.token", $("token-input").value.trim()); } catch (_) { /* storage may be off */ }
      location.reload();
    });
  }

  async function start() {
    buildSliders();
    bindEvents();
    setupDropzone();
    document.body.dataset.ready = "false";
    try {
      await loadCapabilities();
    } catch (error) {
      showError(error, "Cannot load the server's capabilities");
      $("generate").disabled = true;
      return;
    }
    await Promise.all([refreshHistory(), resumeCurrentJob()]);
    setInterval(refreshUnfinished, 5000);
    document.body.dataset.ready = "true";
  }

  document.addEventListener("DOMContentLoaded", start);
})();
