// The mffmoe web page: upload through POST /jobs, follow /jobs/{id}/events, draw the result.
// Plain JavaScript and SVG: no build step, no CDN (the server may be offline).
"use strict";

const KEY_STORE = "mffmoe.apiKey";
const $ = (id) => document.getElementById(id);
let roster = [];

function apiKey() { return sessionStorage.getItem(KEY_STORE) || ""; }
function authHeaders() { const k = apiKey(); return k ? { "X-API-Key": k } : {}; }

function errorMessage(body, status) {
  // The host's client rule: detail.message, else detail as a string, else message.
  if (body && body.detail && typeof body.detail === "object" && body.detail.message) return body.detail.message;
  if (body && typeof body.detail === "string") return body.detail;
  if (body && body.message) return body.message;
  return `HTTP ${status}`;
}

function show(id, on) { $(id).hidden = !on; }
function setStatus(text, value, max) {
  show("status-panel", true);
  $("status-text").textContent = text;
  const bar = $("progress");
  if (value === undefined) { bar.removeAttribute("value"); } else { bar.max = max || 1; bar.value = value; }
}

// The time since the job started running, ticking on its own: the server reports progress once per
// batch of frames, so a short video (one batch) has no report between its start and its end.
let clock = null;
function startClock() {
  if (clock) return;
  const t0 = performance.now();
  const tick = () => { $("status-elapsed").textContent = `${((performance.now() - t0) / 1000).toFixed(1)} s`; };
  tick();
  clock = setInterval(tick, 200);
}
function stopClock() {
  if (clock) clearInterval(clock);
  clock = null;
  $("status-elapsed").textContent = "";
}
function showError(text) { stopClock(); $("error").textContent = text; show("error", true); show("status-panel", false); }
function fmt(x, digits = 3) { return Number(x).toFixed(digits); }
function pct(x) { return `${(100 * x).toFixed(1)} %`; }

// -- connection and key ---------------------------------------------------------------------------
async function connect() {
  let res;
  try { res = await fetch("/models", { headers: authHeaders() }); }
  catch (e) { $("model-info").textContent = "The server cannot be reached."; return; }
  if (res.status === 401) {
    show("key-panel", true);
    show("upload-panel", false);
    if (apiKey()) { $("key-error").textContent = "That key was refused."; show("key-error", true); }
    $("model-info").textContent = "Enter the API key to continue.";
    return;
  }
  const body = await res.json().catch(() => null);
  if (!res.ok) { $("model-info").textContent = errorMessage(body, res.status); return; }
  show("key-panel", false);
  show("upload-panel", true);
  show("forget-key", !!apiKey());
  const m = body.models[0];
  roster = m.roster;
  $("frames").value = m.frames;
  $("model-info").textContent = `${m.name} · ${m.experts} experts · ${m.engine} on ${m.device} · ` +
    `threshold ${fmt(m.threshold, 2)}`;
  show("untrained-warning", m.untrained);
}

$("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(KEY_STORE, $("api-key").value.trim());
  $("api-key").value = "";
  connect();
});
$("forget-key").addEventListener("click", () => { sessionStorage.removeItem(KEY_STORE); location.reload(); });

// -- upload ---------------------------------------------------------------------------------------
function upload(file, crop, isCurrent) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("media", file, file.name);
    form.append("crop", crop);
    const frames = parseInt($("frames").value, 10);
    if (frames > 0) form.append("frames", String(frames));
    if ($("explain").checked) form.append("explain", "true");
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/jobs");
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable && isCurrent()) setStatus(`Uploading ${file.name}… ${pct(e.loaded / e.total)}`, e.loaded, e.total);
    };
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
      if (xhr.status === 202) return resolve(body);
      let msg = errorMessage(body, xhr.status);
      const retry = xhr.getResponseHeader("Retry-After");
      if (retry) msg += ` (retry in ${retry} s)`;
      if (xhr.status === 401) { sessionStorage.removeItem(KEY_STORE); connect(); }
      reject(new Error(msg));
    };
    xhr.onerror = () => reject(new Error("The upload failed: the server closed the connection."));
    xhr.send(form);
  });
}

// Server-sent events through fetch (EventSource cannot send the X-API-Key header).
async function follow(jobId, onEvent) {
  const res = await fetch(`/jobs/${jobId}/events`, { headers: authHeaders() });
  if (!res.ok) throw new Error(errorMessage(await res.json().catch(() => null), res.status));
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (data) onEvent(event, JSON.parse(data));
    }
  }
}

// -- what is analysed, and in which mode --------------------------------------------------------
// The switch chooses what is scored: "auto" (faces where found, else the whole frame, flagged) or
// "frame". Switching re-analyses the same file in the other mode, once: each mode's result (for the
// frame count asked) is kept for the file shown, so switching back shows it at once. A new file starts
// with no results.
const CROP_NAMES = { auto: "faces", frame: "whole frame" };
const current = { file: null, crop: "auto", results: {}, pending: {}, token: 0, imageUrl: null };

