// The dashboard: a hash-routed single page over the public REST API.

import { ApiError, call, claims, setToken, token } from "./api.js";
import { h } from "./dom.js";
import { finishSignIn, startSignIn } from "./oidc.js";
import { quarantinePage, taskforcesPage } from "./views/admin.js";
import { workflowPage } from "./views/workflow.js";
import { workflowsPage } from "./views/workflows.js";

const main = document.getElementById("main");
let config = { oidc: null };

const ROUTES = [
  [/^#?\/?$/, () => workflowsPage()],
  [/^#\/workflow\/([^/]+)$/, (m) => workflowPage(decodeURIComponent(m[1]))],
  [/^#\/admin\/taskforces$/, () => taskforcesPage()],
  [/^#\/admin\/quarantine$/, () => quarantinePage()],
];

function loginPage(message) {
  const area = h("textarea", { id: "token", placeholder: "eyJ…", "aria-label": "token" });
  const form = h("form", { class: "login", id: "login-form" },
    h("h1", {}, "Sign in"),
    message ? h("p", { class: "error", "data-test": "login-error" }, message) : null,
    config.oidc
      ? h("p", {}, h("button", { type: "button", id: "oidc-signin", onclick: () => startSignIn(config.oidc) },
          `Sign in with ${config.oidc.issuer}`))
      : null,
    h("p", {}, "Paste a bearer token (", h("code", {}, "ewms-server mint-token"), " makes one). It is kept in this tab only."),
    area,
    h("p", {}, h("button", { type: "submit", id: "token-submit" }, "Use token")),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    setToken(area.value);
    try {
      await call("GET", "/v1/");
    } catch (e) {
      setToken(null);
      render(e instanceof ApiError ? `token refused: ${e.message}` : String(e));
      return;
    }
    location.hash = "#/";
    render();
  });
  return form;
}

function showWho() {
  const c = claims();
  document.getElementById("who").textContent = c ? `${c.sub}` : "";
  document.getElementById("signout").hidden = !token();
}

let renders = 0;

async function render(loginMessage, flash) {
  showWho();
  if (!token()) {
    main.replaceChildren(loginPage(loginMessage));
    main.dataset.ready = "login";
    return;
  }
  const hash = location.hash || "#/";
  const route = ROUTES.map(([re, view]) => [hash.match(re), view]).find(([m]) => m);
  delete main.dataset.ready;
  main.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  try {
    const page = route ? await route[1](route[0]) : h("p", { class: "error" }, `no page ${hash}`);
    main.replaceChildren(flash ? h("p", { class: "notice", "data-test": "flash" }, flash) : "", page);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      setToken(null);
      render(`signed out: ${e.message}`);
      return;
    }
    main.replaceChildren(h("p", { class: "error", "data-test": "page-error" }, e.message || String(e)));
  }
  main.dataset.ready = hash;  // browser tests wait on these
  main.dataset.renders = String(++renders);
}

document.getElementById("signout").addEventListener("click", () => {
  setToken(null);
  location.hash = "#/";
  render();
});
window.addEventListener("hashchange", () => render());
// a page asks to be drawn again (after an action, or "Refresh"), with a message to show
document.addEventListener("ewms:refresh", (ev) => render(undefined, ev.detail && ev.detail.flash));

async function start() {
  try {
    config = await call("GET", "/v1/dashboard/config");
  } catch {
    config = { oidc: null };
  }
  let message;
  try {
    const t = await finishSignIn(config.oidc);
    if (t) setToken(t);
  } catch (e) {
    message = e.message;
  }
  render(message);
}

start();
