// JSON over fetch for both UIs: the session's CSRF token on every state-changing request, and
// API errors turned into an ApiError that names the field the server's message is about.
let csrfToken = "";

export function setCsrfToken(token) {
  csrfToken = token || "";
}

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

/**
 * The field an error is about: the body's `field`, else the `name: …` prefix the admin API puts
 * on validation messages, else serde's "missing field `x`" / "unknown field `x`".
 */
export function fieldOf(error) {
  if (error.field) return error.field;
  const message = error.message || "";
  const prefix = /^([a-z_][a-z0-9_.\[\]]*): /.exec(message);
  if (prefix) return prefix[1];
  const serde = /(?:missing|unknown) field `([^`]+)`/.exec(message);
  return serde ? serde[1] : null;
}

export async function api(method, path, body) {
  const headers = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (csrfToken && method !== "GET") headers["x-csrf-token"] = csrfToken;
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
  } catch (e) {
    throw new ApiError(0, "network", e.message || "network error", null);
  }
  const type = res.headers.get("content-type") || "";
  const data = res.status === 204 ? null : type.includes("json") ? await res.json().catch(() => null) : await res.text();
  if (!res.ok) {
    const err = data && data.error ? data.error : { code: String(res.status), message: res.statusText };
    const apiError = new ApiError(res.status, err.code, err.message, err.field || null);
    apiError.field = fieldOf(apiError);
    throw apiError;
  }
  return data;
}
