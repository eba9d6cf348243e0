// Sign-in through the OIDC issuer: authorization code flow with PKCE, for a public client.
// The server only tells where the issuer is (GET /v1/dashboard/config); the browser talks to it.

const PENDING = "ewms_oidc_pending";

function b64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomString() {
  return b64url(crypto.getRandomValues(new Uint8Array(32)));
}

export function redirectUri() {
  return `${location.origin}${location.pathname}`;
}

/** Leave for the issuer's sign-in page; it sends the browser back with ?code&state. */
export async function startSignIn(oidc) {
  const verifier = randomString();
  const state = randomString();
  const challenge = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  sessionStorage.setItem(PENDING, JSON.stringify({ verifier, state }));
  const url = new URL(oidc.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: "code",
    client_id: oidc.client_id,
    redirect_uri: redirectUri(),
    scope: oidc.scope,
    state,
    code_challenge: challenge,
    code_challenge_method: "S256",
  }).toString();
  location.assign(url.toString());
}

/** Back from the issuer: exchange the code for a token. Null when this is no such return. */
export async function finishSignIn(oidc) {
  const params = new URLSearchParams(location.search);
  if (!params.has("code") && !params.has("error")) return null;
  const pending = JSON.parse(sessionStorage.getItem(PENDING) || "null");
  sessionStorage.removeItem(PENDING);
  history.replaceState(null, "", redirectUri() + "#/");
  if (params.has("error")) throw new Error(`sign-in refused: ${params.get("error")}`);
  if (!pending || params.get("state") !== pending.state) throw new Error("sign-in answer does not match a sign-in started here");
  if (!oidc) throw new Error("this server has no OIDC sign-in configured");
  const r = await fetch(oidc.token_endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      code: params.get("code"),
      redirect_uri: redirectUri(),
      client_id: oidc.client_id,
      code_verifier: pending.verifier,
    }),
  });
  const data = await r.json().catch(() => ({}));
  if (!r.ok || !data.access_token) throw new Error(`token exchange failed: ${data.error || r.status}`);
  return data.access_token;
}
