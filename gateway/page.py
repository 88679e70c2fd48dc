"""The search page the HTTP gateway serves at ``/``: pick or drop a photo (or type text), choose
a collection, see the top hits as a grid with scores and labels.

One self-contained HTML document (no external scripts, fonts or styles, so it works offline and
under a strict CSP); it talks only to the gateway's JSON API, sends the bearer token typed into
it (kept in sessionStorage) as ``Authorization``, and loads hit images through
``/v1/collections/{name}/items/{id}:image`` (the service reads them inside its allowed roots).
Kept in a Python module so that it ships with the package without package-data settings.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ris: reverse image search</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 0; background: #f4f5f7; color: #222; }
  header { background: #1f2937; color: #fff; padding: 12px 20px; font-size: 18px; }
  form { display: flex; flex-wrap: wrap; gap: 12px; align-items: center; padding: 16px 20px;
         background: #fff; border-bottom: 1px solid #ddd; }
  #drop { border: 2px dashed #9ca3af; border-radius: 8px; padding: 14px 18px; min-width: 260px;
          color: #555; cursor: pointer; }
  #drop.over { border-color: #2563eb; background: #eff6ff; }
  #preview { max-height: 64px; vertical-align: middle; margin-left: 8px; }
  input[type=text], select, input[type=number] { padding: 6px 8px; font-size: 15px; }
  button { padding: 7px 16px; font-size: 15px; background: #2563eb; color: #fff; border: 0;
           border-radius: 6px; cursor: pointer; }
  #status { padding: 8px 20px; color: #555; min-height: 1.4em; }
  #status.error { color: #b91c1c; }
  #hits { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr));
          gap: 14px; padding: 0 20px 20px; }
  .hit { background: #fff; border-radius: 8px; box-shadow: 0 1px 3px #0002; overflow: hidden; }
  .hit .img { height: 150px; display: flex; align-items: center; justify-content: center;
              background: #e5e7eb; color: #6b7280; font-size: 13px; }
  .hit img { max-width: 100%; max-height: 150px; }
  .hit .meta { padding: 8px 10px; font-size: 13px; word-break: break-all; }
  .hit .score { font-weight: 600; color: #1d4ed8; }
  .hit .dup { font-size: 0.8em; color: #b45309; }
</style>
</head>
<body>
<header>ris &mdash; reverse image search</header>
<form id="search">
  <label>collection <select id="collection"></select></label>
  <label id="drop" tabindex="0">drop a photo here or click to pick one
    <input id="file" type="file" accept="image/*" hidden><img id="preview" alt="" hidden></label>
  <label>or text <input id="text" type="text" placeholder="a photo of a cat"></label>
  <label>top <input id="topk" type="number" value="12" min="1" max="100" style="width:5em"></label>
  <label>token <input id="token" type="text" placeholder="(if the service needs one)"></label>
  <button id="go" type="submit">Search</button>
</form>
<div id="status"></div>
<div id="hits"></div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let picked = null;
$("token").value = sessionStorage.getItem("ris-token") || "";

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const token = $("token").value.trim();
  sessionStorage.setItem("ris-token", token);
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}
function status(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}
async function call(path, options) {
  const reply = await fetch(path, options);
  const body = await reply.json();
  if (!reply.ok) {
    const e = body.error || {};
    throw new Error((e.status || reply.status) + ": " + (e.message || "request failed"));
  }
  return body;
}
async function loadCollections() {
  try {
    const body = await call("/v1/collections", { headers: headers() });
    const select = $("collection");
    select.innerHTML = "";
    for (const c of body.collections || []) {
      const option = document.createElement("option");
      option.value = c.name;
      option.textContent = c.name + " (" + c.count + ")";
      select.appendChild(option);
    }
    status((body.collections || []).length ? "" : "no collections yet", false);
  } catch (e) { status(e.message, true); }
}
function pick(file) {
  picked = file;
  $("preview").src = URL.createObjectURL(file);
  $("preview").hidden = false;
  $("text").value = "";
}
$("file").addEventListener("change", () => { if ($("file").files[0]) pick($("file").files[0]); });
$("drop").addEventListener("dragover", (e) => {
  e.preventDefault();
  $("drop").classList.add("over");
});
$("drop").addEventListener("dragleave", () => $("drop").classList.remove("over"));
$("drop").addEventListener("drop", (e) => {
  e.preventDefault();
  $("drop").classList.remove("over");
  if (e.dataTransfer.files[0]) pick(e.dataTransfer.files[0]);
});
$("token").addEventListener("change", loadCollections);

async function showImage(box, name, id) {
  try {
    const path = "/v1/collections/" + encodeURIComponent(name) + "/items/" +
      encodeURIComponent(id) + ":image";
    const reply = await fetch(path, { headers: headers() });
    if (!reply.ok) { box.textContent = "image not served"; return; }
    const img = document.createElement("img");
    img.src = URL.createObjectURL(await reply.blob());
    img.alt = id;
    box.textContent = "";
    box.appendChild(img);
  } catch (e) { box.textContent = "image not served"; }
}
function render(name, result) {
  const grid = $("hits");
  grid.innerHTML = "";
  if (result.error && result.error.code) { status(result.error.message, true); return; }
  const hits = result.hits || [];
  status(hits.length + " hits", false);
  for (const hit of hits) {
    const card = document.createElement("div");
    card.className = "hit";
    const box = document.createElement("div");
    box.className = "img";
    box.textContent = "loading";
    const meta = document.createElement("div");
    meta.className = "meta";
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = Number(hit.score).toFixed(3);
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = " " + (hit.label || "-");
    const id = document.createElement("div");
    id.className = "id";
    id.textContent = hit.id;
    meta.append(score, label);
    if (hit.near_duplicate) {
      const badge = document.createElement("span");
      badge.className = "dup";
      badge.textContent = " near duplicate";
      meta.append(badge);
    }
    meta.append(id);
    card.append(box, meta);
    grid.appendChild(card);
    showImage(box, name, hit.id);
  }
}
$("search").addEventListener("submit", async (e) => {
  e.preventDefault();
  const name = $("collection").value;
  const topK = Math.max(1, Math.min(100, Number($("topk").value) || 12));
  const text = $("text").value.trim();
  if (!name) { status("choose a collection", true); return; }
  if (!picked && !text) { status("pick a photo or type a text", true); return; }
  status("searching...", false);
  const path = "/v1/collections/" + encodeURIComponent(name) + ":search";
  try {
    let body;
    if (text) {
      body = await call(path, {
        method: "POST",
        headers: headers({ "Content-Type": "application/json" }),
        body: JSON.stringify({ queries: [{ text: text }], top_k: topK }),
      });
    } else {
      body = await call(path + "?top_k=" + topK, {
        method: "POST",
        headers: headers({ "Content-Type": picked.type || "application/octet-stream" }),
        body: picked,
      });
    }
    render(name, body.results[0]);
  } catch (err) { status(err.message, true); }
});
loadCollections();
</script>
</body>
</html>
"""
