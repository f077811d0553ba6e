// Minimal admin page: log in with the session API, then show the server version.
"use strict";
const $ = (id) => document.getElementById(id);
let csrf = "";

async function api(method, path, body) {
  const headers = { "content-type": "application/json" };
  if (csrf) headers["x-csrf-token"] = csrf;
  const res = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined, credentials: "same-origin" });
  const data = res.status === 204 ? null : await res.json();
  if (!res.ok) throw new Error(data && data.error ? data.error.message : res.statusText);
  return data;
}

async function showHome(session) {
  csrf = session.csrf_token;
  const v = await api("GET", "/api/v1/version");
  $("user").textContent = session.username;
  $("version").textContent = v.version;
  $("login").hidden = true;
  $("home").hidden = false;
}

$("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = new FormData(ev.target);
  try {
    await showHome(await api("POST", "/api/v1/session", { username: form.get("username"), password: form.get("password") }));
    $("login-error").textContent = "";
  } catch (e) {
    $("login-error").textContent = e.message;
  }
});

$("logout").addEventListener("click", async () => {
  await api("DELETE", "/api/v1/session");
  csrf = "";
  $("home").hidden = true;
  $("login").hidden = false;
});

api("GET", "/api/v1/session").then(showHome).catch(() => { $("login").hidden = false; });
