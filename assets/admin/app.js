// The admin UI: a hash-routed single page on the admin API alone (the same calls a script makes
// with a token). Built from the shared kit in /kit/.
import { h, button, field, checkbox, showErrors, statusDot, badge, table, toast, dialog, copyField, chart, bars, meter } from "/kit/ui.js";
import { createI18n, LANGUAGES } from "/kit/i18n.js";
import { api, setCsrfToken } from "/kit/api.js";
import { dictionaries } from "./i18n.js";

const i18n = createI18n(dictionaries);
const t = i18n.t;
const root = document.getElementById("root");
let session = null;
const enc = encodeURIComponent;
const INTERACTIVE_MARK = "lark-oncall:interactive";

const PAGES = [
  ["integrations", integrationsPage], ["incidents", incidentsPage], ["members", membersPage], ["rules", rulesPage],
  ["oplog", oplogPage], ["quota", quotaPage], ["sources", sourcesPage], ["webhooks", webhooksPage],
  ["tokens", tokensPage], ["scheduler", schedulerPage], ["backup", backupPage], ["account", accountPage],
];

function formOf(fields, onsubmit, submitLabel = t("save")) {
  const form = h("form", { novalidate: true }, h("p", { class: "form-error", role: "alert" }), fields, button(submitLabel, null, { kind: "primary", type: "submit" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showErrors(form, null);
    try {
      await onsubmit(new FormData(form), form);
    } catch (e) {
      showErrors(form, e);
    }
  });
  return form;
}

async function guard(fn) {
  try {
    return await fn();
  } catch (e) {
    toast(e.message, "bad");
    return null;
  }
}

function loginPage() {
  const form = formOf([
    field({ name: "username", label: t("username"), value: "admin", autocomplete: "username", required: true }),
    field({ name: "password", label: t("password"), type: "password", autocomplete: "current-password", required: true }),
  ], async (data) => {
    session = await api("POST", "/api/v1/session", { username: data.get("username"), password: data.get("password") });
    setCsrfToken(session.csrf_token);
    route();
  }, t("login"));
  form.id = "login";
  root.replaceChildren(h("main", { class: "content", id: "main", style: "max-width:26rem" },
    h("div", { class: "card" }, h("h1", {}, t("app")), langPicker(), form)));
}

function langPicker() {
  const id = "lang-select";
  const select = h("select", { id, onchange: (e) => { i18n.setLang(e.target.value); route(); } },
    Object.entries(LANGUAGES).map(([v, l]) => h("option", { value: v, selected: v === i18n.lang }, l)));
  return h("div", { class: "row" }, h("label", { for: id, class: "visually-hidden" }, t("lang")), select);
}

function shell(current, content) {
  const nav = h("nav", { class: "nav", id: "site-menu", "aria-label": t("nav_main") },
    h("ul", {}, PAGES.map(([name]) => h("li", {}, h("a", { href: `#/${name}`, "aria-current": name === current ? "page" : false }, t(`nav_${name}`))))));
  const main = h("main", { class: "content", id: "main", tabindex: "-1" }, content);
  const app = h("div", { class: "app" });
  // On a phone the navigation, language and log-out fold behind one button, so the top bar
  // stays one row; from 48rem up the toggle is hidden and everything shows.
  const toggle = h("button", { type: "button", class: "btn small menu-toggle", id: "menu-toggle", "aria-expanded": "false", "aria-controls": "site-menu",
    onclick: () => toggle.setAttribute("aria-expanded", String(app.classList.toggle("menu-open"))) }, h("span", { "aria-hidden": "true" }, "☰ "), t("menu"));
  app.append(
    h("a", { class: "skip-link", href: "#main", onclick: (e) => { e.preventDefault(); main.focus(); } }, t("skip")),
    h("header", { class: "topbar" }, h("a", { class: "brand", href: "#/integrations" }, "lark-oncall"),
      button([h("span", { class: "long-label" }, t("test_incident")), h("span", { class: "short-label", "aria-hidden": "true" }, t("test_incident_short"))], raiseTestIncident,
        { kind: "primary", small: true, id: "test-incident", "aria-label": t("test_incident") }),
      toggle,
      h("div", { class: "topbar-tools" }, langPicker(), button(t("logout"), logout, { small: true }))),
    nav, main);
  root.replaceChildren(app);
}

async function logout() {
  await guard(() => api("DELETE", "/api/v1/session"));
  session = null;
  setCsrfToken("");
  location.hash = "";
  loginPage();
}

async function raiseTestIncident() {
  const inc = await guard(() => api("POST", "/api/v1/incidents", { title: t("test_incident_title"), severity: "info", description: "Raised with the admin UI's test button" }));
  if (inc) {
    toast(t("test_raised", { n: inc.number }));
    location.hash = `#/incidents/${inc.id}`;
  }
}

async function route() {
  if (!session) {
    try {
      session = await api("GET", "/api/v1/session");
      setCsrfToken(session.csrf_token);
    } catch {
      return loginPage();
    }
  }
  // `#/page/id/sub?filters`: the filters are the page's to read.
  const [name = "integrations", id, sub] = location.hash.replace(/^#\/?/, "").split("?")[0].split("/").map(decodeURIComponent);
  const page = PAGES.find(([n]) => n === name) || PAGES[0];
  const content = h("div", { class: "stack" }, h("p", { class: "empty" }, t("loading")));
  shell(page[0], content);
  try {
    content.replaceChildren(...[await page[1](id, sub)].flat(Infinity).filter((x) => x !== null && x !== undefined));
  } catch (e) {
    if (e.status === 401) {
      session = null;
      return loginPage();
    }
    content.replaceChildren(h("p", { class: "form-error", role: "alert" }, e.message));
  }
  document.title = `${t(`nav_${page[0]}`)} · lark-oncall`;
  // The first page with its data shown and its controls live: what the time-to-interactive
  // measurement (BENCHMARKS.md) reads through the Performance API.
  if (!performance.getEntriesByName(INTERACTIVE_MARK).length) performance.mark(INTERACTIVE_MARK);
}

const healthOf = (i) => {
  const s = i.callback_stats;
  if (s.last_error && (!s.last_accepted_at || s.last_error.at > s.last_accepted_at)) return "bad";
  return s.accepted + s.challenges > 0 ? "ok" : "pending";
};
const HEALTH_DOT = { ok: "ok", bad: "bad", pending: "warn" };

async function integrationsPage(id, sub) {
  if (id === "new") return integrationForm(null);
  if (id && sub === "edit") return integrationForm(await api("GET", `/api/v1/integrations/${enc(id)}`));
  if (id) return setupGuide(await api("GET", `/api/v1/integrations/${enc(id)}`));
  const { items } = await api("GET", "/api/v1/integrations");
  return [
    h("div", { class: "row" }, h("h1", {}, t("nav_integrations")), h("span", { class: "spacer" }), h("a", { class: "btn primary", href: "#/integrations/new" }, t("new_integration"))),
    table([
      { label: t("name"), render: (i) => h("a", { href: `#/integrations/${enc(i.id)}` }, i.name) },
      { label: t("status"), render: (i) => statusDot(HEALTH_DOT[healthOf(i)], t(`health_${healthOf(i)}`)) },
      { label: t("app_id"), render: (i) => h("code", {}, i.app_id) },
      { label: t("domain"), render: (i) => i.domain },
      { label: t("war_room"), render: (i) => t(`yes_no_${i.war_room}`) },
    ], items, { empty: t("none"), caption: t("nav_integrations") }),
  ];
}

function secretField(name, label, existing) {
  const isSet = existing?.secrets?.[name];
  return field({ name, label, type: "password", autocomplete: "off", hint: existing ? (isSet ? t("secret_hint_set") : t("secret_hint_unset")) : undefined });
}

const RECEIVE_MODES = ["webhook", "long_connection"];

function integrationForm(existing) {
  const form = formOf([
    field({ name: "name", label: t("name"), value: existing?.name, required: true }),
    field({ name: "app_id", label: t("app_id"), value: existing?.app_id, required: true, placeholder: "cli_a1b2c3d4e5f6" }),
    secretField("app_secret", t("app_secret"), existing),
    secretField("verification_token", t("verification_token"), existing),
    secretField("encrypt_key", t("encrypt_key"), existing),
    field({ name: "domain", label: t("domain"), type: "select", value: existing?.domain || "feishu", options: [["feishu", "Feishu 飞书"], ["lark", "Lark"]] }),
    field({ name: "plan", label: t("plan"), type: "select", value: existing?.plan || "basic_free", options: [["basic_free", "Basic Free"], ["paid", "Paid"]] }),
    field({ name: "monthly_quota", label: t("monthly_quota"), type: "number", value: existing?.monthly_quota ?? 10000 }),
    field({ name: "api_base_url", label: t("api_base_url"), type: "url", value: existing?.api_base_url || "" }),
    checkbox({ name: "war_room", label: t("war_room"), checked: existing?.war_room }),
    h("fieldset", { class: "field", "data-field": "receive_modes", "aria-describedby": "receive-modes-hint" }, h("legend", {}, t("receive_modes")),
      RECEIVE_MODES.map((mode) => {
        const c = checkbox({ name: "receive_modes", label: t(`receive_${mode}`), checked: (existing?.receive_modes || ["webhook"]).includes(mode) });
        c.querySelector("input").value = mode;
        return c;
      }),
      h("div", { class: "hint", id: "receive-modes-hint" }, t("receive_modes_hint")),
      h("div", { class: "error", role: "alert" })),
  ], async (data, f) => {
    const body = { name: data.get("name"), app_id: data.get("app_id"), domain: data.get("domain"), plan: data.get("plan"), war_room: f.elements.war_room.checked, receive_modes: data.getAll("receive_modes") };
    const quota = data.get("monthly_quota");
    if (quota) body.monthly_quota = Number(quota);
    for (const secret of ["app_secret", "verification_token", "encrypt_key"]) if (data.get(secret)) body[secret] = data.get(secret);
    const base = data.get("api_base_url");
    if (base || existing?.api_base_url) body.api_base_url = base;
    const saved = existing ? await api("PATCH", `/api/v1/integrations/${enc(existing.id)}`, body) : await api("POST", "/api/v1/integrations", body);
    toast(t("saved"));
    location.hash = `#/integrations/${enc(saved.id)}`;
  });
  form.id = "integration-form";
  return [h("h1", {}, existing ? `${t("edit")}: ${existing.name}` : t("new_integration")), h("div", { class: "card" }, form)];
}

function checkText(c) {
  const reason = c.reason.startsWith("refused:") ? "refused" : c.reason;
  const key = `fix_${reason}`;
  const text = t(key, { detail: c.detail, reason: c.reason.slice(8) });
  return text === key ? t("fix_other", { detail: `${c.reason} ${c.detail}` }) : text;
}

async function renderChecks(list, id) {
  list.setAttribute("aria-busy", "true");
  const { checks } = await api("GET", `/api/v1/integrations/${enc(id)}/setup`);
  list.replaceChildren(...checks.map((c) => h("li", { "data-check": c.id, "data-state": c.state },
    h("span", { class: `dot ${HEALTH_DOT[c.state]}`, "aria-hidden": "true" }),
    h("div", {}, h("strong", {}, t(`check_${c.id}`)), " ", h("span", { class: "visually-hidden" }, t(`health_${c.state}`)), h("div", { class: "fix" }, checkText(c))))));
  list.removeAttribute("aria-busy");
}

function setupGuide(i) {
  const checks = h("ul", { class: "checks", id: "checks", "aria-live": "polite" });
  renderChecks(checks, i.id).catch((e) => toast(e.message, "bad"));
  const url = (label, where, value, key) => h("div", { class: "stack", "data-url": key }, h("h3", {}, label), h("p", { class: "muted" }, where), copyField(value, { label, copyLabel: t("copy"), copiedLabel: t("copied") }));
  const codes = (items) => h("ul", {}, items.map((x) => h("li", {}, h("code", {}, x))));
  return [
    h("div", { class: "row" }, h("h1", {}, `${i.name} — ${t("setup_guide")}`), h("span", { class: "spacer" }),
      h("a", { class: "btn", href: `#/integrations/${enc(i.id)}/edit` }, t("edit")),
      button(t("remove"), async () => {
        if ((await dialog(t("confirm_remove", { what: i.name }), [], [[t("cancel"), "no"], [t("remove"), "yes", "danger"]])) !== "yes") return;
        if (await guard(() => api("DELETE", `/api/v1/integrations/${enc(i.id)}`)) !== null) location.hash = "#/integrations";
      }, { kind: "danger" })),
    h("p", {}, h("code", {}, i.app_id), " · ", `${t("app_secret")}: ${t(i.secrets.app_secret ? "set" : "not_set")}`, " · ",
      `${t("verification_token")}: ${t(i.secrets.verification_token ? "set" : "not_set")}`, " · ", `${t("encrypt_key")}: ${t(i.secrets.encrypt_key ? "set" : "not_set")}`),
    h("section", { class: "card", "aria-labelledby": "checks-h" }, h("div", { class: "row" }, h("h2", { id: "checks-h" }, t("checks")), h("span", { class: "spacer" }),
      button(t("run_checks"), () => renderChecks(checks, i.id).catch((e) => toast(e.message, "bad")), { small: true, id: "run-checks" })), checks),
    i.long_connection ? longConnectionSection(i) : null,
    h("section", { class: "card stack", "aria-labelledby": "urls-h" }, h("h2", { id: "urls-h" }, t("urls")),
      url(t("url_web"), t("url_web_where"), i.urls.web_configuration, "web"),
      url(t("url_callback"), t("url_callback_where"), i.urls.message_card_request, "callback"),
      url(t("url_redirect"), t("url_redirect_where"), i.urls.redirect, "redirect")),
    h("section", { class: "card stack" }, h("h2", {}, t("step_events")), codes(["im.message.receive_v1", "im.chat.disbanded_v1", "im.chat.member.bot.deleted_v1"]),
      h("h2", {}, t("step_callbacks")), codes(["card.action.trigger", "card.action.trigger_v1"]),
      h("h2", {}, t("step_permissions")), codes(["im:chat", "im:message", "im:message:send_as_bot", "contact:user.id:readonly", "contact:user.base:readonly"]),
      h("h2", {}, t("step_publish")), h("p", {}, t("step_publish_text"))),
  ];
}

const CONNECTION_DOT = { connected: "ok", connecting: "warn", waiting_to_retry: "warn", stopped: "bad" };

function connectionStatus(status) {
  const list = h("dl", { class: "facts", id: "long-connection-status" });
  const fact = (label, value) => [h("dt", {}, label), h("dd", {}, value)];
  if (!status) {
    list.append(...fact(t("status"), statusDot("warn", t("lc_not_started"))));
    return list;
  }
  list.dataset.state = status.state;
  list.append(...[
    fact(t("status"), statusDot(CONNECTION_DOT[status.state] || "warn", t(`lc_${status.state}`))),
    fact(t("lc_connected_since"), i18n.date(status.connected_since)),
    fact(t("lc_last_frame"), i18n.date(status.last_frame_at)),
    fact(t("lc_reconnects"), i18n.number(status.reconnects)),
    fact(t("lc_events"), i18n.number(status.events_received)),
    status.last_error ? fact(t("lc_last_error"), h("div", { class: "flagged", id: "long-connection-error" },
      `${i18n.date(status.last_error.at)} · ${status.last_error.reason}: ${status.last_error.message}`,
      h("div", { class: "fix" }, status.last_error.fix), status.last_error.retrying ? h("div", { class: "muted" }, t("lc_retrying")) : h("div", {}, t("lc_not_retrying")))) : null,
  ].flat().filter(Boolean));
  return list;
}

// The connection changes on its own (connects, drops, is refused): the section re-reads it
// every few seconds while it is on the page.
const LONG_CONNECTION_POLL_MS = 2000;

// The server's console steps are English; zh_cn has its own words for the same steps.
function stepText(step, n) {
  const key = `lc_step_${n + 1}`;
  return i18n.lang === "zh_cn" && t(key) !== key ? t(key) : step;
}

function longConnectionSection(i) {
  const host = h("div", {}, connectionStatus(i.long_connection.status));
  const timer = setInterval(async () => {
    if (!document.body.contains(host)) return clearInterval(timer);
    const fresh = await api("GET", `/api/v1/integrations/${enc(i.id)}`).catch(() => null);
    if (fresh?.long_connection && document.body.contains(host)) host.replaceChildren(connectionStatus(fresh.long_connection.status));
  }, LONG_CONNECTION_POLL_MS);
  return h("section", { class: "card stack", "aria-labelledby": "lc-h" }, h("h2", { id: "lc-h" }, t("long_connection")), host,
    h("h3", {}, t("lc_console_steps")), h("ol", {}, i.long_connection.console_steps.map((step, n) => h("li", {}, stepText(step, n)))));
}

const sevBadge = (s) => badge(t(s), s);
const statusBadge = (s) => badge(t(s), s === "resolved" ? "ok" : s === "acknowledged" ? "info" : "bad");

async function incidentsPage(id) {
  if (id) return incidentDetail(await api("GET", `/api/v1/incidents/${enc(id)}`));
  const q = new URLSearchParams(location.hash.split("?")[1] || "");
  const params = new URLSearchParams();
  for (const k of ["status", "severity"]) if (q.get(k)) params.set(k, q.get(k));
  const { items } = await api("GET", `/api/v1/incidents?${params}`);
  const text = (q.get("text") || "").toLowerCase();
  const source = q.get("source") || "";
  const shown = items.filter((i) => (!text || `${i.title} ${i.description}`.toLowerCase().includes(text)) && (!source || i.source_id === source));
  const filters = h("form", { class: "row", role: "search" },
    field({ name: "status", label: t("status"), type: "select", value: q.get("status") || "", options: [["", t("any")], ["triggered", t("triggered")], ["acknowledged", t("acknowledged")], ["resolved", t("resolved")]] }),
    field({ name: "severity", label: t("severity"), type: "select", value: q.get("severity") || "", options: [["", t("any")], ["critical", t("critical")], ["warning", t("warning")], ["info", t("info")]] }),
    field({ name: "source", label: t("source"), value: source }),
    field({ name: "text", label: t("text"), type: "search", value: q.get("text") || "" }),
    button(t("filter"), null, { type: "submit" }));
  filters.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const next = new URLSearchParams([...new FormData(filters)].filter(([, v]) => v));
    location.hash = `#/incidents?${next}`;
  });
  return [h("h1", {}, t("incidents")), filters, table([
    { label: "#", render: (i) => h("a", { href: `#/incidents/${enc(i.id)}` }, `#${i.number}`) },
    { label: t("title"), render: (i) => i.title },
    { label: t("severity"), render: (i) => sevBadge(i.severity) },
    { label: t("status"), render: (i) => statusBadge(i.status) },
    { label: t("created"), render: (i) => i18n.date(i.created_at) },
  ], shown, { empty: t("none"), caption: t("incidents") })];
}