function setCrop(crop) {
  current.crop = crop;
  for (const b of document.querySelectorAll("#crop-switch button")) {
    b.setAttribute("aria-pressed", String(b.dataset.crop === crop));
  }
}

function analyse(file) {
  current.file = file;
  current.results = {};
  current.pending = {};
  if (current.imageUrl) URL.revokeObjectURL(current.imageUrl);
  current.imageUrl = null;  // made when an image result is shown (the server judges the type by content)
  return run(current.crop);
}

async function run(crop) {
  const token = ++current.token;
  const file = current.file;
  const isCurrent = () => token === current.token;
  const key = `${crop}/${$("frames").value}/${$("explain").checked}`;  // a result holds for its mode, frame count and explanation
  stopClock();
  show("error", false);
  show("result", false);
  const cached = current.results[key];
  if (cached) { show("status-panel", false); render(cached.envelope, cached.jobId); return; }
  try {
    // A run of this file in this mode may be under way already (switched away and back): wait for it.
    // Its progress shows while this file and mode are selected.
    if (!current.pending[key]) current.pending[key] = job(file, crop, () => file === current.file && crop === current.crop);
    else setStatus(`Analysing (${CROP_NAMES[crop]})…`);
    const done = await current.pending[key];
    if (file === current.file) current.results[key] = done;
    if (!isCurrent()) return;
    show("status-panel", false);
    render(done.envelope, done.jobId);
  } catch (e) {
    if (file === current.file) delete current.pending[key];
    if (isCurrent()) showError(e.message);
  }
}

async function job(file, crop, isCurrent) {
  const accepted = await upload(file, crop, isCurrent);
  if (isCurrent()) setStatus("Queued…");
  let final = null;
  await follow(accepted.job_id, (event, job) => {
    const p = job.progress;
    if (["done", "failed", "cancelled"].includes(event)) final = job;
    if (!isCurrent()) return;
    if (job.status === "queued") setStatus("Queued…");
    else if (job.status === "running") {
      startClock();
      if (job.stage === "explaining") setStatus("Scored; finding where the experts look…");
      else if (p.total && p.total > 1) setStatus(`Analysing frames: ${p.done} / ${p.total}`, p.done, p.total);
      else setStatus(`Analysing (${CROP_NAMES[crop]})…`);
    }
  });
  if (isCurrent()) stopClock();
  if (!final) throw new Error("The progress stream ended early.");
  if (final.status !== "done") throw new Error(final.error ? final.error.message : `job ${final.status}`);
  return { envelope: final.result, jobId: final.job_id };
}

for (const b of document.querySelectorAll("#crop-switch button")) {
  b.addEventListener("click", () => {
    if (b.dataset.crop === current.crop) return;
    setCrop(b.dataset.crop);
    if (current.file) run(current.crop);
  });
}

// Ticking "Show where the experts look" re-analyses the file shown with (or without) maps, once: the
// result without them stays kept, as each mode's.
$("explain").addEventListener("change", () => { if (current.file) run(current.crop); });

const drop = $("drop");
$("file").addEventListener("change", () => { const f = $("file").files[0]; if (f) analyse(f); });
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  const f = e.dataTransfer.files[0];
  if (f) analyse(f);
});

// -- result ---------------------------------------------------------------------------------------
// What the file says about itself (C2PA, EXIF, XMP/IPTC, PNG text, container tags): beside the verdict,
// never part of the score. "No provenance found" is not a sign of authenticity.
function renderProvenance(p) {
  show("provenance", !!p);
  if (!p) return;
  $("provenance-text").textContent = p.summary;
  $("provenance").classList.toggle("claims-ai", !!p.claims_ai);
}

// The finished job's evidence report (GET /jobs/{id}/report), fetched with the API key and saved.
let reportJob = null;
async function downloadReport(format) {
  if (!reportJob) return;
  $("report-status").textContent = format === "pdf" ? "printing…" : "";
  try {
    const r = await fetch(`/jobs/${reportJob}/report?format=${format}`, { headers: authHeaders() });
    if (!r.ok) throw new Error((await r.json()).detail?.message || `HTTP ${r.status}`);
    const url = URL.createObjectURL(await r.blob());
    const a = document.createElement("a");
    a.href = url;
    a.download = `${reportJob}.report.${format}`;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    $("report-status").textContent = "";
  } catch (e) {
    $("report-status").textContent = `report failed: ${e.message}`;
  }
}
$("report-html").addEventListener("click", () => downloadReport("html"));
$("report-pdf").addEventListener("click", () => downloadReport("pdf"));

