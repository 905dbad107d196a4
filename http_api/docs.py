"""/api/docs: a readable page of the API's OpenAPI document, served from here.

Plant networks often have no internet, so no CDN: a small page that fetches
/api/v1/openapi.json from this server and lists each operation with its parameters
and request body. (Try requests with curl; see the README.)
"""

from __future__ import annotations

DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>invops API</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;max-width:60em;color:#222}
h2{border-bottom:1px solid #ccc;padding-bottom:.2em}
.op{margin:1em 0;padding:.6em 1em;border-left:4px solid #49c;background:#f6f9fb}
.m{font-weight:bold;text-transform:uppercase;margin-right:.5em}
code,pre{font-family:ui-monospace,monospace;font-size:.9em}
pre{background:#eef;padding:.5em;overflow:auto}
</style></head><body>
<h1>invops Level-4 API</h1>
<p>OpenAPI 3.1 document: <a href="/api/v1/openapi.json">/api/v1/openapi.json</a>.
Authenticate with <code>Authorization: Bearer TOKEN</code> or HTTP Basic.</p>
<div id="ops">Loading…</div>
<script>
fetch("/api/v1/openapi.json").then(r => r.json()).then(doc => {
  const ops = document.getElementById("ops"); ops.textContent = "";
  const esc = s => String(s).replace(/[&<>]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;"}[c]));
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const div = document.createElement("div"); div.className = "op";
      const params = (op.parameters || []).map(p => esc(p.name) + " (" + p.in + ")").join(", ");
      let body = "";
      const schema = op.requestBody && op.requestBody.content["application/json"].schema;
      if (schema && schema.$ref) {
        const name = schema.$ref.split("/").pop();
        body = "<pre>" + esc(JSON.stringify(doc.components.schemas[name], null, 2)) + "</pre>";
      }
      div.innerHTML = "<span class=m>" + method + "</span><code>" + esc(path) + "</code><br>" +
        esc(op.summary || "") + (params ? "<br>parameters: " + params : "") + body;
      ops.appendChild(div);
    }
  }
});
</script></body></html>
"""
