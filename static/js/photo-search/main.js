/* Photo search page (templates/search/upload.html).
 *
 * The photo is downscaled here (long side data-max-side, JPEG q0.9, EXIF orientation
 * applied) and posted to the search API; the boxes the API found are drawn over it and
 * the shopper can pick, move or resize one, which searches again with `box` in pixels of
 * the uploaded image. Result clicks are sent to the click log with sendBeacon.
 * ES modules, no dependencies, no build step: photo.js (photo in), boxes.js (the box
 * layer), results.js (cards and clicks); this file holds the state, the search request,
 * status and errors, and the photo sources.
 */
import { boxEditor, normBox } from "./boxes.js";
import { MESSAGES, UserError } from "./messages.js";
import { downscale } from "./photo.js";
import { resultList } from "./results.js";

const root = document.getElementById("photo-search");
if (root) start(root);

function start(root) {
  const cfg = {
    searchUrl: root.dataset.searchUrl || "/api/v1/search/",
    clickUrl: root.dataset.clickUrl || "/api/v1/clicks/",
    k: parseInt(root.dataset.k, 10) || 12,
    maxSide: parseInt(root.dataset.maxSide, 10) || 1024,
  };

  const $ = (id) => document.getElementById(id);
  const els = {
    query: root.querySelector(".ps-query"),
    drop: $("ps-drop"),
    inputs: [$("ps-camera"), $("ps-file")].filter(Boolean),
    error: $("ps-error"),
    stage: $("ps-stage"),
    photo: $("ps-photo"),
    img: $("ps-img"),
    boxes: $("ps-boxes"),
    results: $("ps-results"),
    status: $("ps-status"),
    grid: $("ps-grid"),
    filters: $("ps-filter-form"),
  };

  const state = {
    blob: null, // the downscaled JPEG that every search of this photo uploads
    objectUrl: null,
    width: 0, // uploaded-image pixels: the coordinate system of every box
    height: 0,
    boxes: [],
    chosen: -1,
    lastBox: null, // the box of the last search (null: the server chose)
    queryId: null, // the query whose results are on screen
    seq: 0,
    controller: null,
    debounce: 0,
    drag: null,
    suppressClick: false, // set by a drag: the click that may follow it picks nothing
    clicked: new Set(),
  };

  function csrfToken() {
    const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    // The page's own copy serves where the cookie is HttpOnly or named otherwise.
    return m ? decodeURIComponent(m[1]) : root.dataset.csrfToken || null;
  }

  const boxes = boxEditor({ state, els, search });
  const results = resultList({ state, els, clickUrl: cfg.clickUrl, csrfToken });

  // ---- photo in ---------------------------------------------------------------------------

  async function takeFile(file) {
    if (!file) return;
    clearError();
    setBusy(true, "Preparing your photo…");
    let prepared;
    try {
      prepared = await downscale(file, cfg.maxSide);
    } catch (e) {
      setBusy(false, state.blob ? null : "Your matches will appear here.");
      showError(e instanceof UserError ? e.message : MESSAGES.notImage);
      return;
    }
    if (state.objectUrl) URL.revokeObjectURL(state.objectUrl);
    Object.assign(state, {
      blob: prepared.blob,
      objectUrl: URL.createObjectURL(prepared.blob),
      width: prepared.width,
      height: prepared.height,
      boxes: [],
      chosen: -1,
      lastBox: null,
      queryId: null,
    });
    els.photo.style.setProperty("--ps-aspect", String(prepared.width / prepared.height));
    els.img.src = state.objectUrl;
    els.stage.hidden = false;
    els.drop.dataset.state = "loaded";
    boxes.render();
    els.grid.replaceChildren();
    search(null);
  }

  // ---- search ---------------------------------------------------------------------------

  function boxParam(b) {
    return [b.x1, b.y1, b.x2, b.y2].map((v) => Math.round(v)).join(",");
  }

  function filterFields() {
    const out = [];
    if (!els.filters) return out;
    for (const [name, value] of new FormData(els.filters)) {
      if (String(value).trim() !== "") out.push([name, String(value).trim()]);
    }
    return out;
  }

  function errorMessage(status, data) {
    if (data && data.error && data.error.message) return data.error.message;
    if (status === 413) return MESSAGES.tooLarge;
    if (status === 429) return MESSAGES.tooMany;
    if (status === 400) return MESSAGES.badPhoto;
    if (status === 403) return MESSAGES.forbidden;
    return MESSAGES.unavailable;
  }

  async function search(box) {
    if (!state.blob) return;
    clearTimeout(state.debounce);
    if (state.controller) state.controller.abort();
    const controller = new AbortController();
    const seq = ++state.seq;
    state.controller = controller;
    state.lastBox = box ? { ...box } : null;

    const form = new FormData();
    form.append("image", state.blob, "photo.jpg");
    if (box) form.append("box", boxParam(box));
    form.append("k", String(cfg.k));
    for (const [name, value] of filterFields()) form.append(name, value);
    const headers = { Accept: "application/json" };
    const token = csrfToken();
    if (token) headers["X-CSRFToken"] = token;

    setBusy(true, box ? "Searching for the selected area…" : "Looking for products in your photo…");
    let response;
    let data = null;
    try {
      response = await fetch(cfg.searchUrl, {
        method: "POST",
        body: form,
        headers,
        credentials: "same-origin",
        signal: controller.signal,
      });
      data = await response.json().catch(() => null);
    } catch (e) {
      if (seq !== state.seq) return; // superseded by a newer search
      state.controller = null;
      setBusy(false, staleStatus());
      showError(MESSAGES.network, true);
      return;
    }
    if (seq !== state.seq) return;
    state.controller = null;
    if (!response.ok || !data) {
      setBusy(false, staleStatus());
      showError(errorMessage(response.status, data), response.status >= 429);
      return;
    }
    clearError();
    applyResponse(data, box);
    setBusy(false, null);
  }

  function staleStatus() {
    return els.grid.querySelector(".ps-card") ? "These are the matches of your previous search." : "";
  }

  function applyResponse(data, sentBox) {
    state.queryId = data.query_id;
    state.clicked = new Set();
    if (data.image && data.image.width && data.image.height) {
      state.width = data.image.width;
      state.height = data.image.height;
    }
    if (!sentBox) {
      state.boxes = (data.boxes || []).map(normBox);
      state.chosen = (data.boxes || []).findIndex((b) => b.chosen);
      if (state.chosen < 0 && data.box) {
        state.boxes.push(normBox(data.box));
        state.chosen = state.boxes.length - 1;
      }
      boxes.render();
    } else if (data.box && state.chosen >= 0 && !state.drag) {
      // Show what was searched: the server may have clamped the box to the photo.
      Object.assign(state.boxes[state.chosen], {
        x1: Number(data.box.x1),
        y1: Number(data.box.y1),
        x2: Number(data.box.x2),
        y2: Number(data.box.y2),
      });
      boxes.render();
    }
    results.render(data.results || []);
  }

  function retry() {
    clearError();
    search(state.lastBox);
  }

  // ---- status, errors -------------------------------------------------------------------

  function setBusy(busy, text) {
    root.classList.toggle("is-busy", busy);
    els.results.setAttribute("aria-busy", busy ? "true" : "false");
    if (text != null) els.status.textContent = text;
    if (busy && !els.grid.querySelector(".ps-card")) {
      const skeleton = [];
      for (let i = 0; i < 6; i++) {
        const li = document.createElement("li");
        li.className = "ps-skeleton";
        li.setAttribute("aria-hidden", "true");
        skeleton.push(li);
      }
      els.grid.replaceChildren(...skeleton);
    } else if (!busy) {
      els.grid.querySelectorAll(".ps-skeleton").forEach((li) => li.remove());
    }
  }

  function showError(message, canRetry) {
    els.error.replaceChildren();
    const text = document.createElement("span");
    text.className = "ps-error-text";
    text.textContent = message;
    els.error.append(text);
    if (canRetry && state.blob) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "ps-button ps-retry";
      button.textContent = "Try again";
      button.addEventListener("click", retry);
      els.error.append(button);
    }
    els.error.hidden = false;
  }

  function clearError() {
    els.error.hidden = true;
    els.error.replaceChildren();
  }

  // ---- photo sources: inputs, drop, paste -----------------------------------------------

  for (const input of els.inputs) {
    input.addEventListener("change", () => {
      const file = input.files && input.files[0];
      input.value = ""; // choosing the same file again must fire change again
      takeFile(file);
    });
  }

  const hasFiles = (ev) => ev.dataTransfer && Array.from(ev.dataTransfer.types || []).includes("Files");
  let dragDepth = 0;
  els.query.addEventListener("dragenter", (ev) => {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    dragDepth++;
    els.drop.classList.add("is-over");
  });
  els.query.addEventListener("dragover", (ev) => {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    ev.dataTransfer.dropEffect = "copy";
  });
  els.query.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) els.drop.classList.remove("is-over");
  });
  els.query.addEventListener("drop", (ev) => {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    dragDepth = 0;
    els.drop.classList.remove("is-over");
    takeFile(ev.dataTransfer.files[0]);
  });
  // A file dropped beside the drop zone must not make the browser leave the page to show it.
  window.addEventListener("dragover", (ev) => hasFiles(ev) && ev.preventDefault());
  window.addEventListener("drop", (ev) => hasFiles(ev) && ev.preventDefault());

  document.addEventListener("paste", (ev) => {
    const file = ev.clipboardData && Array.from(ev.clipboardData.files || []).find((f) => f.type.startsWith("image/"));
    if (file) {
      ev.preventDefault();
      takeFile(file);
    }
  });

  if (els.filters) {
    const rerun = () => {
      if (state.blob) search(state.lastBox);
    };
    els.filters.addEventListener("change", rerun);
    els.filters.addEventListener("submit", (ev) => {
      ev.preventDefault();
      rerun();
    });
  }
}