async function incidentDetail(inc) {
  const act = (action, body) => async () => {
    if (await guard(() => api("POST", `/api/v1/incidents/${enc(inc.id)}/${action}`, body)) !== null) route();
  };
  const actions = inc.status === "resolved" ? [button(t("reopen"), act("reopen"))] : [
    inc.status === "acknowledged" ? button(t("unacknowledge"), act("unacknowledge"), { id: "unack" }) : button(t("acknowledge"), act("acknowledge"), { kind: "primary", id: "ack" }),
    button(t("snooze"), act("snooze", { minutes: 30 })), button(t("resolve"), act("resolve"), { id: "resolve" }),
  ];
  const room = h("div", { id: "war-room" });
  const roomLink = (chatId) => `https://applink.feishu.cn/client/chat/open?openChatId=${enc(chatId)}`;
  const showRoom = (r, link) => room.replaceChildren(...[r && r.chat_id
    ? h("p", {}, `${t("war_room_link")}: `, h("a", { href: link || roomLink(r.chat_id), rel: "noopener", id: "war-room-link" }, r.name || r.chat_id), ` (${r.state})`)
    : h("p", { class: "muted" }, t("war_room_none")), r && r.chat_id ? null : button(t("war_room_open"), async () => {
      const opened = await guard(() => api("POST", `/api/v1/incidents/${enc(inc.id)}/war-room`, {}));
      if (opened) showRoom(opened.war_room, opened.presser?.link);
    }, { id: "open-war-room" })].filter(Boolean));
  api("GET", `/api/v1/incidents/${enc(inc.id)}/war-room`).then((r) => showRoom(r.war_room || r)).catch(() => showRoom(null));
  const log = h("div", {}, h("p", { class: "empty" }, t("loading")));
  api("GET", `/api/v1/oplog?incident=${enc(inc.id)}`).then(({ items }) => log.replaceChildren(oplogTable(items))).catch((e) => log.replaceChildren(e.message));
  return [
    h("h1", {}, `#${inc.number} ${inc.title}`),
    h("div", { class: "row" }, sevBadge(inc.severity), h("span", { id: "incident-status" }, statusBadge(inc.status)), h("span", { class: "spacer" }), actions),
    inc.description ? h("p", {}, inc.description) : null,
    h("section", { class: "card" }, h("h2", {}, t("war_room_link")), room),
    h("section", { class: "card" }, h("h2", {}, t("timeline")), h("ol", {}, (inc.timeline || []).map((e) => h("li", {}, h("strong", {}, e.kind), ` · ${i18n.date(e.at)} · ${e.actor?.name || ""} ${e.detail || ""}`)))),
    h("section", { class: "card" }, h("h2", {}, t("cards")), table([
      { label: t("receiver"), render: (c) => h("code", {}, c.receiver || c.chat_id || c.open_id || "") },
      { label: "message_id", render: (c) => h("code", {}, c.message_id || "") },
    ], inc.cards || [], { empty: t("none") })),
    h("section", { class: "card" }, h("h2", {}, t("oplog")), log),
  ];
}

