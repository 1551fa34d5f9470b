// The boxes drawn over the photo: pick one, move or resize the chosen one with the pointer
// or the arrow keys; every change searches again (`search(box)`, box in uploaded-image
// pixels, the coordinate system of state.width x state.height).

// Long enough that a run of arrow presses makes one request, short enough to feel live.
const KEY_DEBOUNCE_MS = 600;
const MIN_BOX_PX = 16; // in uploaded-image pixels; smaller crops carry too little to match
const DRAG_SLOP_PX = 4; // screen pixels a pointer may wobble before a press becomes a drag
const ARROWS = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };

const pct = (v, total) => (100 * v) / total + "%";
const clamp = (v, lo, hi) => Math.min(Math.max(v, lo), hi);

export const isWhole = (b) => b.label === "image" && !b.edited;

export function boxName(b) {
  if (b.edited) return "your selection";
  if (isWhole(b)) return "whole photo";
  return b.label || "object";
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

// A box as the API sends it, as the page keeps it.
export function normBox(b) {
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

// Wires the box layer (els.photo, els.boxes) to the page's state; returns render().
export function boxEditor({ state, els, search }) {
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

  function placeBox(el, b) {
    el.style.left = pct(b.x1, state.width);
    el.style.top = pct(b.y1, state.height);
    el.style.width = pct(b.x2 - b.x1, state.width);
    el.style.height = pct(b.y2 - b.y1, state.height);
  }

  function boxElement(i) {
    return els.boxes.querySelector('.ps-box[data-index="' + i + '"]');
  }

  function render() {
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
    render();
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
      render();
      return;
    }
    const box = commitEdit(d.index, state.boxes[d.index], d.orig);
    render();
    search(box);
  }

  els.photo.addEventListener("pointerdown", onPointerDown);
  els.photo.addEventListener("pointermove", onPointerMove);
  els.photo.addEventListener("pointerup", onPointerUp);
  els.photo.addEventListener("pointercancel", onPointerUp);
  els.photo.addEventListener("dragstart", (ev) => ev.preventDefault());

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
      render();
      const el2 = boxElement(state.chosen);
      if (el2) el2.focus({ preventScroll: true });
    }
    clearTimeout(state.debounce);
    state.debounce = setTimeout(() => search(state.boxes[state.chosen]), KEY_DEBOUNCE_MS);
  });

  return { render };
}