function render(envelope, jobId) {
  const r = envelope.data;
  const fake = r.prediction === "FAKE";
  const verdict = $("verdict");
  verdict.textContent = r.prediction;
  verdict.className = `verdict ${fake ? "fake" : "real"}`;
  $("confidence").textContent = `Confidence ${pct(r.confidence)}`;
  $("score-line").textContent = `P(fake) ${fmt(r.score)} · threshold ${fmt(r.threshold, 2)}`;
  renderAgreement(r.agreement);
  const dims = r.dimensions ? `${r.dimensions.width}×${r.dimensions.height}` : "";
  const parts = [r.media_type, dims];
  if (r.media_type === "video") {
    parts.push(`${r.frames_analyzed} frames analysed` + (r.frames_failed ? ` (${r.frames_failed} failed)` : ""));
    if (r.duration) parts.push(`${fmt(r.duration, 2)} s`);
  }
  parts.push(scoredWhat(r));
  parts.push(`processed in ${fmt(r.processing_time, 2)} s`, `model ${envelope.model_used}`);
  $("meta").textContent = parts.filter(Boolean).join(" · ");
  $("result").dataset.crop = r.crop || "frame";
  // No face found (faces mode): the whole frame was scored, outside what the model was trained on.
  const outOfScope = r.in_scope === false;
  $("scope-text").textContent = r.note || "no face was found, so the whole frame was scored.";
  $("scope").dataset.reasons = (r.scope_reasons || []).join(" ");
  show("scope", outOfScope);
  $("note").textContent = r.note || "";
  show("note", !!r.note && !outOfScope);
  renderProvenance(r.provenance);
  reportJob = jobId || null;
  show("report-links", !!reportJob);
  $("report-status").textContent = "";
  renderExperts(r.expert_scores, r.threshold);
  $("raw").textContent = JSON.stringify(envelope, null, 2);
  const isVideo = r.media_type === "video";
  show("timeline", isVideo);
  show("result", true);
  prepareExplanation(r, jobId);
  renderImage(isVideo ? null : r);
  renderFaceList(r);
  if (isVideo) renderChart(r, jobId);
}

// The experts' agreement: the assessment (likely real, uncertain, likely fake) and their spread.
const ASSESSMENT_NAMES = { likely_real: "Likely real", uncertain: "Uncertain", likely_fake: "Likely fake" };
const UNCERTAIN_WHY = { near_threshold: "score near the threshold", experts_split: "experts split",
  experts_spread: "experts spread" };
function renderAgreement(a) {
  show("assessment-line", !!a);
  if (!a) return;
  const el = $("assessment");
  el.textContent = ASSESSMENT_NAMES[a.assessment] || a.assessment;
  el.className = `assessment ${a.assessment}`;
  el.dataset.assessment = a.assessment;
  const why = (a.reasons || []).map((c) => UNCERTAIN_WHY[c] || c).join(", ");
  if (why) el.title = why;
  const n = a.fake_votes + a.real_votes;
  const spread = $("spread");
  spread.dataset.std = String(a.std);
  spread.textContent = (why ? `(${why}) · ` : "") + `experts' spread: std ${fmt(a.std)}, ` +
    `range ${fmt(a.min)}–${fmt(a.max)} · ${a.fake_votes} of ${n} say fake`;
}

function scoredWhat(r) {
  if (r.crop !== "faces") return r.in_scope === false ? "scored: whole frame (no face found)" : "scored: whole frame";
  if (r.media_type === "video") return `scored: faces (${(r.persons || []).length} person(s))`;
  return `scored: faces (${(r.faces || []).length})`;
}

// -- faces: boxes over a picture, and the list -------------------------------------------------------
// Boxes are placed in percent of the analysed picture's size (the result's `dimensions`) inside a box
// that wraps the <img> exactly, so they follow the picture at any displayed size.
function drawBoxes(overlay, faces, dims, labelOf) {
  overlay.textContent = "";
  if (!faces || !dims || !dims.width || !dims.height) return;
  faces.forEach((f, i) => {
    const [x0, y0, x1, y1] = f.box.map(Number);
    const l = Math.max(0, x0), t = Math.max(0, y0);
    const r = Math.min(dims.width, x1), b = Math.min(dims.height, y1);
    if (r <= l || b <= t) return;
    const box = document.createElement("div");
    box.className = `face-box ${f.prediction === "FAKE" ? "fake" : "real"}`;
    box.style.left = `${(100 * l / dims.width).toFixed(3)}%`;
    box.style.top = `${(100 * t / dims.height).toFixed(3)}%`;
    box.style.width = `${(100 * (r - l) / dims.width).toFixed(3)}%`;
    box.style.height = `${(100 * (b - t) / dims.height).toFixed(3)}%`;
    box.dataset.score = String(f.score);
    box.dataset.index = String(i);
    if (f.person !== null && f.person !== undefined) box.dataset.person = String(f.person);
    const label = document.createElement("span");
    label.className = "face-label";
    label.textContent = `${labelOf(f, i)} ${fmt(f.score)}`;
    box.title = `${labelOf(f, i)}: P(fake) ${fmt(f.score)}, ${f.prediction} (face detector ${fmt(f.detector_score, 2)})`;
    box.append(label);
    overlay.append(box);
  });
}