function outcomeText(outcome) {
  const key = `outcome_${outcome}`;
  const text = t(key);
  return text === key ? outcome : text;
}

function oplogTable(items) {
  return table([
    { label: t("when"), render: (e) => i18n.date(e.at) },
    { label: t("outcome"), render: (e) => badge(outcomeText(e.outcome), e.outcome === "delivered" ? "ok" : e.outcome.startsWith("held") || e.outcome === "retry" || e.outcome === "quota_reserved" ? "warn" : "bad") },
    { label: t("receiver"), render: (e) => h("code", {}, e.receiver || "") },
    { label: t("incident"), render: (e) => (e.incident_id ? h("a", { href: `#/incidents/${enc(e.incident_id)}` }, e.incident_id) : "—") },
    { label: t("lark_code"), render: (e) => (e.lark_code ? `${e.lark_code} ${e.lark_message || ""}` : e.reason || "—") },
    { label: t("actions"), render: (e) => (["failed", "app_not_linked"].includes(e.outcome) && e.job_id ? button(t("resend"), async () => {
      if (await guard(() => api("POST", `/api/v1/jobs/${e.job_id}/retry`))) toast(t("resent"));
    }, { small: true }) : "") },
  ], items, { empty: t("none"), caption: t("oplog") });
}

const OUTCOMES = ["delivered", "failed", "retry", "held_quota", "quota_reserved", "app_not_linked"];
// `datetime-local` values are local wall time; the API takes RFC 3339 instants.
const toInstant = (local) => (local ? new Date(local).toISOString() : "");
const toLocalInput = (instant) => {
  if (!instant) return "";
  const d = new Date(instant);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
};

