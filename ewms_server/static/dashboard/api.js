// The REST API, with the token kept in sessionStorage (gone when the tab closes).

const KEY = "ewms_token";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(t) {
  if (t) sessionStorage.setItem(KEY, t.trim());
  else sessionStorage.removeItem(KEY);
}

/** The token's claims, decoded for display only (the server is what verifies it). */
export function claims() {
  const t = token();
  if (!t) return null;
  try {
    const b64 = t.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)));
  } catch {
    return null;
  }
}

export async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try {
    data = await r.json();
  } catch {
    data = null;
  }
  if (!r.ok) throw new ApiError(r.status, (data && data.error) || r.statusText || `HTTP ${r.status}`);
  return data;
}

/** Every page of a query route, up to `maxDocs` documents. */
export async function queryAll(collection, query, projection = [], maxDocs = 20000) {
  const docs = [];
  let after = null;
  do {
    const page = await call("POST", `/v1/query/${collection}`, { query, projection, after });
    docs.push(...page[collection.replace("-", "_")]);
    after = page.next_after;
  } while (after && docs.length < maxDocs);
  return docs;
}

/** Run `fn` over `items`, at most `limit` at a time. */
export async function mapLimited(items, limit, fn) {
  const out = new Array(items.length);
  let next = 0;
  async function worker() {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
