// The small component set both UIs are built from: an element builder, buttons, form fields
// with their error under them, status dots, severity badges, lists, toasts, dialogs, copy
// buttons, tabs and SVG charts. No framework: each returns a DOM element.
let uid = 0;
const nextId = (prefix) => `${prefix}-${++uid}`;

/** `h("a", {href, onclick}, "text", child)`: attributes, `on*` listeners, then children. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    // Through the CSSOM: the pages' CSP (style-src 'self') refuses style attributes.
    else if (key === "style") el.style.cssText = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function button(label, onclick, { kind = "", type = "button", small = false, ...rest } = {}) {
  return h("button", { type, class: ["btn", kind, small && "small"].filter(Boolean).join(" "), onclick, ...rest }, label);
}

/**
 * A labelled control with a hint and an error line under it. `type` is an input type, or
 * `select` (with `options: [[value, label]]`), or `textarea`. The control's `name` is the API
 * field it edits, so `showErrors` can find it.
 */
export function field({ name, label, type = "text", value = "", hint, options = [], required = false, placeholder, autocomplete, ...rest }) {
  const id = nextId("f");
  const hintId = hint ? `${id}-hint` : null;
  const errorId = `${id}-error`;
  const described = [hintId, errorId].filter(Boolean).join(" ");
  let control;
  if (type === "select") {
    control = h("select", { id, name, "aria-describedby": described, required, ...rest },
      options.map(([v, l]) => h("option", { value: v, selected: String(v) === String(value) }, l)));
  } else if (type === "textarea") {
    control = h("textarea", { id, name, "aria-describedby": described, required, placeholder, ...rest });
    control.value = value ?? "";
  } else {
    control = h("input", { id, name, type, "aria-describedby": described, required, placeholder, autocomplete, ...rest });
    control.value = value ?? "";
  }
  return h("div", { class: "field", dataset: { field: name } },
    h("label", { for: id }, label),
    control,
    hint ? h("div", { class: "hint", id: hintId }, hint) : null,
    h("div", { class: "error", id: errorId, role: "alert" }));
}

export function checkbox({ name, label, checked = false }) {
  const id = nextId("c");
  return h("div", { class: "check", dataset: { field: name } },
    h("input", { id, name, type: "checkbox", checked }),
    h("label", { for: id }, label));
}

/** Clears a form's errors, then puts `error`'s message under the field it names (or at the top). */
export function showErrors(form, error) {
  form.querySelectorAll(".field.invalid").forEach((f) => f.classList.remove("invalid"));
  form.querySelectorAll(".field .error").forEach((e) => (e.textContent = ""));
  form.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
  const top = form.querySelector(".form-error");
  if (top) top.textContent = "";
  if (!error) return;
  const name = error.field ? error.field.split(/[.[]/)[0] : null;
  const wrapper = name ? form.querySelector(`.field[data-field="${CSS.escape(name)}"]`) : null;
  if (wrapper) {
    wrapper.classList.add("invalid");
    wrapper.querySelector(".error").textContent = error.message;
    // A group of buttons (a list being built) has no control of its own to mark.
    const control = wrapper.querySelector("input, select, textarea");
    control?.setAttribute("aria-invalid", "true");
    (control || wrapper.querySelector("button"))?.focus();
  } else if (top) {
    top.textContent = error.message;
  } else {
    toast(error.message, "bad");
  }
}

/** A status dot with its meaning in words (colour is never the only signal). */
export function statusDot(state, label) {
  return h("span", { class: "status" }, h("span", { class: `dot ${state}`, "aria-hidden": "true" }), h("span", {}, label));
}

const SEVERITY_CLASS = { critical: "critical", warning: "warning", info: "info" };
export function badge(text, kind) {
  return h("span", { class: `badge ${kind || SEVERITY_CLASS[text] || "neutral"}` }, text);
}

/**
 * A table on a laptop, labelled cards on a phone. `columns: [{label, render(row)}]`.
 */
export function table(columns, rows, { empty = "—", caption } = {}) {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h("div", { class: "table-wrap" },
    h("table", { class: "list" },
      caption ? h("caption", { class: "visually-hidden" }, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c.label)))),
      h("tbody", {}, rows.map((row) => h("tr", {}, columns.map((c) => h("td", { "data-label": c.label }, c.render(row))))))));
}

let toastHost;
export function toast(message, kind = "") {
  if (!toastHost) {
    toastHost = h("div", { class: "toasts", role: "status", "aria-live": "polite" });
    document.body.append(toastHost);
  }
  const el = h("div", { class: `toast ${kind}` }, message);
  toastHost.append(el);
  setTimeout(() => el.remove(), 3000);
  return el;
}

/** A modal dialog; resolves with the value of the button pressed (or null on Escape). */
export function dialog(title, body, actions) {
  return new Promise((resolve) => {
    const titleId = nextId("d");
    const el = h("dialog", { "aria-labelledby": titleId },
      h("h2", { id: titleId }, title),
      h("div", { class: "stack" }, body),
      h("div", { class: "row", style: "margin-top:1rem;justify-content:flex-end" },
        actions.map(([label, value, kind]) => button(label, () => el.close(value), { kind }))));
    el.addEventListener("close", () => {
      el.remove();
      resolve(el.returnValue || null);
    });
    document.body.append(el);
    el.showModal();
  });
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Plain http or no permission: the legacy path still works in a user gesture.
    const area = h("textarea", { style: "position:fixed;opacity:0" });
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
}

/**
 * The value shown in full with a copy button beside it. The button's name is its visible
 * word plus what it copies (hidden text, so the visible word stays part of the name).
 */