async function oplogPage() {
  const q = new URLSearchParams(location.hash.split("?")[1] || "");
  const params = new URLSearchParams([...q].filter(([k, v]) => v && ["outcome", "integration", "incident", "receiver", "before", "since", "until"].includes(k)));
  const [page, ints] = await Promise.all([api("GET", `/api/v1/oplog?${params}`), api("GET", "/api/v1/integrations")]);
  const filters = h("form", { class: "filters", role: "search", id: "oplog-filters", "aria-label": t("filter") },
    field({ name: "outcome", label: t("outcome"), type: "select", value: q.get("outcome") || "", options: [["", t("any")], ...OUTCOMES.map((o) => [o, t(`outcome_${o}`)])] }),
    field({ name: "integration", label: t("nav_integrations"), type: "select", value: q.get("integration") || "", options: [["", t("any")], ...ints.items.map((i) => [i.id, i.name])] }),
    field({ name: "receiver", label: t("receiver"), value: q.get("receiver") || "" }),
    field({ name: "incident", label: t("incident"), value: q.get("incident") || "" }),
    field({ name: "since", label: t("from"), type: "datetime-local", value: toLocalInput(q.get("since")) }),
    field({ name: "until", label: t("to"), type: "datetime-local", value: toLocalInput(q.get("until")) }),
    h("div", { class: "filter-actions" }, button(t("filter"), null, { type: "submit" })));
  filters.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const chosen = [...new FormData(filters)].map(([k, v]) => [k, k === "since" || k === "until" ? toInstant(v) : v]).filter(([, v]) => v);
    location.hash = `#/oplog?${new URLSearchParams(chosen)}`;
  });
  const older = page.next_before ? h("a", { class: "btn", href: `#/oplog?${new URLSearchParams({ ...Object.fromEntries(params), before: page.next_before })}` }, t("older")) : null;
  return [h("h1", {}, t("oplog")), filters, h("div", { id: "oplog" }, oplogTable(page.items)), older];
}

