// The admin UI: a hash-routed single page on the admin API alone (the same calls a script makes
// with a token). Built from the shared kit in /kit/.
import { h, button, field, checkbox, showErrors, statusDot, badge, table, toast, dialog, copyField, chart, bars, meter, tabs } from "/kit/ui.js";
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
  ["integrations", integrationsPage], ["incidents", incidentsPage], ["members", membersPage], ["schedules", schedulesPage],
  ["rules", rulesPage], ["bots", botsPage], ["oplog", oplogPage], ["quota", quotaPage], ["sources", sourcesPage], ["webhooks", webhooksPage],
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
const HEALTH_DOT = { ok: "ok", bad: "bad", pending: "warn", not_needed: "neutral" };

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
    h("section", { class: "card stack" }, h("h2", {}, t("step_events")), codes(["im.message.receive_v1", "im.chat.disbanded_v1", "im.chat.member.bot.added_v1", "im.chat.member.bot.deleted_v1", "im.chat.updated_v1"]),
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
  const filters = h("form", { class: "filters", role: "search", id: "oplog-filters", "aria-label": t("filters") },
    field({ name: "outcome", label: t("outcome"), type: "select", value: q.get("outcome") || "", options: [["", t("any")], ...OUTCOMES.map((o) => [o, t(`outcome_${o}`)])] }),
    field({ name: "integration", label: t("integration"), type: "select", value: q.get("integration") || "", options: [["", t("any")], ...ints.items.map((i) => [i.id, i.name])] }),
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
  return [h("h1", {}, t("oplog")), filterDisclosure(filters, [...params.keys()].filter((k) => k !== "before").length), h("div", { id: "oplog" }, oplogTable(page.items)), older];
}

// Six filters stack into a screenful on a phone: there they fold behind one "Filters" line
// (open when some are in force); from 48rem up they show.
const WIDE_SCREEN = "(min-width: 48rem)";

function filterDisclosure(form, active) {
  return h("details", { class: "filter-disclosure", id: "oplog-filter-disclosure", open: active > 0 || matchMedia(WIDE_SCREEN).matches },
    h("summary", {}, active ? t("filters_active", { n: active }) : t("filters")), form);
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
  if (id) {
    const [bots, schedules] = await Promise.all([api("GET", "/api/v1/bot-webhooks"), api("GET", "/api/v1/schedules")]);
    return ruleEditor(id === "new" ? null : items.find((r) => r.id === id), ints.items, members.items, { bots: bots.items, schedules: schedules.items });
  }
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

/**
 * Weekly windows as one line each, `days start-end`: days `0-4` (a range) or `0,2,4` (a list),
 * 0 = Monday. What rules' time windows and schedules' restrictions are written as.
 */
function parseWindows(text) {
  return String(text || "").split("\n").map((l) => l.trim()).filter(Boolean).map((l) => {
    const [days, span] = l.split(/\s+/);
    const [start, end] = (span || "").split("-");
    const [a, b] = days.split("-").map(Number);
    const list = days.includes("-") ? Array.from({ length: b - a + 1 }, (_, i) => a + i) : days.split(",").map(Number);
    return { days: list, start, end };
  });
}

const formatWindows = (windows) => (windows || []).map((w) => `${(w.days || []).join(",")} ${w.start}-${w.end}`).join("\n");

/** Checkboxes for the ids a level names (`name-n`), one per target; nothing when there is none. */
function levelTargets(name, n, label, targets, chosen) {
  if (!targets.length) return null;
  return h("div", { class: "field", "data-targets": name }, h("span", { class: "hint" }, label), targets.map((target) => {
    const c = checkbox({ name: `${name}-${n}`, label: target.name, checked: (chosen || []).includes(target.id) });
    c.querySelector("input").value = target.id;
    return c;
  }));
}

const NEW_LEVEL = () => ({ members: [], chats: [], bot_webhooks: [], schedules: [], delay_minutes: 0, repeat_count: 0, escalate_unless: "acknowledged" });

function ruleEditor(rule, integrations, members, { bots, schedules }) {
  const integrationId = rule?.integration_id || integrations[0]?.id || "";
  let chats = [];
  const levelsHost = h("div", { id: "levels" });
  const levels = (rule?.levels || [NEW_LEVEL()]).map((l) => ({ ...l }));
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
    levelTargets("bot_webhooks", n, t("level_bots"), bots, l.bot_webhooks),
    levelTargets("schedules", n, t("level_schedules"), schedules, l.schedules),
    schedules.length ? checkbox({ name: `fall_through-${n}`, label: t("fall_through"), checked: l.fall_through_when_nobody_on_call }) : null,
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
    l.bot_webhooks = [...form.querySelectorAll(`[name="bot_webhooks-${n}"]:checked`)].map((e) => e.value);
    l.schedules = [...form.querySelectorAll(`[name="schedules-${n}"]:checked`)].map((e) => e.value);
    l.fall_through_when_nobody_on_call = Boolean(form.elements[`fall_through-${n}`]?.checked);
    const num = (k) => (form.elements[`${k}-${n}`].value === "" ? null : Number(form.elements[`${k}-${n}`].value));
    l.delay_minutes = num("delay") ?? 0;
    l.repeat_every_minutes = num("repeat_every");
    l.repeat_count = num("repeat_count") ?? 0;
    l.escalate_after_minutes = num("escalate_after");
    l.escalate_unless = form.elements[`escalate_unless-${n}`].value;
  });
  const form = formOf([
    field({ name: "name", label: t("name"), value: rule?.name, required: true }),
    field({ name: "integration_id", label: t("integration"), type: "select", value: integrationId, options: integrations.map((i) => [i.id, i.name]), onchange: () => loadChats(false) }),
    h("fieldset", { "data-field": "match" }, h("legend", {}, t("severities")), ["critical", "warning", "info"].map((s) => { const c = checkbox({ name: "severities", label: t(s), checked: rule?.match?.severities?.includes(s) }); c.querySelector("input").value = s; return c; })),
    field({ name: "labels", label: t("labels"), type: "textarea", value: Object.entries(rule?.match?.labels || {}).map(([k, v]) => `${k}=${v}`).join("\n") }),
    field({ name: "timezone", label: t("timezone"), value: rule?.timezone || "Asia/Shanghai" }),
    field({ name: "time_windows", label: t("windows"), type: "textarea", value: formatWindows(rule?.time_windows) }),
    h("div", { class: "row" }, h("h2", {}, t("levels")), h("span", { class: "spacer" }), button(t("refresh_chats"), () => loadChats(true), { small: true, id: "refresh-chats" }),
      button(t("add_level"), () => { readLevels(); levels.push(NEW_LEVEL()); drawLevels(); }, { small: true })),
    levelsHost,
  ], async (data) => {
    readLevels();
    const labels = Object.fromEntries(String(data.get("labels")).split("\n").map((l) => l.trim()).filter(Boolean).map((l) => l.split("=").map((s) => s.trim())));
    const windows = parseWindows(data.get("time_windows"));
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
  // Every answer lists the group bots' calls (the same list): they are shown once.
  let botCalls = [];
  const sections = await Promise.all(items.map(async (i) => {
    const q = await api("GET", `/api/v1/integrations/${enc(i.id)}/quota`);
    botCalls = q.bot_webhooks || [];
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
  const bots = botCalls.length ? h("section", { class: "card stack", id: "quota-bots", "aria-labelledby": "quota-bots-h" }, h("h2", { id: "quota-bots-h" }, t("bots")),
    h("p", { class: "muted" }, t("bots_quota_note")), bars(botCalls.map((b) => ({ label: b.name, value: b.calls })), { title: t("bots") })) : null;
  return [h("h1", {}, t("quota")), sections.length ? sections : h("p", { class: "empty" }, t("none")), bots];
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

// Group bots (custom bot webhooks). The URL and the signing secret are write-only: the API
// answers only whether they are set, and so does this page.
const BOT_OUTCOMES_SHOWN = 3;
// The operation log names a group bot's posts by this receiver (delivery's BOT_WEBHOOK_RECEIVER).
const botReceiver = (id) => `bot_webhook:${id}`;

// What the page says before any webhook exists to carry the API's notes.
const BOT_NOTE_COUNT = 3;
// The API's notes are English; zh_cn has its own words for the same notes, in the same order.
function botNotes(fromApi) {
  const count = Math.max(fromApi.length, BOT_NOTE_COUNT);
  return Array.from({ length: count }, (_, n) => {
    const key = `bot_note_${n + 1}`;
    return i18n.lang === "zh_cn" && t(key) !== key ? t(key) : fromApi[n] || t(key);
  });
}

async function botsPage(id) {
  const { items } = await api("GET", "/api/v1/bot-webhooks");
  if (id) {
    const hook = id === "new" ? null : items.find((b) => b.id === id) || (await api("GET", `/api/v1/bot-webhooks/${enc(id)}`));
    return botForm(hook);
  }
  const outcomes = Object.fromEntries(await Promise.all(items.map(async (b) =>
    [b.id, (await api("GET", `/api/v1/oplog?${new URLSearchParams({ receiver: botReceiver(b.id), limit: BOT_OUTCOMES_SHOWN })}`)).items])));
  const setOrNot = (isSet, what) => h("span", { "data-set": what }, statusDot(isSet ? "ok" : "neutral", t(isSet ? "set" : "not_set")));
  return [
    h("div", { class: "row" }, h("h1", {}, t("bots")), h("span", { class: "spacer" }), h("a", { class: "btn primary", href: "#/bots/new", id: "new-bot" }, t("new_bot"))),
    h("section", { class: "card stack", id: "bot-notes", "aria-labelledby": "bot-notes-h" }, h("h2", { id: "bot-notes-h" }, t("bot_notes")),
      h("ul", {}, botNotes(items[0]?.notes || []).map((note) => h("li", {}, note)))),
    h("div", { id: "bots" }, table([
      { label: t("name"), render: (b) => h("a", { href: `#/bots/${enc(b.id)}`, "data-bot": b.name }, b.name) },
      { label: t("url"), render: (b) => setOrNot(b.url_set, "url") },
      { label: t("bot_secret"), render: (b) => setOrNot(b.secret_set, "secret") },
      { label: t("bot_keyword"), render: (b) => (b.keyword ? h("code", {}, b.keyword) : "—") },
      { label: t("bot_recent"), render: (b) => outcomes[b.id].length ? h("ul", { class: "plain attempts", "data-outcomes": b.id }, outcomes[b.id].map((e) => h("li", {},
        badge(outcomeText(e.outcome), e.outcome === "delivered" ? "ok" : e.outcome.startsWith("retry") ? "warn" : "bad"),
        // The reason word, then Lark's code with what to do about it (e.g. check the clock).
        [` ${i18n.date(e.at)}`, e.reason, e.lark_code ? `${e.lark_code} ${e.lark_message || ""}` : null].filter(Boolean).join(" · ")))) : h("span", { class: "muted" }, t("no_attempts")) },
      { label: t("actions"), render: (b) => h("div", { class: "row" }, h("a", { class: "btn small", href: `#/bots/${enc(b.id)}`, "aria-label": `${t("edit")}: ${b.name}` }, t("edit")), button(t("remove"), async () => {
        if ((await dialog(t("confirm_remove", { what: b.name }), [], [[t("cancel"), "no"], [t("remove"), "yes", "danger"]])) === "yes" && (await guard(() => api("DELETE", `/api/v1/bot-webhooks/${enc(b.id)}`))) !== null) route();
      }, { small: true, kind: "danger", "aria-label": `${t("remove")}: ${b.name}` })) },
    ], items, { empty: t("no_bots"), caption: t("bots") })),
  ];
}

function botForm(hook) {
  const hint = (isSet) => (hook ? t(isSet ? "secret_hint_set" : "secret_hint_unset") : undefined);
  const form = formOf([
    field({ name: "name", label: t("name"), value: hook?.name, required: true }),
    // Write-only like a password: typed, sent, never shown back.
    field({ name: "url", label: t("bot_url"), type: "password", autocomplete: "off", required: !hook, placeholder: "https://open.feishu.cn/open-apis/bot/v2/hook/…", hint: hint(hook?.url_set) || t("bot_url_hint") }),
    field({ name: "secret", label: t("bot_secret"), type: "password", autocomplete: "off", hint: hint(hook?.secret_set) || t("bot_secret_hint") }),
    hook?.secret_set ? checkbox({ name: "clear_secret", label: t("bot_clear_secret") }) : null,
    field({ name: "keyword", label: t("bot_keyword"), value: hook?.keyword || "", hint: t("bot_keyword_hint") }),
  ], async (data, f) => {
    const body = { name: data.get("name"), keyword: data.get("keyword") || "" };
    if (!hook && !body.keyword) delete body.keyword;
    if (data.get("url")) body.url = data.get("url");
    // On update an empty secret clears it, so it is sent empty only when asked to.
    if (data.get("secret")) body.secret = data.get("secret");
    else if (f.elements.clear_secret?.checked) body.secret = "";
    await (hook ? api("PATCH", `/api/v1/bot-webhooks/${enc(hook.id)}`, body) : api("POST", "/api/v1/bot-webhooks", body));
    toast(t("saved"));
    location.hash = "#/bots";
  });
  form.id = "bot-form";
  return [h("div", { class: "row" }, h("h1", {}, hook ? `${t("edit")}: ${hook.name}` : t("new_bot")), h("span", { class: "spacer" }), h("a", { class: "btn", href: "#/bots" }, t("cancel"))),
    h("div", { class: "card" }, form)];
}

// Schedules: rotations in layers, overrides on top, and the final schedule they make. Times are
// shown and typed in the schedule's own time zone (its handoffs are wall-clock times there),
// whatever the browser's zone is.
const SCHEDULE_DAYS = 14;
const ROTATION_UNITS = ["hour", "day", "week", "month"];
// The colours a person's shifts get on the timeline, in order of first appearance.
const PERSON_COLOURS = 8;

/** `tz` when the browser knows it, else UTC (the API names a wrong zone next to its field). */
function knownZone(tz) {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: tz });
    return tz;
  } catch {
    return "UTC";
  }
}

function zoneParts(instant, tz) {
  const parts = new Intl.DateTimeFormat("en-US", { timeZone: knownZone(tz), hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" })
    .formatToParts(new Date(instant));
  return Object.fromEntries(parts.map((p) => [p.type, p.value]));
}

/** `instant` as the wall time `YYYY-MM-DDTHH:MM` in `tz`, what a datetime-local input holds. */
function wallTime(instant, tz) {
  const p = zoneParts(instant, tz);
  return `${p.year}-${p.month}-${p.day}T${p.hour}:${p.minute}`;
}

/**
 * The instant wall time `local` names in `tz`, by the resolver's rule: an ambiguous time (clocks
 * going back) is its first occurrence, a skipped one (clocks going forward) moves forward.
 */
function wallToInstant(local, tz) {
  const [date, time = "00:00"] = local.split("T");
  const [y, m, d] = date.split("-").map(Number);
  const [hh, mm] = time.split(":").map(Number);
  const asUtc = Date.UTC(y, m - 1, d, hh, mm);
  const offset = (at) => {
    const p = zoneParts(at, tz);
    return Date.UTC(Number(p.year), Number(p.month) - 1, Number(p.day), Number(p.hour), Number(p.minute), Number(p.second)) - Math.floor(at / 1000) * 1000;
  };
  // The offsets a day either side: the same on most days, before and after a change on others.
  const day = 86400000;
  const [before, after] = [asUtc - offset(asUtc - day), asUtc - offset(asUtc + day)];
  const valid = [before, after].filter((at) => wallTime(at, tz) === `${date}T${time.slice(0, 5)}`);
  return new Date(valid.length ? Math.min(...valid) : before).toISOString();
}

function addDays(date, n) {
  const [y, m, d] = date.split("-").map(Number);
  return new Date(Date.UTC(y, m - 1, d + n)).toISOString().slice(0, 10);
}

const zoned = (tz, options) => new Intl.DateTimeFormat(i18n.lang === "zh_cn" ? "zh-CN" : "en-US", { timeZone: knownZone(tz), hourCycle: "h23", ...options });
const dayLabel = (instant, tz) => zoned(tz, { weekday: "short", month: "short", day: "numeric" }).format(new Date(instant));
const clockTime = (instant, tz) => zoned(tz, { hour: "2-digit", minute: "2-digit" }).format(new Date(instant));

/** "Tue, Dec 8 02:00–08:00" within one local day, else both ends with their day. */
function timeSpan(start, end, tz) {
  if (wallTime(start, tz).slice(0, 10) === wallTime(end, tz).slice(0, 10)) return `${dayLabel(start, tz)} ${clockTime(start, tz)}–${clockTime(end, tz)}`;
  return `${dayLabel(start, tz)} ${clockTime(start, tz)} – ${dayLabel(end, tz)} ${clockTime(end, tz)}`;
}

// Final shifts name people as {id, name}; a layer's own shifts by id.
const peopleText = (people, nameOf) => people.map((p) => (typeof p === "string" ? nameOf(p) : p.name || p.id)).join(" + ");
const personKey = (people) => people.map((p) => (typeof p === "string" ? p : p.id)).join("+");
const namesById = (members) => {
  const names = new Map(members.map((m) => [m.id, m.name]));
  return (id) => names.get(id) || id;
};

async function schedulesPage(id, sub) {
  if (id === "new") {
    const [members, integrations] = await Promise.all([api("GET", "/api/v1/members"), api("GET", "/api/v1/integrations")]);
    return scheduleForm(null, members.items, integrations.items);
  }
  if (id && sub === "edit") {
    const [schedule, members, integrations] = await Promise.all([api("GET", `/api/v1/schedules/${enc(id)}`), api("GET", "/api/v1/members"), api("GET", "/api/v1/integrations")]);
    return scheduleForm(schedule, members.items, integrations.items);
  }
  if (id) return scheduleDetail(id);
  const { items } = await api("GET", "/api/v1/schedules");
  return [
    h("div", { class: "row" }, h("h1", {}, t("schedules")), h("span", { class: "spacer" }), h("a", { class: "btn primary", href: "#/schedules/new", id: "new-schedule" }, t("new_schedule"))),
    h("div", { id: "schedules" }, table([
      { label: t("name"), render: (x) => h("a", { href: `#/schedules/${enc(x.id)}`, "data-schedule": x.name }, x.name) },
      { label: t("on_call_now"), render: (x) => (x.on_call_now.length ? peopleText(x.on_call_now) : h("span", { class: "flagged" }, t("nobody"))) },
      { label: t("time_zone"), render: (x) => h("code", {}, x.time_zone) },
      { label: t("layers"), render: (x) => i18n.number(x.layers.length) },
    ], items, { empty: t("no_schedules"), caption: t("schedules") })),
  ];
}

/** Each local day of the window as a 24-hour strip with its shifts and gaps (the table below says the same in words). */
function timeline(rows, from, to, tz, nameOf) {
  const colours = new Map();
  rows.filter((r) => r.kind === "shift").forEach((r) => {
    const key = personKey(r.members);
    if (!colours.has(key)) colours.set(key, { n: colours.size % PERSON_COLOURS, label: peopleText(r.members, nameOf) });
  });
  const end = Date.parse(to);
  const firstDay = wallTime(from, tz).slice(0, 10);
  const days = [];
  for (let i = 0; i <= SCHEDULE_DAYS; i++) {
    const dayStart = Date.parse(wallToInstant(`${addDays(firstDay, i)}T00:00`, tz));
    if (dayStart >= end) break;
    days.push([dayStart, Date.parse(wallToInstant(`${addDays(firstDay, i + 1)}T00:00`, tz))]);
  }
  const segments = ([dayStart, dayEnd]) => rows.flatMap((r) => {
    const a = Math.max(dayStart, Date.parse(r.start));
    const b = Math.min(dayEnd, Date.parse(r.end));
    if (a >= b) return [];
    const left = ((a - dayStart) / (dayEnd - dayStart)) * 100;
    const width = ((b - a) / (dayEnd - dayStart)) * 100;
    const cls = r.kind === "gap" ? "gap" : `who-${colours.get(personKey(r.members)).n}${r.source.kind === "override" ? " overridden" : ""}`;
    return [h("span", { class: `tl-seg ${cls}`, style: `left:${left}%;width:${width}%` })];
  });
  return h("div", { class: "timeline", "aria-hidden": "true" },
    h("div", { class: "tl-day tl-hours" }, h("span", { class: "tl-label" }), h("div", { class: "tl-scale" }, ["00", "06", "12", "18"].map((x) => h("span", {}, x)))),
    days.map((day) => h("div", { class: "tl-day" }, h("span", { class: "tl-label" }, dayLabel(day[0], tz)), h("div", { class: "tl-track" }, segments(day)))),
    h("ul", { class: "tl-legend plain" }, [...colours.values()].map((c) => h("li", {}, h("span", { class: `tl-swatch who-${c.n}` }), c.label)),
      h("li", {}, h("span", { class: "tl-swatch gap" }), t("nobody")),
      rows.some((r) => r.kind === "shift" && r.source.kind === "override") ? h("li", {}, h("span", { class: "tl-swatch overridden" }), t("override")) : null));
}

function finalView(resolved, tz, nameOf) {
  const rows = [...resolved.final.map((f) => ({ ...f, kind: "shift" })), ...resolved.gaps.map((g) => ({ ...g, kind: "gap" }))]
    .sort((a, b) => Date.parse(a.start) - Date.parse(b.start));
  return h("div", { class: "stack" },
    timeline(rows, resolved.from, resolved.to, tz, nameOf),
    h("div", { id: "final" }, table([
      { label: t("when"), render: (r) => timeSpan(r.start, r.end, tz) },
      { label: t("on_call"), render: (r) => (r.kind === "gap" ? h("span", { class: "flagged" }, t("nobody")) : peopleText(r.members, nameOf)) },
      { label: t("source"), render: (r) => (r.kind === "gap" ? "—" : r.source.kind === "override" ? badge(t("override"), "warn") : r.source.name) },
    ], rows, { empty: t("none"), caption: t("final_schedule") })),
    h("h3", {}, t("gaps")),
    resolved.gaps.length ? h("ul", { id: "gaps" }, resolved.gaps.map((g) => h("li", { class: "flagged" }, t("gap_text", { when: timeSpan(g.start, g.end, tz) }))))
      : h("p", { class: "muted", id: "gaps" }, t("no_gaps")));
}

function layersView(resolved, tz, nameOf) {
  if (!resolved.layers.length) return h("p", { class: "empty" }, t("none"));
  return h("div", { class: "stack" }, resolved.layers.map((l) => h("section", { class: "stack", "data-layer": l.position },
    h("h3", {}, l.effective_from ? `${l.name} (${t("version_from", { when: i18n.date(l.effective_from) })})` : l.name),
    table([
      { label: t("when"), render: (x) => timeSpan(x.start, x.end, tz) },
      { label: t("on_call"), render: (x) => peopleText(x.members, nameOf) },
    ], l.shifts, { empty: t("none"), caption: l.name }))));
}

function personView(resolved, tz, nameOf) {
  const people = [...new Map(resolved.final.flatMap((f) => f.members).map((p) => [p.id, p])).values()];
  if (!people.length) return h("p", { class: "empty" }, t("nobody"));
  const list = h("div", { id: "person-shifts" });
  const show = (id) => list.replaceChildren(table([
    { label: t("when"), render: (f) => timeSpan(f.start, f.end, tz) },
    { label: t("source"), render: (f) => (f.source.kind === "override" ? badge(t("override"), "warn") : f.source.name) },
  ], resolved.final.filter((f) => f.members.some((p) => p.id === id)), { empty: t("none"), caption: nameOf(id) }));
  const picker = field({ name: "person", label: t("person"), type: "select", value: people[0].id, options: people.map((p) => [p.id, p.name]), onchange: (e) => show(e.target.value) });
  show(people[0].id);
  return h("div", { class: "stack" }, picker, list);
}

async function scheduleDetail(id) {
  const [s, resolved, now, members, feeds] = await Promise.all([
    api("GET", `/api/v1/schedules/${enc(id)}`),
    api("GET", `/api/v1/schedules/${enc(id)}/shifts`),
    api("GET", `/api/v1/schedules/${enc(id)}/on-call`),
    api("GET", "/api/v1/members"),
    api("GET", "/api/v1/calendar-feeds"),
  ]);
  const tz = knownZone(s.time_zone);
  const nameOf = namesById(members.items);
  const onCall = h("section", { class: "card stack", id: "on-call-now", "aria-labelledby": "on-call-h" }, h("h2", { id: "on-call-h" }, t("on_call_now")),
    now.members.length ? h("p", {}, h("strong", {}, peopleText(now.members)), now.until ? ` ${t("until", { when: `${dayLabel(now.until, tz)} ${clockTime(now.until, tz)}` })}` : "")
      : h("p", { class: "flagged" }, t("nobody_now")),
    now.next ? h("p", { class: "muted" }, t("next_on_call", { who: peopleText(now.next.members), when: timeSpan(now.next.start, now.next.end, tz) })) : null);
  const remove = button(t("remove"), async () => {
    if ((await dialog(t("confirm_remove", { what: s.name }), [], [[t("cancel"), "no"], [t("remove"), "yes", "danger"]])) !== "yes") return;
    if ((await guard(() => api("DELETE", `/api/v1/schedules/${enc(s.id)}`))) !== null) location.hash = "#/schedules";
  }, { kind: "danger" });
  return [
    h("div", { class: "row" }, h("h1", {}, s.name), h("span", { class: "spacer" }), h("a", { class: "btn", href: `#/schedules/${enc(s.id)}/edit` }, t("edit")), remove),
    s.description ? h("p", {}, s.description) : null,
    h("p", { class: "muted" }, t("times_in_zone", { zone: tz })),
    onCall,
    h("section", { class: "card stack", "aria-labelledby": "final-h" }, h("h2", { id: "final-h" }, t("next_two_weeks")),
      tabs([[t("final_schedule"), () => finalView(resolved, tz, nameOf)], [t("each_layer"), () => layersView(resolved, tz, nameOf)], [t("per_person"), () => personView(resolved, tz, nameOf)]])),
    overridesSection(s, tz, members.items, nameOf),
    feedsSection(s, feeds.items.filter((f) => f.schedule === s.id)),
  ];
}

function overridesSection(s, tz, members, nameOf) {
  const now = Date.now();
  const list = table([
    { label: t("on_call"), render: (o) => nameOf(o.member_id) },
    { label: t("when"), render: (o) => timeSpan(o.start, o.end, tz) },
    { label: t("note"), render: (o) => o.note || "—" },
    // A running override ends now (its past stays); a future one is deleted.
    { label: t("actions"), render: (o) => button(Date.parse(o.start) <= now ? t("end_now") : t("remove"), async () => {
      if ((await guard(() => api("DELETE", `/api/v1/schedules/${enc(s.id)}/overrides/${enc(o.id)}`))) !== null) route();
    }, { small: true, kind: "danger", "data-end-override": o.id, "aria-label": `${Date.parse(o.start) <= now ? t("end_now") : t("remove")}: ${nameOf(o.member_id)}` }) },
  ], s.overrides, { empty: t("no_overrides"), caption: t("overrides") });
  const form = formOf([
    field({ name: "member_id", label: t("override_who"), type: "select", options: members.map((m) => [m.id, m.name]) }),
    field({ name: "start", label: t("override_start"), type: "datetime-local", hint: t("override_start_hint", { zone: tz }) }),
    field({ name: "end", label: t("override_end"), type: "datetime-local", required: true, hint: t("wall_time_hint", { zone: tz }) }),
    field({ name: "note", label: t("note") }),
  ], async (data) => {
    if (!data.get("end")) throw Object.assign(new Error(t("end_required")), { field: "end" });
    const body = { member_id: data.get("member_id"), end: wallToInstant(data.get("end"), tz) };
    if (data.get("start")) body.start = wallToInstant(data.get("start"), tz);
    if (data.get("note")) body.note = data.get("note");
    await api("POST", `/api/v1/schedules/${enc(s.id)}/overrides`, body);
    toast(t("saved"));
    route();
  }, t("add_override"));
  form.id = "override-form";
  return h("section", { class: "card stack", id: "overrides", "aria-labelledby": "overrides-h" }, h("h2", { id: "overrides-h" }, t("overrides")),
    h("p", { class: "muted" }, t("overrides_text")), list, h("h3", {}, t("add_override")), form);
}

function feedsSection(s, feeds) {
  const shown = h("div", { id: "feed-url" });
  const create = button(t("feed_create"), async () => {
    const feed = await guard(() => api("POST", "/api/v1/calendar-feeds", { schedule_id: s.id }));
    if (feed) shown.replaceChildren(h("div", { class: "stack" }, h("p", {}, t("feed_once")), copyField(feed.url, { label: t("feeds"), copyLabel: t("copy"), copiedLabel: t("copied") })));
  }, { small: true, id: "create-feed" });
  return h("section", { class: "card stack", id: "feeds", "aria-labelledby": "feeds-h" }, h("h2", { id: "feeds-h" }, t("feeds")),
    h("p", { class: "muted" }, t("feeds_text")),
    table([
      { label: t("created"), render: (f) => i18n.date(f.created_at) },
      { label: t("actions"), render: (f) => button(t("revoke"), async () => {
        if ((await guard(() => api("DELETE", `/api/v1/calendar-feeds/${enc(f.id)}`))) !== null) route();
      }, { small: true, kind: "danger" }) },
    ], feeds, { empty: t("no_feeds"), caption: t("feeds") }),
    create, shown);
}

const newLayer = () => ({ name: "", participants: [], rotation: { unit: "week", every: 1 }, first_handoff: "", restrictions: [] });

/** An API field inside a layer (`layers[0].rotation.every`) as the editor's control (`every-0`). */
function layerControl(apiField) {
  const m = /^layers\[(\d+)\]\.(\w+)(?:\.(\w+))?/.exec(apiField || "");
  if (!m) return apiField;
  const key = m[2] === "rotation" ? "every" : m[2] === "name" ? "layer_name" : m[2];
  return `${key}-${m[1]}`;
}

/** The schedule's notices: handoff notices to the people coming on call, and a daily card to
 * chats. Returns the fields and a reader giving the API's `handoff_notice` and `daily_summary`
 * (null turns one off). */
function noticeFields(schedule, integrations) {
  const handoff = schedule?.handoff_notice;
  const daily = schedule?.daily_summary;
  const fields = [
    h("h2", {}, t("notices")),
    checkbox({ name: "handoff_on", label: t("handoff_on"), checked: !!handoff }),
    h("div", { class: "grid" },
      field({ name: "minutes_before", label: t("minutes_before"), type: "number", min: "1", max: "2880", value: handoff?.minutes_before ?? 15 }),
      checkbox({ name: "notify_outgoing", label: t("notify_outgoing"), checked: !!handoff?.notify_outgoing })),
    checkbox({ name: "daily_on", label: t("daily_on"), checked: !!daily }),
    h("div", { class: "grid" },
      field({ name: "daily_integration", label: t("integration"), type: "select", value: daily?.integration_id, options: integrations.map((i) => [i.id, i.name]) }),
      field({ name: "daily_at", label: t("daily_at"), type: "time", value: daily?.at || "09:00", hint: t("wall_time_hint_zone") })),
    field({ name: "daily_chats", label: t("daily_chats"), value: (daily?.chats || []).join(", "), hint: t("daily_chats_hint") }),
  ];
  const read = (data) => ({
    handoff_notice: data.get("handoff_on") ? { minutes_before: Number(data.get("minutes_before")), notify_outgoing: !!data.get("notify_outgoing") } : null,
    daily_summary: data.get("daily_on") ? {
      integration_id: data.get("daily_integration"),
      chats: data.get("daily_chats").split(/[\s,]+/).filter(Boolean),
      at: data.get("daily_at"),
    } : null,
  });
  return { fields, read };
}

/** The notice control an API error names (`daily_summary.chats[1]` → `daily_chats`). */
function noticeControl(apiField) {
  const m = /^(handoff_notice|daily_summary)\.(\w+)/.exec(apiField || "");
  if (!m) return null;
  return m[1] === "handoff_notice" ? m[2] : { integration_id: "daily_integration", chats: "daily_chats", at: "daily_at" }[m[2]] || "daily_on";
}

function scheduleForm(schedule, members, integrations) {
  const nameOf = namesById(members);
  const notices = noticeFields(schedule, integrations);
  const zoneList = h("datalist", { id: "time-zones" }, (Intl.supportedValuesOf?.("timeZone") || []).map((z) => h("option", { value: z })));
  const asTurns = (participants) => participants.map((p) => (Array.isArray(p) ? [...p] : [p]));
  // Wall times as the inputs hold them (to the minute), so an unchanged form compares equal.
  const wall = (text) => (text || "").slice(0, 16);
  const layers = (schedule?.layers?.length ? schedule.layers : [newLayer()]).map((l) => ({
    ...l, participants: asTurns(l.participants), first_handoff: wall(l.first_handoff), active_from: wall(l.active_from) || undefined, active_until: wall(l.active_until) || undefined,
  }));
  const host = h("div", { id: "layers" });
  const readLayers = () => layers.forEach((l, n) => {
    const value = (k) => form.elements[`${k}-${n}`].value;
    l.name = value("layer_name");
    l.rotation = { unit: value("unit"), every: Number(value("every")) || 1 };
    l.first_handoff = value("first_handoff");
    l.restrictions = parseWindows(value("restrictions"));
    l.active_from = value("active_from") || undefined;
    l.active_until = value("active_until") || undefined;
  });
  const change = (fn) => () => {
    readLayers();
    fn();
    drawLayers();
  };
  const turnRow = (l, n, turn, i) => h("li", { class: "turn" }, h("span", { class: "muted" }, `${i + 1}.`), h("span", {}, turn.map(nameOf).join(" + ")), h("span", { class: "spacer" }),
    button("↑", change(() => i > 0 && l.participants.splice(i - 1, 0, ...l.participants.splice(i, 1))), { small: true, "aria-label": `${t("up")}: ${turn.map(nameOf).join(" + ")}` }),
    button("↓", change(() => i < l.participants.length - 1 && l.participants.splice(i + 1, 0, ...l.participants.splice(i, 1))), { small: true, "aria-label": `${t("down")}: ${turn.map(nameOf).join(" + ")}` }),
    button("✕", change(() => l.participants.splice(i, 1)), { small: true, "aria-label": `${t("remove")}: ${turn.map(nameOf).join(" + ")}` }));
  const drawLayers = () => host.replaceChildren(...layers.map((l, n) => {
    const picker = `add_member-${n}`;
    const chosen = () => form.elements[picker].value;
    return h("fieldset", { "data-layer": n }, h("legend", {}, t("layer", { n: n + 1 })),
      field({ name: `layer_name-${n}`, label: t("layer_name"), value: l.name, required: true }),
      h("div", { class: "field", "data-field": `participants-${n}` }, h("span", { class: "hint" }, t("participants")),
        l.participants.length ? h("ol", { class: "turns plain" }, l.participants.map((turn, i) => turnRow(l, n, turn, i))) : h("p", { class: "muted" }, t("no_participants")),
        h("div", { class: "error", role: "alert" })),
      h("div", { class: "row add-turn" },
        field({ name: picker, label: t("participant_add"), type: "select", options: members.map((m) => [m.id, m.name]) }),
        button(t("add_turn"), change(() => l.participants.push([chosen()])), { small: true, "data-add": "turn" }),
        l.participants.length ? button(t("add_to_last_turn"), change(() => { const last = l.participants[l.participants.length - 1]; if (!last.includes(chosen())) last.push(chosen()); }), { small: true, "data-add": "together" }) : null),
      h("div", { class: "grid" },
        field({ name: `every-${n}`, label: t("rotation_every"), type: "number", value: l.rotation?.every ?? 1, min: "1" }),
        field({ name: `unit-${n}`, label: t("rotation_unit"), type: "select", value: l.rotation?.unit || "week", options: ROTATION_UNITS.map((u) => [u, t(`unit_${u}`)]) }),
        field({ name: `first_handoff-${n}`, label: t("first_handoff"), type: "datetime-local", value: wall(l.first_handoff), required: true, hint: t("wall_time_hint_zone") })),
      field({ name: `restrictions-${n}`, label: t("restrictions"), type: "textarea", value: formatWindows(l.restrictions), hint: t("restrictions_hint") }),
      h("div", { class: "grid" },
        field({ name: `active_from-${n}`, label: t("active_from"), type: "datetime-local", value: wall(l.active_from), hint: t("optional") }),
        field({ name: `active_until-${n}`, label: t("active_until"), type: "datetime-local", value: wall(l.active_until), hint: t("optional") })),
      layers.length > 1 ? button(t("remove_layer"), change(() => layers.splice(n, 1)), { small: true, kind: "danger" }) : null);
  }));
  const body = () => layers.map((l) => ({
    name: l.name, participants: l.participants.map((p) => (p.length === 1 ? p[0] : p)), rotation: l.rotation, first_handoff: l.first_handoff, restrictions: l.restrictions,
    ...(l.active_from ? { active_from: l.active_from } : {}), ...(l.active_until ? { active_until: l.active_until } : {}),
  }));
  // A new version only when the layers or the zone change: an edit of the name alone keeps them.
  const before = schedule ? JSON.stringify({ zone: schedule.time_zone, layers: body() }) : null;
  const form = formOf([
    field({ name: "name", label: t("name"), value: schedule?.name, required: true }),
    field({ name: "description", label: t("description"), type: "textarea", value: schedule?.description || "" }),
    field({ name: "time_zone", label: t("time_zone"), value: schedule?.time_zone || Intl.DateTimeFormat().resolvedOptions().timeZone || "Asia/Shanghai", required: true, list: "time-zones", autocomplete: "off", hint: t("time_zone_hint") }),
    zoneList,
    h("div", { class: "row" }, h("h2", {}, t("layers")), h("span", { class: "spacer" }), button(t("add_layer_schedule"), change(() => layers.push(newLayer())), { small: true, id: "add-layer" })),
    h("p", { class: "muted" }, t("layers_text")),
    host,
    schedule ? field({ name: "effective_from", label: t("effective_from"), type: "datetime-local", hint: t("effective_from_hint") }) : null,
    ...notices.fields,
  ], async (data) => {
    readLayers();
    const zone = data.get("time_zone").trim();
    try {
      if (!schedule) {
        const created = await api("POST", "/api/v1/schedules", { name: data.get("name"), description: data.get("description"), time_zone: zone, layers: body(), ...notices.read(data) });
        location.hash = `#/schedules/${enc(created.id)}`;
      } else {
        await api("PATCH", `/api/v1/schedules/${enc(schedule.id)}`, { name: data.get("name"), description: data.get("description"), ...notices.read(data) });
        const layersBody = { time_zone: zone, layers: body() };
        if (JSON.stringify({ zone, layers: layersBody.layers }) !== before) {
          if (data.get("effective_from")) layersBody.effective_from = wallToInstant(data.get("effective_from"), zone);
          await api("PUT", `/api/v1/schedules/${enc(schedule.id)}/layers`, layersBody);
        }
        location.hash = `#/schedules/${enc(schedule.id)}`;
      }
      toast(t("saved"));
    } catch (e) {
      e.field = noticeControl(e.field) || layerControl(e.field);
      throw e;
    }
  });
  form.id = "schedule-form";
  drawLayers();
  return [h("div", { class: "row" }, h("h1", {}, schedule ? `${t("edit")}: ${schedule.name}` : t("new_schedule")), h("span", { class: "spacer" }),
    h("a", { class: "btn", href: schedule ? `#/schedules/${enc(schedule.id)}` : "#/schedules" }, t("cancel"))), h("div", { class: "card" }, form)];
}

window.addEventListener("hashchange", route);
route();