// Persons are named by their id, as the result (and its note) numbers them.
function personName(id) { return `Person ${id}`; }
function faceName(face, i) {
  return face.person !== null && face.person !== undefined ? `P${face.person}` : `Face ${i + 1}`;
}

function renderImage(r) {
  const img = $("media-image");
  $("image-overlay").textContent = "";
  if (!r || !current.file) { show("image-view", false); return; }
  if (!current.imageUrl) current.imageUrl = URL.createObjectURL(current.file);
  const draw = () => {
    show("image-view", true);
    drawBoxes($("image-overlay"), r.faces, r.dimensions, faceName);
    drawSelectedView();
  };
  img.onerror = () => show("image-view", false);  // a type the browser cannot show (the result stands)
  if (img.getAttribute("src") === current.imageUrl && img.complete && img.naturalWidth) {
    img.onload = null;
    draw();
  } else {
    img.onload = draw;
    img.src = current.imageUrl;
  }
}

function listItem(list, cls, name, score, prediction, extra) {
  const li = document.createElement("li");
  li.className = `face-item ${cls}`;
  li.dataset.score = String(score);
  const n = document.createElement("span");
  n.className = "face-name";
  n.textContent = name;
  const v = document.createElement("span");
  v.className = `face-score ${prediction === "FAKE" ? "fake" : "real"}`;
  v.textContent = `${fmt(score)} ${prediction}`;
  li.append(n, v);
  if (extra) {
    const x = document.createElement("span");
    x.className = "muted small";
    x.textContent = extra;
    li.append(x);
  }
  list.append(li);
  return li;
}

function renderFaceList(r) {
  const list = $("face-list");
  list.textContent = "";
  const persons = r.media_type === "video" ? r.persons : null;
  const faces = r.media_type === "image" ? r.faces : null;
  if (r.crop !== "faces" || !(persons || faces)) { show("faces-panel", false); return; }
  $("faces-title").textContent = persons ? `Persons (${persons.length})` : `Faces (${faces.length})`;
  if (faces) {
    faces.forEach((f, i) => {
      const [x0, y0, x1, y1] = f.box;
      listItem(list, "face", `Face ${i + 1}`, f.score, f.prediction,
        `${Math.round(x1 - x0)}×${Math.round(y1 - y0)} px at (${Math.round(x0)}, ${Math.round(y0)})`);
    });
  } else {
    persons.forEach((p, k) => {
      const li = listItem(list, "person", personName(p.person), p.score, p.prediction,
        `seen in ${p.frames} frame(s)` + (p.counted ? "" : " · too few frames to count"));
      li.dataset.person = String(p.person);
      const thumb = document.createElement("img");
      thumb.className = "face-thumb";
      thumb.alt = personName(p.person);
      thumb.src = p.thumbnail;
      thumb.style.borderColor = personColour(k);
      li.prepend(thumb);
    });
  }
  show("faces-panel", true);
}

const PERSON_COLOURS = ["#7b1fa2", "#ef6c00", "#00838f", "#ad1457", "#5d4037", "#283593", "#9e9d24", "#00695c"];
function personColour(k) { return PERSON_COLOURS[k % PERSON_COLOURS.length]; }

function renderExperts(scores, threshold) {
  const box = $("experts");
  box.textContent = "";
  scores.forEach((s, i) => {
    const row = document.createElement("div");
    row.className = "expert";
    row.dataset.score = String(s);
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = `${i + 1}. ${roster[i] || "expert"}`;
    name.title = name.textContent;
    const track = document.createElement("div");
    track.className = "track";
    const bar = document.createElement("div");
    bar.className = `bar ${s >= threshold ? "fake" : "real"}`;
    bar.style.width = `${(100 * s).toFixed(2)}%`;
    const mark = document.createElement("div");
    mark.className = "mark";
    mark.style.left = `${(100 * threshold).toFixed(2)}%`;
    track.append(bar, mark);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = fmt(s);
    row.append(name, track, value);
    box.append(row);
  });
}

