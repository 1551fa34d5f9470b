/* Photo search page (templates/search/upload.html).
 *
 * The photo is downscaled here (long side data-max-side, JPEG q0.9, EXIF orientation
 * applied) and posted to the search API; the boxes the API found are drawn over it and
 * the shopper can pick, move or resize one, which searches again with `box` in pixels of
 * the uploaded image. Result clicks are sent to the click log with sendBeacon.
 * No dependencies, no build step.
 */
(function () {
  "use strict";

  const root = document.getElementById("photo-search");
  if (!root) return;

  const cfg = {
    searchUrl: root.dataset.searchUrl || "/api/v1/search/",
    clickUrl: root.dataset.clickUrl || "/api/v1/clicks/",
    k: parseInt(root.dataset.k, 10) || 12,
    maxSide: parseInt(root.dataset.maxSide, 10) || 1024,
  };
  const JPEG_QUALITY = 0.9;
  // Long enough that a run of arrow presses makes one request, short enough to feel live.
  const KEY_DEBOUNCE_MS = 600;
  const MIN_BOX_PX = 16; // in uploaded-image pixels; smaller crops carry too little to match
  const DRAG_SLOP_PX = 4; // screen pixels a pointer may wobble before a press becomes a drag

  const MESSAGES = {
    notImage: "That file is not a picture we can read. Please choose a photo, for example a JPEG or PNG.",
    encodeFailed: "Your browser could not prepare that photo. Please try another one.",
    network: "We could not reach VisualShop. Check your connection and try again.",
    tooLarge: "That photo is too large. Please try a smaller one.",
    tooMany: "Too many searches in a short time. Please wait a moment and try again.",
    badPhoto: "We could not use that photo. Please try another one.",
    forbidden: "Your session has expired. Please reload the page and try again.",
    unavailable: "Search is not available right now. Please try again in a moment.",
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
  // The chosen box's frame, name and corner handles, drawn above every box; only the
  // handles take the pointer, so smaller boxes inside the chosen one stay clickable.
  const frame = document.createElement("div");
  frame.className = "ps-frame";
  frame.hidden = true;
  frame.setAttribute("aria-hidden", "true");
  const frameTag = document.createElement("span");
  frameTag.className = "ps-frame-tag";
  frame.append(frameTag);
  for (const corner of ["nw", "ne", "sw", "se"]) {
    const h = document.createElement("span");
    h.className = "ps-handle";
    h.dataset.corner = corner;
    frame.append(h);
  }
  els.photo.append(frame);

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

  class UserError extends Error {}

  // ---- photo in: decode, orient, downscale -------------------------------------------

  async function decodeImage(file) {
    if (file.type && !file.type.startsWith("image/")) throw new UserError(MESSAGES.notImage);
    if (typeof createImageBitmap === "function") {
      try {
        const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
        return { source: bitmap, width: bitmap.width, height: bitmap.height, release: () => bitmap.close() };
      } catch (e) {
        // Older engines reject the option, some cannot decode this type: try an <img>.
      }
    }
    const url = URL.createObjectURL(file);
    const img = new Image();
    img.decoding = "async";
    img.src = url;
    try {
      await img.decode();
    } catch (e) {
      URL.revokeObjectURL(url);
      throw new UserError(MESSAGES.notImage);
    }
    // <img> applies EXIF orientation by default (CSS image-orientation: from-image).
    return { source: img, width: img.naturalWidth, height: img.naturalHeight, release: () => URL.revokeObjectURL(url) };
  }

  async function downscale(file) {
    const decoded = await decodeImage(file);
    try {
      if (!decoded.width || !decoded.height) throw new UserError(MESSAGES.notImage);
      const scale = Math.min(1, cfg.maxSide / Math.max(decoded.width, decoded.height));
      const width = Math.max(1, Math.round(decoded.width * scale));
      const height = Math.max(1, Math.round(decoded.height * scale));
      const canvas = document.createElement("canvas");
      canvas.width = width;
      canvas.height = height;
      const ctx = canvas.getContext("2d");
      ctx.fillStyle = "#fff"; // transparent pixels would turn black in a JPEG
      ctx.fillRect(0, 0, width, height);
      ctx.imageSmoothingEnabled = true;
      ctx.imageSmoothingQuality = "high";
      ctx.drawImage(decoded.source, 0, 0, width, height);
      const blob = await new Promise((resolve, reject) =>
        canvas.toBlob((b) => (b ? resolve(b) : reject(new UserError(MESSAGES.encodeFailed))), "image/jpeg", JPEG_QUALITY)
      );
      return { blob, width, height };
    } finally {
      decoded.release();
    }
  }

  async function takeFile(file) {
    if (!file) return;
    clearError();
    setBusy(true, "Preparing your photo…");
    let prepared;
    try {
      prepared = await downscale(file);
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
    renderBoxes();
    els.grid.replaceChildren();
    search(null);
  }

  // ---- search ---------------------------------------------------------------------------

  function csrfToken() {
    const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    // The page's own copy serves where the cookie is HttpOnly or named otherwise.
    return m ? decodeURIComponent(m[1]) : root.dataset.csrfToken || null;
  }

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

  function normBox(b) {
    return {
      x1: Number(b.x1),
      y1: Number(b.y1),
      x2: Number(b.x2),
      y2: Number(b.y2),
      score: b.score == null ? null : Number(b.score),
      label: b.label || "",
      edited: false,
    };
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
      renderBoxes();
    } else if (data.box && state.chosen >= 0 && !state.drag) {
      // Show what was searched: the server may have clamped the box to the photo.
      Object.assign(state.boxes[state.chosen], {
        x1: Number(data.box.x1),
        y1: Number(data.box.y1),
        x2: Number(data.box.x2),
        y2: Number(data.box.y2),
      });
      renderBoxes();
    }
    renderResults(data.results || []);
  }

  function retry() {
    clearError();
    search(state.lastBox);
  }

  // ---- boxes ----------------------------------------------------------------------------

  const pct = (v, total) => (100 * v) / total + "%";
  const isWhole = (b) => b.label === "image" && !b.edited;

  function boxName(b) {
    if (b.edited) return "your selection";
    if (isWhole(b)) return "whole photo";
    return b.label || "object";
  }

  function placeBox(el, b) {
    el.style.left = pct(b.x1, state.width);
    el.style.top = pct(b.y1, state.height);
    el.style.width = pct(b.x2 - b.x1, state.width);
    el.style.height = pct(b.y2 - b.y1, state.height);
  }

  function boxElement(i) {
    return els.boxes.querySelector('.ps-box[data-index="' + i + '"]');
  }

  function renderBoxes() {
    const active = document.activeElement;
    const refocus = active && els.boxes.contains(active) ? Number(active.dataset.index) : -1;
    els.boxes.replaceChildren();
    frame.hidden = true;
    const chosenBox = state.boxes[state.chosen];
    els.boxes.classList.toggle("is-editing", Boolean(chosenBox) && !isWhole(chosenBox));
    if (!state.width || !state.boxes.length) return;

    // Tab order: detections by score, the whole photo last. Stacking: smaller boxes above
    // larger ones, so a box inside another stays clickable.
    const order = state.boxes.map((b, i) => i);
    order.sort((a, b) => {
      const wa = isWhole(state.boxes[a]), wb = isWhole(state.boxes[b]);
      if (wa !== wb) return wa ? 1 : -1;
      return (state.boxes[b].score || 0) - (state.boxes[a].score || 0);
    });
    const area = (b) => (b.x2 - b.x1) * (b.y2 - b.y1);
    const byArea = state.boxes.map((b, i) => i).sort((a, b) => area(state.boxes[b]) - area(state.boxes[a]));

    for (const i of order) {
      const b = state.boxes[i];
      const chosen = i === state.chosen;
      const el = document.createElement("button");
      el.type = "button";
      el.className = "ps-box" + (chosen ? " is-chosen" : "") + (isWhole(b) ? " is-whole" : "");
      el.dataset.index = String(i);
      el.style.zIndex = String(1 + byArea.indexOf(i));
      placeBox(el, b);
      el.setAttribute("aria-pressed", chosen ? "true" : "false");
      el.setAttribute("aria-label", boxLabel(b, chosen));
      const tag = document.createElement("span");
      tag.className = "ps-box-tag";
      tag.textContent = boxTag(b);
      tag.setAttribute("aria-hidden", "true");
      el.append(tag);
      els.boxes.append(el);
    }
    placeFrame();
    if (refocus >= 0) {
      const el = boxElement(refocus);
      if (el) el.focus({ preventScroll: true });
    }
    syncFrameFocus();
  }

  function placeFrame() {
    const b = state.boxes[state.chosen];
    frame.hidden = !b;
    if (!b) return;
    placeBox(frame, b);
    frame.classList.toggle("is-whole", isWhole(b));
    frameTag.textContent = boxTag(b);
  }

  const sureOf = (b) => (b.score != null && !isWhole(b) && !b.edited ? Math.round(b.score * 100) : null);

  function boxTag(b) {
    const sure = sureOf(b);
    return boxName(b) + (sure == null ? "" : " " + sure + "%");
  }

  function boxLabel(b, chosen) {
    const sure = sureOf(b);
    return (chosen ? "Searching " : "Search for ") + boxName(b) + (sure == null ? "" : ", " + sure + "% sure");
  }

  function clamp(v, lo, hi) {
    return Math.min(Math.max(v, lo), hi);
  }

  // The box after moving it (mode "move") or dragging one corner by (dx, dy) image pixels.
  function moved(orig, mode, dx, dy) {
    const W = state.width, H = state.height;
    const min = Math.min(MIN_BOX_PX, W, H);
    let { x1, y1, x2, y2 } = orig;
    if (mode === "move") {
      const w = x2 - x1, h = y2 - y1;
      x1 = clamp(x1 + dx, 0, W - w);
      y1 = clamp(y1 + dy, 0, H - h);
      return { ...orig, x1, y1, x2: x1 + w, y2: y1 + h };
    }
    if (mode.includes("w")) x1 = clamp(x1 + dx, 0, x2 - min);
    if (mode.includes("e")) x2 = clamp(x2 + dx, x1 + min, W);
    if (mode.includes("n")) y1 = clamp(y1 + dy, 0, y2 - min);
    if (mode.includes("s")) y2 = clamp(y2 + dy, y1 + min, H);
    return { ...orig, x1, y1, x2, y2 };
  }

  // An edited box becomes "your selection"; the whole-photo candidate itself stays
  // available, so an edit of it is a new box.
  function commitEdit(index, box, original) {
    if (isWhole(original)) {
      state.boxes[index] = original;
      state.boxes.push({ ...box, label: "selection", score: null, edited: true });
      state.chosen = state.boxes.length - 1;
    } else {
      state.boxes[index] = { ...box, edited: true };
    }
    return state.boxes[state.chosen];
  }

  function pick(index) {
    if (index === state.chosen || !state.boxes[index]) return;
    state.chosen = index;
    renderBoxes();
    const el = boxElement(index);
    if (el && document.activeElement !== el) el.focus({ preventScroll: true });
    search(state.boxes[index]);
  }

  function syncFrameFocus() {
    const el = document.activeElement;
    const focused = el && el.matches && el.matches(".ps-box.is-chosen:focus-visible");
    frame.classList.toggle("is-focused", Boolean(focused));
  }
  els.boxes.addEventListener("focusin", syncFrameFocus);
  els.boxes.addEventListener("focusout", () => setTimeout(syncFrameFocus, 0));

  els.boxes.addEventListener("click", (ev) => {
    const el = ev.target.closest(".ps-box");
    if (state.suppressClick) {
      state.suppressClick = false;
      return;
    }
    if (el) pick(Number(el.dataset.index));
  });

  // A press inside the chosen box can become a drag of it, even where a smaller box is drawn
  // above it; a press that does not move stays a click, which picks the box under it.
  function onPointerDown(ev) {
    state.suppressClick = false; // a new gesture
    if (ev.button !== 0 || state.drag || state.chosen < 0) return;
    const handle = ev.target.closest(".ps-handle");
    if (!handle && !els.boxes.contains(ev.target)) return;
    const rect = els.boxes.getBoundingClientRect();
    const sx = state.width / rect.width;
    const sy = state.height / rect.height;
    const b = state.boxes[state.chosen];
    if (!handle) {
      const x = (ev.clientX - rect.left) * sx;
      const y = (ev.clientY - rect.top) * sy;
      if (x < b.x1 || x > b.x2 || y < b.y1 || y > b.y2) return;
    }
    if (ev.pointerType === "mouse") ev.preventDefault(); // no text selection or image drag
    state.drag = {
      pointerId: ev.pointerId,
      mode: handle ? handle.dataset.corner : "move",
      x: ev.clientX,
      y: ev.clientY,
      sx,
      sy,
      index: state.chosen,
      orig: { ...b },
      active: false,
    };
  }

  function onPointerMove(ev) {
    const d = state.drag;
    if (!d || ev.pointerId !== d.pointerId) return;
    if (!d.active) {
      if (Math.hypot(ev.clientX - d.x, ev.clientY - d.y) < DRAG_SLOP_PX) return;
      d.active = true;
      // Captured only now: a press that never moves must stay a click on the box under it.
      els.photo.setPointerCapture(d.pointerId);
      els.photo.classList.add("is-dragging");
    }
    const b = moved(d.orig, d.mode, (ev.clientX - d.x) * d.sx, (ev.clientY - d.y) * d.sy);
    state.boxes[d.index] = b;
    const el = boxElement(d.index);
    if (el) placeBox(el, b);
    placeFrame();
  }

  function onPointerUp(ev) {
    const d = state.drag;
    if (!d || ev.pointerId !== d.pointerId) return;
    state.drag = null;
    els.photo.classList.remove("is-dragging");
    if (!d.active) return;
    state.suppressClick = true;
    if (ev.type === "pointercancel") {
      state.boxes[d.index] = d.orig;
      renderBoxes();
      return;
    }
    const box = commitEdit(d.index, state.boxes[d.index], d.orig);
    renderBoxes();
    search(box);
  }

  els.photo.addEventListener("pointerdown", onPointerDown);
  els.photo.addEventListener("pointermove", onPointerMove);
  els.photo.addEventListener("pointerup", onPointerUp);
  els.photo.addEventListener("pointercancel", onPointerUp);
  els.photo.addEventListener("dragstart", (ev) => ev.preventDefault());

  const ARROWS = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };

  els.boxes.addEventListener("keydown", (ev) => {
    state.suppressClick = false; // Enter and Space click: they are no drag's aftermath
    const el = ev.target.closest(".ps-box");
    const dir = ARROWS[ev.key];
    if (!el || !dir || ev.ctrlKey || ev.metaKey) return;
    const index = Number(el.dataset.index);
    if (index !== state.chosen) return;
    ev.preventDefault();
    const step = Math.max(2, Math.round(Math.max(state.width, state.height) * (ev.altKey ? 0.005 : 0.02)));
    const orig = state.boxes[index];
    const box = moved(orig, ev.shiftKey ? "se" : "move", dir[0] * step, dir[1] * step);
    if (box.x1 === orig.x1 && box.y1 === orig.y1 && box.x2 === orig.x2 && box.y2 === orig.y2) return;
    const committed = commitEdit(index, box, orig);
    const focused = boxElement(index);
    if (state.chosen === index && focused) {
      // Same element: move it in place so focus and screen-reader position are kept.
      placeBox(focused, committed);
      focused.setAttribute("aria-label", boxLabel(committed, true));
      focused.querySelector(".ps-box-tag").textContent = boxTag(committed);
      placeFrame();
    } else {
      renderBoxes();
      const el2 = boxElement(state.chosen);
      if (el2) el2.focus({ preventScroll: true });
    }
    clearTimeout(state.debounce);
    state.debounce = setTimeout(() => search(state.boxes[state.chosen]), KEY_DEBOUNCE_MS);
  });

  // ---- results --------------------------------------------------------------------------

  function card(r) {
    const li = document.createElement("li");
    li.className = "ps-card";
    const a = document.createElement("a");
    a.className = "ps-card-link";
    a.href = r.url;
    a.dataset.productId = String(r.product_id);
    a.dataset.position = String(r.position);
    a.dataset.score = String(r.score);
    const img = document.createElement("img");
    img.src = r.image_url || "";
    img.alt = "";
    img.loading = "lazy";
    img.decoding = "async";
    if (!r.image_url) img.hidden = true;
    const title = document.createElement("span");
    title.className = "ps-card-title";
    title.textContent = r.title;
    const price = document.createElement("span");
    price.className = "ps-card-price";
    price.textContent = r.price + " " + r.currency;
    const merchant = document.createElement("span");
    merchant.className = "ps-card-merchant";
    merchant.textContent = r.merchant;
    const match = Math.round(clamp(Number(r.score) || 0, 0, 1) * 100);
    const score = document.createElement("span");
    score.className = "ps-card-score";
    const meter = document.createElement("span");
    meter.className = "ps-meter";
    meter.setAttribute("aria-hidden", "true");
    const fill = document.createElement("span");
    fill.style.width = match + "%";
    meter.append(fill);
    score.append(meter, document.createTextNode(match + "% match"));
    a.append(img, title, price, merchant, score);
    li.append(a);
    return li;
  }

  function renderResults(results) {
    els.grid.replaceChildren(...results.map(card));
    els.grid.dataset.queryId = String(state.queryId);
    const b = state.boxes[state.chosen];
    const what = !b || isWhole(b) ? "" : b.edited ? " for your selection" : " for the " + boxName(b);
    els.status.textContent = results.length
      ? results.length + (results.length === 1 ? " matching product" : " matching products") + what + "."
      : "No matching products" + what + ". Try another box, fewer filters or a closer photo.";
  }

  function recordClick(a) {
    if (state.queryId == null) return;
    const payload = {
      query_id: state.queryId,
      product_id: Number(a.dataset.productId),
      position: Number(a.dataset.position),
      kind: "click",
    };
    const key = payload.query_id + ":" + payload.product_id;
    if (state.clicked.has(key)) return;
    state.clicked.add(key);
    const body = JSON.stringify(payload);
    let queued = false;
    if (navigator.sendBeacon) {
      try {
        queued = navigator.sendBeacon(cfg.clickUrl, new Blob([body], { type: "application/json" }));
      } catch (e) {
        queued = false;
      }
    }
    if (!queued) {
      const headers = { "Content-Type": "application/json" };
      const token = csrfToken();
      if (token) headers["X-CSRFToken"] = token;
      // keepalive lets the request outlive the page we are leaving.
      fetch(cfg.clickUrl, { method: "POST", body, headers, keepalive: true, credentials: "same-origin" }).catch(
        () => {}
      );
    }
  }

  function onResultActivate(ev) {
    if (ev.type === "auxclick" && ev.button !== 1) return;
    const a = ev.target.closest("a.ps-card-link");
    if (a) recordClick(a);
  }
  els.grid.addEventListener("click", onResultActivate);
  els.grid.addEventListener("auxclick", onResultActivate);

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
})();