function contactBody(data, existing) {
  const body = { name: data.get("name") };
  // An unchanged address is not sent: a changed one unlinks look-up links (they are redone).
  for (const k of ["email", "mobile"]) {
    const v = data.get(k) || "";
    if (existing ? v !== (existing[k] || "") : v) body[k] = v;
  }
  return body;
}

async function membersPage(id) {
  const [{ items }, ints] = await Promise.all([api("GET", "/api/v1/members"), api("GET", "/api/v1/integrations")]);
  if (id) return memberEditor(items.find((m) => m.id === id) || (await api("GET", `/api/v1/members/${enc(id)}`)), ints.items);
  const link = (m) => ints.items.map((i) => {
    const l = m.lark?.[i.id];
    return h("div", {}, statusDot(l ? "ok" : "warn", `${i.name}: ${l ? t(`linked_${l.linked_via}`) : t("not_linked")}`));
  });
  const add = formOf([field({ name: "name", label: t("name"), required: true }), field({ name: "email", label: t("email"), type: "email" }), field({ name: "mobile", label: t("mobile"), type: "tel" })],
    async (data) => {
      await api("POST", "/api/v1/members", contactBody(data, null));
      toast(t("saved"));
      route();
    }, t("add"));
  add.id = "member-form";
  const csv = formOf([field({ name: "csv", label: t("csv_import"), type: "textarea", placeholder: "Alice,alice@example.com,+14155550101" })], async (data) => {
    let n = 0;
    for (const line of String(data.get("csv")).split(/\r?\n/).map((l) => l.trim()).filter(Boolean)) {
      const [name, email, mobile] = line.split(",").map((s) => s.trim());
      if (name.toLowerCase() === "name") continue;
      await api("POST", "/api/v1/members", { name, ...(email ? { email } : {}), ...(mobile ? { mobile } : {}) });
      n++;
    }
    toast(t("imported", { n }));
    route();
  }, t("import"));
  return [
    h("div", { class: "row" }, h("h1", {}, t("members")), h("span", { class: "spacer" }), ints.items.map((i) => button(`${t("link_everyone")} (${i.name})`, async () => {
      const r = await guard(() => api("POST", `/api/v1/members/link?integration_id=${enc(i.id)}`));
      if (r) { toast(t("linked_n", { n: r.linked ?? r.items?.length ?? "" })); route(); }
    }, { small: true }))),
    table([
      { label: t("name"), render: (m) => h("a", { href: `#/members/${enc(m.id)}`, "data-member": m.name }, m.name) },
      { label: t("email"), render: (m) => m.email || "—" },
      { label: t("mobile"), render: (m) => m.mobile || "—" },
      { label: t("role"), render: (m) => t(`role_${m.role}`) },
      { label: t("link_status"), render: link },
      { label: t("actions"), render: (m) => h("div", { class: "row" }, h("a", { class: "btn small", href: `#/members/${enc(m.id)}`, "aria-label": `${t("edit")}: ${m.name}` }, t("edit")), button(t("remove"), async () => {
        if ((await dialog(t("confirm_remove", { what: m.name }), [], [[t("cancel"), "no"], [t("remove"), "yes", "danger"]])) === "yes" && (await guard(() => api("DELETE", `/api/v1/members/${enc(m.id)}`))) !== null) route();
      }, { small: true, kind: "danger", "aria-label": `${t("remove")}: ${m.name}` })) },
    ], items, { empty: t("none"), caption: t("members") }),
    h("div", { class: "grid" }, h("section", { class: "card", "aria-labelledby": "member-add-h" }, h("h2", { id: "member-add-h" }, t("add")), add), h("section", { class: "card", "aria-labelledby": "member-import-h" }, h("h2", { id: "member-import-h" }, t("import")), csv)),
  ];
}

function memberEditor(m, integrations) {
  const form = formOf([
    field({ name: "name", label: t("name"), value: m.name, required: true }),
    field({ name: "email", label: t("email"), type: "email", value: m.email || "" }),
    field({ name: "mobile", label: t("mobile"), type: "tel", value: m.mobile || "" }),
    field({ name: "role", label: t("role"), type: "select", value: m.role, options: ["responder", "viewer", "admin"].map((r) => [r, t(`role_${r}`)]) }),
    integrations.map((i) => field({ name: `open_id-${i.id}`, label: t("open_id_for", { name: i.name }), value: m.lark?.[i.id]?.open_id || "", placeholder: "ou_…",
      hint: m.lark?.[i.id] ? t(`linked_${m.lark[i.id].linked_via}`) : t("not_linked") })),
  ], async (data) => {
    const body = { ...contactBody(data, m), role: data.get("role") };
    const manual = Object.fromEntries(integrations.map((i) => [i.id, String(data.get(`open_id-${i.id}`) || "").trim()]).filter(([id, v]) => v && v !== m.lark?.[id]?.open_id));
    if (Object.keys(manual).length) body.lark_open_ids = manual;
    await api("PATCH", `/api/v1/members/${enc(m.id)}`, body);
    toast(t("saved"));
    location.hash = "#/members";
  });
  form.id = "member-edit-form";
  return [h("div", { class: "row" }, h("h1", {}, `${t("edit")}: ${m.name}`), h("span", { class: "spacer" }), h("a", { class: "btn", href: "#/members" }, t("cancel"))), h("div", { class: "card" }, form)];
}

