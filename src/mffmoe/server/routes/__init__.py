"""The service's routers, one module per area: `analyze` (the host's contract), `jobs` (queued work
with progress) and `meta` (pages, readiness, model, counters). `create_app` includes them."""
