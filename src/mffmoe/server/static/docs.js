// Swagger UI served from local files; the schema and "Try it out" calls carry the page's API key.
"use strict";
const KEY_STORE = "mffmoe.apiKey";
document.getElementById("key-bar").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(KEY_STORE, document.getElementById("docs-key").value.trim());
  location.reload();
});
SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  requestInterceptor: (req) => {
    const key = sessionStorage.getItem(KEY_STORE);
    if (key) req.headers["X-API-Key"] = key;
    return req;
  },
});