async function rulesPage(id) {
  const [{ items }, ints, members] = await Promise.all([api("GET", "/api/v1/rules"), api("GET", "/api/v1/integrations"), api("GET", "/api/v1/members")]);
  if (id) return ruleEditor(id === "new" ? null : items.find((r) => r.id === id), ints.items, members.items);
  // Moves a rule one place and renumbers the list 10, 20, 30…: positions may tie (rules made
  // through the API without one), and a swap of tied positions would change nothing.
  const move = (rule, delta) => async () => {
    const sorted = [...items].sort((a, b) => a.position - b.position);
    const at = sorted.indexOf(rule);
    if (!sorted[at + delta]) return;
    sorted.splice(at, 1);
    sorted.splice(at + delta, 0, rule);
    const body = (r, position) => ({ name: r.name, integration_id: r.integration_id, match: r.match, time_windows: r.time_windows, timezone: r.timezone, levels: r.levels, position });
    if (await guard(async () => {
      for (const [i, r] of sorted.entries()) if (r.position !== (i + 1) * 10) await api("PUT", `/api/v1/rules/${enc(r.id)}`, body(r, (i + 1) * 10));
      return true;
    })) {
      await route();
      document.querySelector(`[data-rule="${CSS.escape(rule.name)}"] [data-move="${delta < 0 ? "up" : "down"}"]`)?.focus();
    }
  };
  return [
    h("div", { class: "row" }, h("h1", {}, t("rules")), h("span", { class: "spacer" }), h("a", { class: "btn primary", href: "#/rules/new" }, t("new_rule"))),
    items.length ? null : h("div", { class: "card empty", id: "rules-empty" }, h("p", {}, t("no_rules")), h("a", { class: "btn primary", href: "#/rules/new" }, t("new_rule"))),
    h("ol", { class: "stack plain", id: "rules" }, [...items].sort((a, b) => a.position - b.position).map((r) => h("li", { class: "card", "data-rule": r.name },
      h("div", { class: "row" }, h("a", { href: `#/rules/${enc(r.id)}` }, h("strong", {}, r.name)), h("span", { class: "spacer" }),
        button("↑", move(r, -1), { small: true, "aria-label": `${t("up")}: ${r.name}`, "data-move": "up" }), button("↓", move(r, 1), { small: true, "aria-label": `${t("down")}: ${r.name}`, "data-move": "down" })),
      h("p", { class: "muted" }, `${(r.match?.severities || []).join(", ") || t("any")} · ${r.levels.length} ${t("levels")} · ${r.timezone}`),
      (r.needs_attention || []).length ? h("p", { class: "flagged" }, `${t("chat_flagged")}: `, r.needs_attention.map((n) => (typeof n === "string" ? n : n.chat_id || JSON.stringify(n))).join(", ")) : null))),
  ];
}

function ruleEditor(rule, integrations, members) {
  const integrationId = rule?.integration_id || integrations[0]?.id || "";
  let chats = [];
  const levelsHost = h("div", { id: "levels" });
  const levels = (rule?.levels || [{ members: [], chats: [], delay_minutes: 0, repeat_count: 0, escalate_unless: "acknowledged" }]).map((l) => ({ ...l }));
  const flagged = new Set((rule?.needs_attention || []).map((n) => (typeof n === "string" ? n : n.chat_id)));
  const drawLevels = () => levelsHost.replaceChildren(...levels.map((l, n) => h("fieldset", { "data-level": n },
    h("legend", {}, t("level", { n: n + 1 })),
    h("div", { class: "field" }, h("span", { class: "hint" }, t("members")), members.map((m) => checkbox({ name: `members-${n}`, label: m.name, checked: l.members.includes(m.id) })).map((c, i) => { c.querySelector("input").value = members[i].id; return c; })),
    h("div", { class: "field chat-picker" }, h("span", { class: "hint" }, t("chats")),
      [...new Set([...chats.map((c) => c.chat_id), ...l.chats])].map((cid) => {
        const chat = chats.find((c) => c.chat_id === cid);
        const bad = flagged.has(cid) || (chat && chat.status !== "active");
        const c = checkbox({ name: `chats-${n}`, label: `${chat?.name || cid}${bad ? ` — ${t("chat_flagged")}` : ""}`, checked: l.chats.includes(cid) });
        c.querySelector("input").value = cid;
        if (bad) c.classList.add("flagged");
        return c;
      })),
    field({ name: `delay-${n}`, label: t("delay"), type: "number", value: l.delay_minutes ?? 0 }),
    field({ name: `repeat_every-${n}`, label: t("repeat_every"), type: "number", value: l.repeat_every_minutes ?? "" }),
    field({ name: `repeat_count-${n}`, label: t("repeat_count"), type: "number", value: l.repeat_count ?? 0 }),
    field({ name: `escalate_after-${n}`, label: t("escalate_after"), type: "number", value: l.escalate_after_minutes ?? "" }),
    field({ name: `escalate_unless-${n}`, label: t("escalate_unless"), type: "select", value: l.escalate_unless || "acknowledged", options: [["acknowledged", t("acknowledged")], ["resolved", t("resolved")]] }))));
  const loadChats = async (refresh) => {
    const r = await guard(() => api("GET", `/api/v1/integrations/${enc(form.elements.integration_id.value)}/chats${refresh ? "?refresh=true" : ""}`));
    if (r) { chats = r.items; readLevels(); drawLevels(); }
  };
  const readLevels = () => levels.forEach((l, n) => {
    if (!form.querySelector(`[data-level="${n}"]`)) return;
    l.members = [...form.querySelectorAll(`[name="members-${n}"]:checked`)].map((e) => e.value);
    l.chats = [...form.querySelectorAll(`[name="chats-${n}"]:checked`)].map((e) => e.value);
    const num = (k) => (form.elements[`${k}-${n}`].value === "" ? null : Number(form.elements[`${k}-${n}`].value));
    l.delay_minutes = num("delay") ?? 0;
    l.repeat_every_minutes = num("repeat_every");
    l.repeat_count = num("repeat_count") ?? 0;
    l.escalate_after_minutes = num("escalate_after");
    l.escalate_unless = form.elements[`escalate_unless-${n}`].value;
  });
  const form = formOf([
    field({ name: "name", label: t("name"), value: rule?.name, required: true }),
    field({ name: "integration_id", label: t("nav_integrations"), type: "select", value: integrationId, options: integrations.map((i) => [i.id, i.name]), onchange: () => loadChats(false) }),
    h("fieldset", { "data-field": "match" }, h("legend", {}, t("severities")), ["critical", "warning", "info"].map((s) => { const c = checkbox({ name: "severities", label: t(s), checked: rule?.match?.severities?.includes(s) }); c.querySelector("input").value = s; return c; })),
    field({ name: "labels", label: t("labels"), type: "textarea", value: Object.entries(rule?.match?.labels || {}).map(([k, v]) => `${k}=${v}`).join("\n") }),
    field({ name: "timezone", label: t("timezone"), value: rule?.timezone || "Asia/Shanghai" }),
    field({ name: "time_windows", label: t("windows"), type: "textarea", value: (rule?.time_windows || []).map((w) => `${(w.days || []).join(",")} ${w.start}-${w.end}`).join("\n") }),
    h("div", { class: "row" }, h("h2", {}, t("levels")), h("span", { class: "spacer" }), button(t("refresh_chats"), () => loadChats(true), { small: true, id: "refresh-chats" }),
      button(t("add_level"), () => { readLevels(); levels.push({ members: [], chats: [], delay_minutes: 0, repeat_count: 0, escalate_unless: "acknowledged" }); drawLevels(); }, { small: true })),
    levelsHost,
  ], async (data) => {
    readLevels();
    const labels = Object.fromEntries(String(data.get("labels")).split("\n").map((l) => l.trim()).filter(Boolean).map((l) => l.split("=").map((s) => s.trim())));
    const windows = String(data.get("time_windows")).split("\n").map((l) => l.trim()).filter(Boolean).map((l) => {
      const [days, span] = l.split(/\s+/);
      const [start, end] = (span || "").split("-");
      const [a, b] = days.split("-").map(Number);
      const list = days.includes("-") ? Array.from({ length: b - a + 1 }, (_, i) => a + i) : days.split(",").map(Number);
      return { days: list, start, end };
    });
    const body = { name: data.get("name"), integration_id: data.get("integration_id"), match: { severities: data.getAll("severities"), labels }, time_windows: windows, timezone: data.get("timezone"), levels };
    if (rule) body.position = rule.position;
    await (rule ? api("PUT", `/api/v1/rules/${enc(rule.id)}`, body) : api("POST", "/api/v1/rules", body));
    toast(t("saved"));
    location.hash = "#/rules";
  });
  form.id = "rule-form";
  drawLevels();
  if (integrationId) loadChats(false);
  const remove = rule ? button(t("remove"), async () => {
    if ((await guard(() => api("DELETE", `/api/v1/rules/${enc(rule.id)}`))) !== null) location.hash = "#/rules";
  }, { kind: "danger" }) : null;
  return [h("div", { class: "row" }, h("h1", {}, rule ? rule.name : t("new_rule")), h("span", { class: "spacer" }), remove), h("div", { class: "card" }, form)];
}