const SVG_NS = "http://www.w3.org/2000/svg";
function el(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function niceStep(span, count) {
  const raw = span / Math.max(1, count);
  const mag = Math.pow(10, Math.floor(Math.log10(raw || 1)));
  for (const m of [1, 2, 2.5, 5, 10]) if (raw <= m * mag) return m * mag;
  return 10 * mag;
}

// The thumbnail of a scored frame, kept with the job. Fetched (not an <img src>) to send the API key,
// and shown as a data: URL (a few kB).
function dataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

async function showFrame(jobId, f, dims) {
  const img = $("frame-image");
  const want = `${jobId}/${f.frame_index}`;
  img.dataset.want = want;
  clearHeat("frame-heat", "frame-overlay");  // no map of another frame over this one
  let src = null;
  try {
    const res = await fetch(`/jobs/${jobId}/frames/${f.frame_index}`, { headers: authHeaders() });
    if (res.ok) src = await dataUrl(await res.blob());
  } catch (e) { /* shown as missing below */ }
  if (img.dataset.want !== want) return;  // another point was clicked meanwhile
  if (src) {
    await new Promise((resolve) => { img.onload = resolve; img.onerror = resolve; img.src = src; });
    if (img.dataset.want !== want) return;
    img.alt = `Frame ${f.frame_index}`;
    img.dataset.frame = String(f.frame_index);
  } else {
    img.removeAttribute("src");
    delete img.dataset.frame;
  }
  // This frame's faces (faces mode) over its picture: the thumbnail keeps the frame's proportions.
  drawBoxes($("frame-overlay"), src ? f.faces : null, dims, faceName);
  show("frame-box", !!src);
  show("frame-image", !!src);
  show("frame-missing", !src);
  heatForFrame(f, !!src);
}

function renderChart(r, jobId) {
  const frames = r.frame_predictions, threshold = r.threshold, duration = r.duration;
  const persons = r.crop === "faces" && r.persons ? r.persons : [];
  const svg = $("chart");
  svg.textContent = "";
  svg.classList.toggle("with-persons", persons.length > 0);
  show("frame-box", false);
  show("frame-image", false);
  show("frame-missing", false);
  $("frame-overlay").textContent = "";
  // T leaves room above the plot for the threshold's legend, so it never covers a point.
  const W = 760, H = 270, L = 44, R = 16, T = 26, B = 34;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const tMax = Math.max(duration || 0, ...frames.map((f) => f.timestamp), 1e-6);
  const x = (t) => L + (W - L - R) * (t / tMax);
  const y = (s) => T + (H - T - B) * (1 - s);
  for (const s of [0, 0.25, 0.5, 0.75, 1]) {
    svg.append(el("line", { class: "grid", x1: L, x2: W - R, y1: y(s), y2: y(s) }));
    svg.append(el("text", { class: "tick", x: L - 6, y: y(s) + 4, "text-anchor": "end" }, s.toFixed(2)));
  }
  const step = niceStep(tMax, 8);
  for (let t = 0; t <= tMax + 1e-9; t += step) {
    svg.append(el("line", { class: "axis", x1: x(t), x2: x(t), y1: H - B, y2: H - B + 4 }));
    svg.append(el("text", { class: "tick", x: x(t), y: H - B + 16, "text-anchor": "middle" }, `${+t.toFixed(2)} s`));
  }
  svg.append(el("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
  svg.append(el("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
  svg.append(el("text", { class: "tick", x: (L + W - R) / 2, y: H - 2, "text-anchor": "middle" }, "time"));
  svg.append(el("line", { id: "threshold-line", class: "threshold", x1: L, x2: W - R, y1: y(threshold), y2: y(threshold) }));
  const legend = W - R - 92;
  svg.append(el("line", { class: "threshold", x1: legend, x2: legend + 20, y1: 10, y2: 10 }));
  svg.append(el("text", { class: "threshold-label", x: legend + 26, y: 14 }, `threshold ${threshold.toFixed(2)}`));
  const path = (points) => points.map((p, i) => `${i ? "L" : "M"}${x(p.timestamp).toFixed(1)},${y(p.score).toFixed(1)}`).join(" ");
  // The frame line: the whole frame's score (frame mode), or each frame's highest face (faces mode,
  // drawn faint under the persons' lines).
  svg.append(el("path", { class: "curve", d: path(frames) }));
  const cursor = el("line", { class: "cursor", x1: 0, x2: 0, y1: T, y2: H - B, visibility: "hidden" });
  svg.append(cursor);
  const byIndex = new Map(frames.map((f) => [f.index, f]));
  const select = (f) => {
    svg.querySelectorAll(".selected").forEach((p) => p.classList.remove("selected"));
    svg.querySelectorAll(`circle[data-index="${f.index}"]`).forEach((p) => p.classList.add("selected"));
    cursor.setAttribute("x1", x(f.timestamp));
    cursor.setAttribute("x2", x(f.timestamp));
    cursor.setAttribute("visibility", "visible");
    let text = `Frame ${f.frame_index} at ${fmt(f.timestamp, 2)} s ` +
      `(sample ${f.index + 1} of ${frames.length}): P(fake) ${fmt(f.score)}, ${f.prediction}`;
    if (f.faces) {
      text += f.faces.length
        ? ` · ${f.faces.map((face, i) => `${faceName(face, i)} ${fmt(face.score)}`).join(", ")}`
        : " · no face in this frame";
    }
    $("frame-info").textContent = text;
    if (jobId) showFrame(jobId, f, r.dimensions);
  };
  const radius = frames.length > 150 ? 2.5 : 4.5;
  frames.forEach((f) => {
    const explained = heat.frames.has(f.frame_index) ? " explained" : "";
    const pt = el("circle", {
      class: `pt ${f.prediction === "FAKE" ? "fake" : "real"}${explained}`, cx: x(f.timestamp), cy: y(f.score), r: radius,
      "data-index": f.index, "data-time": f.timestamp,
    });
    pt.append(el("title", {}, `${fmt(f.timestamp, 2)} s: ${fmt(f.score)}` + (explained ? " (has a map)" : "")));
    pt.addEventListener("click", () => select(f));
    svg.append(pt);
  });
  // One line per person, from its timeline; its points select their frame too.
  persons.forEach((p, k) => {
    const colour = personColour(k);
    const line = el("path", { class: "person-line", d: path(p.timeline), "data-person": p.person, stroke: colour });
    line.append(el("title", {}, `${personName(p.person)}: P(fake) ${fmt(p.score)}`));
    svg.append(line);
    p.timeline.forEach((tp) => {
      const dot = el("circle", {
        class: "person-pt", cx: x(tp.timestamp), cy: y(tp.score), r: Math.max(2, radius - 1.5),
        fill: colour, "data-person": p.person, "data-index": tp.index,
      });
      dot.append(el("title", {}, `${personName(p.person)} at ${fmt(tp.timestamp, 2)} s: ${fmt(tp.score)}`));
      const f = byIndex.get(tp.index);
      if (f) dot.addEventListener("click", () => select(f));
      svg.append(dot);
    });
  });
  renderLegend(persons);
  $("frame-info").textContent = "Click a point to see that frame.";
  heat.select = select;
  // With an explanation, the most suspicious explained frame is shown with its map at once.
  const first = heat.views.length ? frames.find((f) => f.frame_index === heat.views[0].frame) : null;
  if (first) select(first);
}

// Below the chart in faces mode: each person's line colour, face, score and verdict.
function renderLegend(persons) {
  const box = $("chart-legend");
  box.textContent = "";
  if (!persons.length) { show("chart-legend", false); return; }
  const entry = (cls, colour, label, thumb) => {
    const li = document.createElement("li");
    li.className = `legend-item ${cls}`;
    const sw = document.createElement("span");
    sw.className = "swatch";
    if (colour) sw.style.background = colour;
    li.append(sw);
    if (thumb) {
      const img = document.createElement("img");
      img.className = "legend-thumb";
      img.src = thumb;
      img.alt = label;
      li.append(img);
    }
    const text = document.createElement("span");
    text.textContent = label;
    li.append(text);
    box.append(li);
    return li;
  };
  persons.forEach((p, k) => {
    const li = entry("person", personColour(k), personName(p.person), p.thumbnail);
    li.dataset.person = String(p.person);
    li.dataset.score = String(p.score);
    const v = document.createElement("span");
    v.className = `face-score ${p.prediction === "FAKE" ? "fake" : "real"}`;
    v.textContent = `${fmt(p.score)} ${p.prediction}`;
    li.append(v);
  });
  entry("frame", null, "each frame's highest face", null);
  show("chart-legend", true);
}

// -- explanations: where the experts look -------------------------------------------------------------
// Each explained item has a small map (32 x 32, values in [0, 1]) over its `box`, the region the model
// saw in original pixels (a face's crop square may leave the picture). The page colours it and stretches
// it bilinearly over the box, scaled to the picture as displayed, on a canvas over the picture; the
// slider sets the canvas's opacity. Videos: the explained frames (the most suspicious ones) are drawn on
// their thumbnails; clicking such a frame in the chart shows its map.
const WHAT_A_MAP_IS = "A map shows where the evidence that moved the score lies, not proof that a region was manipulated.";
const heat = { explanation: null, result: null, views: [], frames: new Set(), select: null };

// The heat scale (the legend's gradient): value in [0, 1] to RGB.
const HEAT_STOPS = [[0, [0, 0, 140]], [0.2, [0, 150, 255]], [0.4, [0, 220, 120]], [0.6, [255, 230, 0]],
  [0.8, [255, 60, 0]], [1, [180, 0, 0]]];
function heatColour(v) {
  for (let i = 1; i < HEAT_STOPS.length; i++) {
    const [v1, c1] = HEAT_STOPS[i];
    if (v <= v1) {
      const [v0, c0] = HEAT_STOPS[i - 1];
      const t = (v - v0) / (v1 - v0);
      return [0, 1, 2].map((k) => Math.round(c0[k] + t * (c1[k] - c0[k])));
    }
  }
  return HEAT_STOPS[HEAT_STOPS.length - 1][1];
}

// The views the selector offers: for an image, the whole picture or each face (and all faces at once);
// for a video, each explained frame (all its maps) and, with several faces, each face of it.
function explainViews(r) {
  const ex = r.explanation;
  if (!ex) return [];
  const views = [];
  if (r.media_type === "image") {
    const faces = ex.items.filter((it) => it.kind === "face");
    if (faces.length > 1) views.push({ label: `All faces (${faces.length})`, frame: null, items: ex.items });
    ex.items.forEach((it) => views.push({
      label: `${it.kind === "face" ? `Face ${it.face + 1}` : "Whole picture"} · P(fake) ${fmt(it.score)}`,
      frame: null, items: [it] }));
    return views;
  }
  const byFrame = new Map();
  for (const it of ex.items) {
    if (!byFrame.has(it.frame_index)) byFrame.set(it.frame_index, []);
    byFrame.get(it.frame_index).push(it);
  }
  const predictions = new Map(r.frame_predictions.map((f) => [f.frame_index, f]));
  const score = (index) => (predictions.get(index) || { score: 0 }).score;
  // The most suspicious explained frame first (the items come in frame order).
  const order = [...byFrame.keys()].sort((a, b) => score(b) - score(a) || a - b);
  for (const index of order) {
    const items = byFrame.get(index);
    const f = predictions.get(index);
    const at = items[0].timestamp !== null && items[0].timestamp !== undefined ? ` at ${fmt(items[0].timestamp, 2)} s` : "";
    const score = f ? ` · P(fake) ${fmt(f.score)}` : "";
    views.push({ label: `Frame ${index}${at}${score}`, frame: index, items });
    if (items.length > 1 || items[0].kind === "face") {
      items.forEach((it) => {
        if (it.kind !== "face") return;
        const face = f && f.faces ? f.faces[it.face] : null;
        const name = face ? faceName(face, it.face) : `Face ${it.face + 1}`;
        if (items.length > 1) views.push({ label: `Frame ${index} · ${name} · P(fake) ${fmt(it.score)}`, frame: index, items: [it] });
      });
    }
  }
  return views;
}

function prepareExplanation(r, jobId) {
  const panel = $("explain-panel");
  const ex = r.explanation || null;
  heat.explanation = ex;
  heat.result = r;
  heat.select = null;
  heat.views = explainViews(r);
  heat.frames = new Set(heat.views.map((v) => v.frame).filter((x) => x !== null));
  clearHeat("image-heat", "image-overlay");
  clearHeat("frame-heat", "frame-overlay");
  if (!ex || !heat.views.length) { show("explain-panel", false); return; }
  // Next to the picture it draws on: the image, or the frame shown under the chart.
  if (r.media_type === "image") $("image-view").after(panel);
  else $("timeline").querySelector(".frame-view").after(panel);
  $("explain-what").textContent = ex.note || WHAT_A_MAP_IS;
  const select = $("explain-item");
  select.textContent = "";
  heat.views.forEach((v, i) => {
    const o = document.createElement("option");
    o.value = String(i);
    o.textContent = v.label;
    select.append(o);
  });
  select.value = "0";
  const frames = r.media_type === "video" ? ` · ${heat.frames.size} most suspicious frame(s) explained` : "";
  $("explain-info").textContent = `Method: ${ex.method} (${ex.method_reason})${frames} · made in ${fmt(ex.seconds, 2)} s`;
  $("explain-info").dataset.method = ex.method;
  show("explain-panel", true);
  applyOpacity();
}

function selectedView() {
  const i = parseInt($("explain-item").value, 10);
  return Number.isInteger(i) ? heat.views[i] || null : null;
}

function clearHeat(canvasId, overlayId) {
  const canvas = $(canvasId);
  canvas.hidden = true;
  delete canvas.dataset.items;
  $(overlayId).querySelectorAll(".peak").forEach((p) => p.remove());
}

// Draw `items`' maps on `canvas`, sized to `picture` as displayed; their peaks go into `overlay`.
function drawHeat(canvas, overlay, picture, items) {
  const ex = heat.explanation;
  overlay.querySelectorAll(".peak").forEach((p) => p.remove());
  const w = Math.max(1, Math.round(picture.clientWidth)), h = Math.max(1, Math.round(picture.clientHeight));
  if (!ex || !items.length || !picture.clientWidth) { canvas.hidden = true; return; }
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(w, h);
  const sx = w / ex.width, sy = h / ex.height;
  for (const it of items) {
    const map = it.map, rows = map.length, cols = map[0].length;
    const [l, t, r, b] = it.box.map(Number);
    const bx = l * sx, by = t * sy, bw = (r - l) * sx, bh = (b - t) * sy;
    if (bw <= 0 || bh <= 0) continue;
    const x0 = Math.max(0, Math.floor(bx)), x1 = Math.min(w, Math.ceil(bx + bw));
    const y0 = Math.max(0, Math.floor(by)), y1 = Math.min(h, Math.ceil(by + bh));
    for (let py = y0; py < y1; py++) {
      // bilinear between the cells' centres, clamped at the box's edges
      const v = Math.min(rows - 1, Math.max(0, ((py + 0.5 - by) / bh) * rows - 0.5));
      const r0 = Math.floor(v), r1 = Math.min(rows - 1, r0 + 1), fy = v - r0;
      for (let px = x0; px < x1; px++) {
        const u = Math.min(cols - 1, Math.max(0, ((px + 0.5 - bx) / bw) * cols - 0.5));
        const c0 = Math.floor(u), c1 = Math.min(cols - 1, c0 + 1), fx = u - c0;
        const top = map[r0][c0] * (1 - fx) + map[r0][c1] * fx;
        const bottom = map[r1][c0] * (1 - fx) + map[r1][c1] * fx;
        const value = Math.min(1, Math.max(0, top * (1 - fy) + bottom * fy));
        const [cr, cg, cb] = heatColour(value);
        const k = 4 * (py * w + px);
        image.data[k] = cr;
        image.data[k + 1] = cg;
        image.data[k + 2] = cb;
        image.data[k + 3] = Math.round(255 * (0.35 + 0.65 * value));
      }
    }
  }
  ctx.putImageData(image, 0, 0);
  canvas.dataset.items = String(items.length);
  canvas.hidden = false;
  for (const it of items) {
    if (!it.peak) continue;
    const mark = document.createElement("div");
    mark.className = "peak";
    mark.style.left = `${(100 * it.peak[0] / ex.width).toFixed(3)}%`;
    mark.style.top = `${(100 * it.peak[1] / ex.height).toFixed(3)}%`;
    mark.title = `Peak of the map at (${it.peak[0]}, ${it.peak[1]}) px`;
    overlay.append(mark);
  }
  const peaks = items.filter((it) => it.peak).map((it) => `(${it.peak[0]}, ${it.peak[1]})`);
  const base = $("explain-info").textContent.split(" · peak")[0];
  $("explain-info").textContent = base + (peaks.length ? ` · peak at ${peaks.join(", ")} px` : " · no evidence found (the map is zero)");
}

// The selected view on its picture: the image, or (videos) the frame under the chart.
function drawSelectedView() {
  const view = selectedView();
  if (!heat.explanation || !view) return;
  if (view.frame === null) {
    if (heat.result.media_type === "image") drawHeat($("image-heat"), $("image-overlay"), $("media-image"), view.items);
    return;
  }
  if ($("frame-image").dataset.frame === String(view.frame) && !$("frame-image").hidden) {
    drawHeat($("frame-heat"), $("frame-overlay"), $("frame-image"), view.items);
  }
}

// A frame was shown (a click in the chart, or the selector): its map, when it has one.
function heatForFrame(f, shown) {
  if (!heat.explanation || heat.result.media_type !== "video") return;
  const current = selectedView();
  const select = $("explain-item");
  if (!current || current.frame !== f.frame_index) {
    const i = heat.views.findIndex((v) => v.frame === f.frame_index);
    select.selectedIndex = i;  // -1: this frame has no map (only the most suspicious frames are explained)
  }
  if (select.selectedIndex < 0) {
    const base = $("explain-info").textContent.split(" · peak")[0];
    $("explain-info").textContent = base + " · peak: this frame has no map (choose an explained frame)";
    return;
  }
  if (shown) drawSelectedView();
}

$("explain-item").addEventListener("change", () => {
  const view = selectedView();
  if (!view) return;
  if (view.frame === null) { drawSelectedView(); return; }
  const f = heat.result.frame_predictions.find((p) => p.frame_index === view.frame);
  if (f && heat.select) heat.select(f);
});

function applyOpacity() {
  const value = parseInt($("heat-opacity").value, 10);
  for (const id of ["image-heat", "frame-heat"]) $(id).style.opacity = String(value / 100);
  $("heat-opacity-value").textContent = `${value} %`;
}
$("heat-opacity").addEventListener("input", applyOpacity);

connect();
