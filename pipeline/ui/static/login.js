// Sign in: the query API's bearer token, kept by the server in an HttpOnly cookie for /ui/ only.
import { app, el } from "./common.js";

const root = app();
const params = new URLSearchParams(window.location.search);
const next = params.get("next") || "/ui/";
root.replaceChildren(
  el("h1", { text: "Sign in" }),
  params.get("failed") ? el("p", { className: "error", role: "alert", text: "That token was not accepted." }) : null,
  el("form", { className: "login", method: "post", action: "/ui/login" },
    el("label", { for: "token", text: "Bearer token of this collector's query API" }),
    el("input", { type: "password", id: "token", name: "token", autocomplete: "current-password", required: "" }),
    el("input", { type: "hidden", name: "next", value: next }),
    el("button", { type: "submit", text: "Open the viewer" })),
);