// Every day of the report's month up to today, so a quiet day shows as a zero, not a gap.
function dailyPoints(q) {
  const [year, month] = q.month.split("-").map(Number);
  const days = Object.keys(q.by_day || {}).sort();
  const today = new Date().toISOString().slice(0, 7) === q.month ? new Date().getDate() : new Date(year, month, 0).getDate();
  const last = Math.max(today, ...days.map((d) => Number(d.slice(8, 10))));
  return Array.from({ length: last }, (_, i) => {
    const day = `${q.month}-${String(i + 1).padStart(2, "0")}`;
    return { label: String(i + 1), value: q.by_day?.[day] || 0, title: day };
  });
}

function limiterText(l) {
  if (!l.queued && !l.in_flight && !l.held) return t("limiter_idle");
  return t("limiter_state", { queued: i18n.number(l.queued), in_flight: i18n.number(l.in_flight), held: i18n.number(l.held),
    wait: l.oldest_wait_seconds == null ? "—" : duration(l.oldest_wait_seconds) });
}

function duration(seconds) {
  if (seconds < 60) return t("seconds", { n: Math.round(seconds) });
  if (seconds < 3600) return t("minutes", { n: Math.round(seconds / 60) });
  return t("hours", { n: (seconds / 3600).toFixed(1) });
}

async function quotaPage() {
  const { items } = await api("GET", "/api/v1/integrations");
  const sections = await Promise.all(items.map(async (i) => {
    const q = await api("GET", `/api/v1/integrations/${enc(i.id)}/quota`);
    const l = q.limiter;
    const limit = q.limit == null ? t("unlimited") : i18n.number(q.limit);
    return h("section", { class: "card stack", "data-quota": i.id, "aria-labelledby": `quota-h-${i.id}` },
      h("h2", { id: `quota-h-${i.id}` }, i.name),
      h("p", {}, h("strong", { class: "quota-used" }, `${i18n.number(q.used)} / ${limit}`), ` ${t("used")}`, q.percent_used == null ? "" : ` (${i18n.number(Math.round(q.percent_used * 10) / 10)} %)`),
      q.limit == null ? null : meter(q.used, q.limit, { label: t("used") }),
      (q.warnings || []).length ? h("p", { class: "flagged" }, t("warnings_crossed", { list: q.warnings.map((w) => `${w} %`).join(", ") })) : null,
      h("p", {}, `${t("forecast")}: ${q.forecast_exhausted_on || t("no_forecast")} · ${t("resets")}: ${i18n.date(q.resets_at)}`),
      h("div", { class: "grid" },
        h("div", { class: "stack" }, h("h3", {}, t("per_day")), q.used ? chart(dailyPoints(q), { title: t("per_day") }) : h("p", { class: "empty", "data-empty": "per_day" }, t("no_calls_yet"))),
        h("div", { class: "stack" }, h("h3", {}, t("by_class")), q.used ? bars(Object.entries(q.by_class || {}).sort((a, b) => b[1] - a[1]).map(([label, value]) => ({ label: t(`class_${label}`), value })), { title: t("by_class") }) : h("p", { class: "empty", "data-empty": "by_class" }, t("no_calls_yet")))),
      l ? h("div", { class: "stack", "data-limiter": i.id }, h("h3", {}, t("limiter")), h("p", { class: "limiter-state" }, limiterText(l)),
        l.held ? h("p", {}, h("a", { href: `#/oplog?${new URLSearchParams({ integration: i.id, outcome: "held_quota" })}` }, t("held_see_log", { n: i18n.number(l.held) }))) : null) : null);
  }));
  return [h("h1", {}, t("quota")), sections.length ? sections : h("p", { class: "empty" }, t("none"))];
}

async function sourcesPage() {
  const { items } = await api("GET", "/api/v1/sources");
  const shown = h("div");
  const form = formOf([field({ name: "name", label: t("name"), required: true })], async (data) => {
    const s = await api("POST", "/api/v1/sources", { name: data.get("name") });
    const base = location.origin;
    const key = s.integration_key;
    const snippet = `receivers:\n  - name: lark-oncall\n    webhook_configs:\n      - url: "${base}/api/v1/alerts/alertmanager?integration_key=${key}"\n        send_resolved: true`;
    const curl = `curl -sS -X POST '${base}/api/v1/alerts/standard?integration_key=${key}' -H 'content-type: application/json' -d '{"title_rule":"Disk almost full on db-1","event_status":"Critical","alert_key":"disk-db-1"}'`;
    shown.replaceChildren(h("div", { class: "card stack" }, h("p", {}, t("key_once")), copyField(key, { copyLabel: t("copy"), copiedLabel: t("copied") }),
      h("h3", {}, t("am_snippet")), h("pre", {}, snippet), copyField(snippet.split("\n")[3].trim(), { copyLabel: t("copy"), copiedLabel: t("copied") }),
      h("h3", {}, t("curl_standard")), h("pre", {}, curl)));
  }, t("add"));
  return [h("h1", {}, t("sources")), table([
    { label: t("name"), render: (s) => s.name }, { label: "ID", render: (s) => h("code", {}, s.id) }, { label: t("created"), render: (s) => i18n.date(s.created_at) },
    { label: t("actions"), render: (s) => button(t("remove"), async () => { if ((await guard(() => api("DELETE", `/api/v1/sources/${enc(s.id)}`))) !== null) route(); }, { small: true, kind: "danger" }) },
  ], items, { empty: t("none") }), shown, h("section", { class: "card" }, h("h2", {}, t("new_source")), form)];
}

