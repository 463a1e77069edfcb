// Swagger UI served from local files. The schema is behind the API key like the rest of the API, so
// the page fetches it first: with no key (or a refused one) it asks for the key instead of letting
// Swagger UI show "Failed to load API definition". "Try it out" calls carry the same key.
"use strict";
const KEY_STORE = "mffmoe.apiKey";
const $ = (id) => document.getElementById(id);

function key() { return sessionStorage.getItem(KEY_STORE) || ""; }

$("key-bar").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(KEY_STORE, $("docs-key").value.trim());
  $("docs-key").value = "";
  load();
});

function ask(text) {
  $("key-prompt").textContent = text;
  $("key-prompt").hidden = false;
  $("docs-key").focus();
}

async function load() {
  let res;
  try {
    res = await fetch("/openapi.json", { headers: key() ? { "X-API-Key": key() } : {} });
  } catch (e) {
    ask("The server cannot be reached.");
    return;
  }
  if (res.status === 401) {
    ask(key() ? "That key was refused: enter the server's API key to see the API."
              : "This server needs an API key: enter it above to see the API.");
    return;
  }
  if (!res.ok) {
    ask(`The API definition could not be loaded (HTTP ${res.status}).`);
    return;
  }
  $("key-prompt").hidden = true;
  SwaggerUIBundle({
    spec: await res.json(),
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    requestInterceptor: (req) => {
      if (key()) req.headers["X-API-Key"] = key();
      return req;
    },
  });
}

load();
