// The result cards, and their clicks sent to the click log (sendBeacon, else fetch).
import { boxName, isWhole } from "./boxes.js";

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
  const match = Math.round(Math.min(Math.max(Number(r.score) || 0, 0), 1) * 100);
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

// Wires the result grid (els.grid, els.status) to the page's state; returns render(results).
export function resultList({ state, els, clickUrl, csrfToken }) {
  function render(results) {
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
        queued = navigator.sendBeacon(clickUrl, new Blob([body], { type: "application/json" }));
      } catch (e) {
        queued = false;
      }
    }
    if (!queued) {
      const headers = { "Content-Type": "application/json" };
      const token = csrfToken();
      if (token) headers["X-CSRFToken"] = token;
      // keepalive lets the request outlive the page we are leaving.
      fetch(clickUrl, { method: "POST", body, headers, keepalive: true, credentials: "same-origin" }).catch(() => {});
    }
  }

  function onResultActivate(ev) {
    if (ev.type === "auxclick" && ev.button !== 1) return;
    const a = ev.target.closest("a.ps-card-link");
    if (a) recordClick(a);
  }
  els.grid.addEventListener("click", onResultActivate);
  els.grid.addEventListener("auxclick", onResultActivate);

  return { render };
}