const WEBHOOK_ATTEMPTS_SHOWN = 3;

async function webhooksPage() {
  const { items } = await api("GET", "/api/v1/webhooks");
  // Every attempt is in the operation log under the pseudo-integration `webhook:<id>`.
  const attempts = Object.fromEntries(await Promise.all(items.map(async (w) =>
    [w.id, (await api("GET", `/api/v1/oplog?${new URLSearchParams({ integration: `webhook:${w.id}`, limit: WEBHOOK_ATTEMPTS_SHOWN })}`)).items])));
  const shown = h("div");
  const form = formOf([field({ name: "name", label: t("name"), required: true }), field({ name: "url", label: t("url"), type: "url", required: true })], async (data) => {
    const w = await api("POST", "/api/v1/webhooks", { name: data.get("name"), url: data.get("url") });
    shown.replaceChildren(h("div", { class: "card" }, h("p", {}, t("secret_once")), copyField(w.secret || w.signing_secret || "", { copyLabel: t("copy"), copiedLabel: t("copied") })));
  }, t("add"));
  return [h("h1", {}, t("webhooks")), table([
    { label: t("name"), render: (w) => w.name }, { label: t("url"), render: (w) => h("code", {}, w.url) },
    { label: t("last_attempts"), render: (w) => attempts[w.id].length ? h("ul", { class: "plain attempts", "data-attempts": w.id }, attempts[w.id].map((a) => h("li", {},
      badge(outcomeText(a.outcome), a.outcome === "delivered" ? "ok" : a.outcome.startsWith("retry") ? "warn" : "bad"), ` ${a.kind.replace(/^webhook:/, "")} · ${i18n.date(a.at)}`, a.reason ? ` · ${a.reason}` : "", a.latency_ms != null ? ` · ${a.latency_ms} ms` : ""))) : h("span", { class: "muted" }, t("no_attempts")) },
    { label: t("actions"), render: (w) => button(t("remove"), async () => { if ((await guard(() => api("DELETE", `/api/v1/webhooks/${enc(w.id)}`))) !== null) route(); }, { small: true, kind: "danger" }) },
  ], items, { empty: t("none") }), shown, h("section", { class: "card" }, h("h2", {}, t("add")), form)];
}

async function tokensPage() {
  const { items } = await api("GET", "/api/v1/tokens");
  const shown = h("div");
  const form = formOf([field({ name: "name", label: t("name"), required: true }),
    field({ name: "scope", label: t("scope"), type: "select", value: "read", options: [["read", "read"], ["admin", "admin"], ["metrics", "metrics"]] }),
    field({ name: "expires_in_days", label: t("expires_days"), type: "number" })], async (data) => {
    const body = { name: data.get("name"), scope: data.get("scope") };
    if (data.get("expires_in_days")) body.expires_in_days = Number(data.get("expires_in_days"));
    const tok = await api("POST", "/api/v1/tokens", body);
    shown.replaceChildren(h("div", { class: "card" }, h("p", {}, t("token_once")), copyField(tok.token, { copyLabel: t("copy"), copiedLabel: t("copied") })));
  }, t("add"));
  return [h("h1", {}, t("tokens")), table([
    { label: t("name"), render: (x) => x.name }, { label: t("scope"), render: (x) => x.scope }, { label: t("last_used"), render: (x) => i18n.date(x.last_used_at) },
    { label: t("actions"), render: (x) => button(t("revoke"), async () => { if ((await guard(() => api("DELETE", `/api/v1/tokens/${enc(x.id)}`))) !== null) route(); }, { small: true, kind: "danger" }) },
  ], items, { empty: t("none") }), shown, h("section", { class: "card" }, h("h2", {}, t("add")), form)];
}

async function schedulerPage() {
  const { jobs } = await api("GET", "/api/v1/scheduler");
  return [h("h1", {}, t("scheduler")), table([
    { label: t("name"), render: (j) => h("code", {}, j.name) }, { label: t("schedule"), render: (j) => h("code", {}, j.schedule) },
    { label: t("last_run"), render: (j) => i18n.date(j.last_finished_at) }, { label: t("outcome"), render: (j) => j.last_outcome || "—" },
    { label: t("actions"), render: (j) => button(t("run_now"), async () => { if (await guard(() => api("POST", `/api/v1/scheduler/${enc(j.name)}/run`))) { toast(t("ran", { name: j.name })); route(); } }, { small: true }) },
  ], jobs, { empty: t("none") })];
}

function backupPage() {
  return [h("h1", {}, t("backup")), h("div", { class: "card stack" }, h("p", {}, t("backup_text")), button(t("download"), async () => {
    const res = await fetch("/api/v1/backup", { method: "POST", headers: { "x-csrf-token": session.csrf_token }, credentials: "same-origin" });
    if (!res.ok) return toast((await res.json().catch(() => ({}))).error?.message || res.statusText, "bad");
    const a = h("a", { href: URL.createObjectURL(await res.blob()), download: `lark-oncall-${new Date().toISOString().slice(0, 10)}.redb` });
    document.body.append(a);
    a.click();
    a.remove();
  }, { kind: "primary" }))];
}

function accountPage() {
  const form = formOf([
    field({ name: "current_password", label: t("current_password"), type: "password", autocomplete: "current-password", required: true }),
    field({ name: "password", label: t("new_password"), type: "password", autocomplete: "new-password", required: true }),
  ], async (data, f) => {
    await api("PUT", "/api/v1/account/password", { current_password: data.get("current_password"), password: data.get("password") });
    f.reset();
    toast(t("password_changed"));
  }, t("change_password"));
  return [h("h1", {}, t("account")), h("p", {}, t("signed_in_as", { user: session.username })), h("div", { class: "card" }, form)];
}

window.addEventListener("hashchange", route);
route();