export function copyField(value, { label, copyLabel = "Copy", copiedLabel = "Copied" } = {}) {
  const word = h("span", {}, copyLabel);
  const btn = button([word, label ? h("span", { class: "visually-hidden" }, `: ${label}`) : null], async () => {
    await copyText(value);
    word.textContent = copiedLabel;
    btn.dataset.copied = "true";
    setTimeout(() => (word.textContent = copyLabel), 2000);
  }, { small: true });
  return h("div", { class: "copy" }, h("code", {}, value), btn);
}

/** Tabs with the ARIA tabs pattern (arrow keys move between tabs). `items: [[label, render]]`. */
export function tabs(items, { selected = 0 } = {}) {
  const list = h("div", { role: "tablist" });
  const panel = h("div", { role: "tabpanel", tabindex: "0" });
  const buttons = items.map(([label], i) => h("button", { type: "button", role: "tab", id: nextId("tab"), onclick: () => select(i) }, label));
  function select(i) {
    buttons.forEach((b, j) => {
      b.setAttribute("aria-selected", String(i === j));
      b.tabIndex = i === j ? 0 : -1;
    });
    panel.setAttribute("aria-labelledby", buttons[i].id);
    panel.replaceChildren(items[i][1]());
  }
  list.addEventListener("keydown", (ev) => {
    const at = buttons.indexOf(document.activeElement);
    if (at < 0) return;
    const step = ev.key === "ArrowRight" ? 1 : ev.key === "ArrowLeft" ? -1 : 0;
    if (!step) return;
    const next = (at + step + buttons.length) % buttons.length;
    buttons[next].focus();
    select(next);
  });
  list.append(...buttons);
  select(selected);
  return h("div", { class: "tabs" }, list, panel);
}

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  children.forEach((c) => el.append(c instanceof Node ? c : document.createTextNode(String(c))));
  return el;
}

/**
 * A bar chart (`kind: "bar"`) or line chart (`"line"`) of `points: [{label, value, title?}]`,
 * with a text title for screen readers; every bar carries its value (and `title`, else its
 * label) as a tooltip. It is redrawn at the width it is shown at, one SVG unit to a CSS pixel,
 * so its labels keep their size on a phone instead of shrinking with the picture.
 */
export function chart(points, { title, kind = "bar", width = 600, height = 200 } = {}) {
  const host = h("div", { class: "chart-host" }, drawChart(points, { title, kind, width, height }));
  let drawnAt = width;
  new ResizeObserver(() => {
    const shown = Math.round(host.clientWidth);
    if (!shown || shown === drawnAt) return;
    drawnAt = shown;
    host.replaceChildren(drawChart(points, { title, kind, width: shown, height }));
  }).observe(host);
  return host;
}

// Wide enough for a day number or a short label at the chart's 12 px.
const X_LABEL_PX = 28;
const DIGIT_PX = 7.5;

function drawChart(points, { title, kind, width, height }) {
  const max = Math.max(1, ...points.map((p) => p.value));
  const pad = { l: 10 + DIGIT_PX * String(max).length, r: 8, t: 10, b: 24 };
  const innerW = width - pad.l - pad.r;
  const innerH = height - pad.t - pad.b;
  const step = innerW / Math.max(1, points.length);
  const y = (v) => pad.t + innerH - (v / max) * innerH;
  const svg = s("svg", { class: "chart", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": title || "" },
    s("title", {}, title || ""),
    s("line", { class: "axis", x1: pad.l, y1: pad.t + innerH, x2: width - pad.r, y2: pad.t + innerH }),
    s("text", { x: pad.l - 4, y: pad.t + 10, "text-anchor": "end" }, max),
    s("text", { x: pad.l - 4, y: pad.t + innerH, "text-anchor": "end" }, 0));
  if (kind === "line") {
    const d = points.map((p, i) => `${i ? "L" : "M"}${pad.l + step * i + step / 2},${y(p.value)}`).join(" ");
    svg.append(s("path", { class: "line", d }));
  }
  const labelEvery = Math.max(1, Math.ceil(X_LABEL_PX / step));
  points.forEach((p, i) => {
    const x = pad.l + step * i;
    if (kind === "bar") {
      svg.append(s("rect", { class: "bar", x: x + step * 0.15, width: step * 0.7, y: y(p.value), height: pad.t + innerH - y(p.value) }, s("title", {}, `${p.title || p.label}: ${p.value}`)));
    }
    if (i % labelEvery === 0) svg.append(s("text", { x: x + step / 2, y: height - 6, "text-anchor": "middle" }, p.label));
  });
  return svg;
}

/** A progress bar of `value` / `max`, coloured at the warning thresholds. */
export function meter(value, max, { label } = {}) {
  const pct = max ? Math.min(100, (value / max) * 100) : 0;
  const cls = pct >= 95 ? "bad" : pct >= 80 ? "warn" : "";
  return h("div", { class: `meter ${cls}`, role: "meter", "aria-valuemin": "0", "aria-valuemax": String(max), "aria-valuenow": String(value), "aria-label": label || "" },
    h("span", { style: `width:${pct}%` }));
}

/**
 * Horizontal bars with their label and number in text, for a few named values (`points:
 * [{label, value}]`): legible at any width, where an SVG's labels would shrink with it.
 */
export function bars(points, { title } = {}) {
  const max = Math.max(1, ...points.map((p) => p.value));
  return h("ul", { class: "bars", "aria-label": title || null },
    points.map((p) => h("li", {},
      h("span", { class: "bar-label" }, p.label),
      h("span", { class: "bar-track", "aria-hidden": "true" }, h("span", { style: `width:${(p.value / max) * 100}%` })),
      h("span", { class: "bar-value" }, p.value.toLocaleString()))));
}
