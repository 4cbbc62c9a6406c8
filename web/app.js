// The superglobal web page: one query (an image from the user, or an indexed image by id), an
// optional box on it, and the ranked results as thumbnails, a page at a time. Plain JavaScript,
// no build step; it only talks to its own server (see src/server/app.ts for the API).
// Results per page: 12, or `?per=N` in the address.
const PER_PAGE = Math.max(1, Number(new URLSearchParams(location.search).get("per")) || 12);
const TOP = 96;

const $ = (id) => document.getElementById(id);
const drop = $("drop");
const fileInput = $("file");
const stage = $("stage");
const preview = $("preview");
const canvas = $("box-canvas");
const rerank = $("rerank");
const mode = $("mode");
const clearBox = $("clear-box");
const newQuery = $("new-query");
const status = $("status");
const grid = $("grid");
const pager = $("pager");

/** The query: `file` (a Blob) or `id` (an indexed image); `box` in the image's own pixels. */
const state = { file: null, id: null, box: null, results: [], page: 0, seq: 0, url: null };

// --- what is served -------------------------------------------------------------------------
fetch("/health")
  .then((r) => r.json())
  .then((h) => {
    $("info").textContent =
      `${h.images} images · model ${h.model.name} (${h.model.network}, ${h.model.dim}-d)`;
  })
  .catch(() => {
    $("info").textContent = "server unreachable";
  });

// --- choosing a query -----------------------------------------------------------------------
fileInput.addEventListener("change", () => {
  if (fileInput.files?.[0]) useFile(fileInput.files[0]);
  fileInput.value = "";
});
drop.addEventListener("dragover", (e) => {
  e.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  const file = [...(e.dataTransfer?.files ?? [])].find((f) => f.type.startsWith("image/"));
  if (file) useFile(file);
  else say("That is not an image file.", true);
});
document.addEventListener("paste", (e) => {
  const item = [...(e.clipboardData?.items ?? [])].find((i) => i.type.startsWith("image/"));
  const file = item?.getAsFile();
  if (file) useFile(file);
});
newQuery.addEventListener("click", () => fileInput.click());

function useFile(file) {
  state.file = file;
  state.id = null;
  state.box = null;
  show(URL.createObjectURL(file));
  search();
}

function useId(id) {
  state.file = null;
  state.id = id;
  state.box = null;
  show(`/images/${id}`);
  search();
}

function show(url) {
  if (state.url?.startsWith("blob:")) URL.revokeObjectURL(state.url);
  state.url = url;
  preview.src = url;
  stage.hidden = false;
  drop.hidden = true;
  newQuery.hidden = false;
  drawBox(null);
}

// --- the query box: drawn on a canvas over the preview --------------------------------------
let dragStart = null;
let dragBox = null;
preview.addEventListener("load", () => fitCanvas());
window.addEventListener("resize", () => fitCanvas());

function fitCanvas() {
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(preview.clientWidth * ratio);
  canvas.height = Math.round(preview.clientHeight * ratio);
  drawBox(state.box && toDisplay(state.box));
}

function pointer(e) {
  const r = canvas.getBoundingClientRect();
  return [
    Math.min(Math.max(e.clientX - r.left, 0), r.width),
    Math.min(Math.max(e.clientY - r.top, 0), r.height),
  ];
}

canvas.addEventListener("pointerdown", (e) => {
  e.preventDefault();
  canvas.setPointerCapture(e.pointerId);
  dragStart = pointer(e);
  dragBox = null;
});
canvas.addEventListener("pointermove", (e) => {
  if (!dragStart) return;
  const [x, y] = pointer(e);
  dragBox = [
    Math.min(dragStart[0], x),
    Math.min(dragStart[1], y),
    Math.max(dragStart[0], x),
    Math.max(dragStart[1], y),
  ];
  drawBox(dragBox);
});
canvas.addEventListener("pointerup", async () => {
  const box = dragBox;
  dragStart = null;
  dragBox = null;
  if (!box || box[2] - box[0] < 6 || box[3] - box[1] < 6) {
    drawBox(state.box && toDisplay(state.box));
    return;
  }
  if (state.id !== null) {
    // A box applies to an image's pixels: fetch the indexed original and search with it.
    const r = await fetch(`/images/${state.id}`);
    if (!r.ok) return say("Cannot fetch that image to crop it.", true);
    state.file = await r.blob();
    state.id = null;
  }
  state.box = toNatural(box);
  drawBox(box);
  search();
});
clearBox.addEventListener("click", () => {
  state.box = null;
  drawBox(null);
  search();
});

/** Display pixels (CSS) ↔ the image's own pixels. */
function toNatural(b) {
  const sx = preview.naturalWidth / preview.clientWidth;
  const sy = preview.naturalHeight / preview.clientHeight;
  return [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy].map((v) => Math.round(v));
}
function toDisplay(b) {
  const sx = preview.clientWidth / preview.naturalWidth;
  const sy = preview.clientHeight / preview.naturalHeight;
  return [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy];
}

function drawBox(box) {
  const ctx = canvas.getContext("2d");
  const ratio = canvas.width / Math.max(canvas.clientWidth, 1);
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, canvas.clientWidth, canvas.clientHeight);
  clearBox.disabled = state.box === null;
  if (!box) return;
  const [x1, y1, x2, y2] = box;
  ctx.fillStyle = "rgba(0, 0, 0, 0.45)";
  ctx.fillRect(0, 0, canvas.clientWidth, canvas.clientHeight);
  ctx.clearRect(x1, y1, x2 - x1, y2 - y1);
  ctx.strokeStyle = "#d70751";
  ctx.lineWidth = 2;
  ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
}

// --- searching ------------------------------------------------------------------------------
rerank.addEventListener("change", () => {
  mode.disabled = !rerank.checked;
  search();
});
mode.addEventListener("change", () => search());

async function search() {
  if (state.file === null && state.id === null) return;
  const seq = ++state.seq;
  const rerankMode = rerank.checked ? mode.value : "off";
  let request;
  if (state.id !== null) {
    request = fetch("/search", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ id: state.id, top: TOP, rerank: rerankMode }),
    });
  } else {
    const params = new URLSearchParams({ top: String(TOP), rerank: rerankMode });
    if (state.box) params.set("box", state.box.join(","));
    request = fetch(`/search?${params}`, {
      method: "POST",
      headers: { "content-type": state.file.type || "application/octet-stream" },
      body: state.file,
    });
  }
  say(state.id !== null ? `Searching like image #${state.id}…` : "Searching…");
  document.body.dataset.state = "searching";
  try {
    const response = await request;
    const answer = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    if (seq !== state.seq) return; // a newer search is under way
    if (!response.ok) {
      const retry = response.headers.get("retry-after");
      say(
        `${answer.error ?? `HTTP ${response.status}`}${retry ? ` (retry in ${retry} s)` : ""}`,
        true,
      );
      document.body.dataset.state = "error";
      return;
    }
    state.results = answer.results;
    state.page = 0;
    render();
    const t = answer.timings;
    const parts = [
      t.extract > 0 ? `extraction ${ms(t.decode + t.extract)}` : null,
      `search ${ms(t.search)}`,
      rerankMode === "off" ? "no rerank" : `rerank (${rerankMode}) ${ms(t.rerank)}`,
    ].filter(Boolean);
    const what = state.id !== null ? ` like #${state.id}` : state.box ? " in the box" : "";
    say(`${answer.results.length} results${what} · ${parts.join(" · ")}`);
    document.body.dataset.state = "done";
  } catch (error) {
    if (seq !== state.seq) return;
    say(`Search failed: ${error.message}`, true);
    document.body.dataset.state = "error";
  }
}

function ms(v) {
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ms`;
}

function say(text, error = false) {
  status.textContent = text;
  status.classList.toggle("error", error);
}

// --- results, a page at a time --------------------------------------------------------------
function render() {
  const pages = Math.max(1, Math.ceil(state.results.length / PER_PAGE));
  state.page = Math.min(Math.max(state.page, 0), pages - 1);
  const slice = state.results.slice(state.page * PER_PAGE, (state.page + 1) * PER_PAGE);
  grid.replaceChildren(
    ...slice.map((hit) => {
      const card = document.createElement("button");
      card.type = "button";
      card.className = "hit";
      card.dataset.id = String(hit.id);
      card.dataset.rank = String(hit.rank);
      card.title = `${hit.path}\nclick: more like this`;
      const img = document.createElement("img");
      img.src = `/images/${hit.id}/thumb`;
      img.alt = hit.path.split("/").pop();
      img.loading = "lazy";
      const meta = document.createElement("span");
      meta.className = "meta";
      const rank = document.createElement("span");
      rank.className = "rank";
      rank.textContent = `#${hit.rank}`;
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = hit.score.toFixed(3);
      meta.append(rank, score);
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = hit.path.split("/").pop();
      card.append(img, meta, name);
      card.addEventListener("click", () => useId(hit.id));
      return card;
    }),
  );
  pager.hidden = state.results.length <= PER_PAGE;
  $("page-info").textContent = `page ${state.page + 1} of ${pages}`;
  $("prev").disabled = state.page === 0;
  $("next").disabled = state.page >= pages - 1;
}
$("prev").addEventListener("click", () => {
  state.page -= 1;
  render();
});
$("next").addEventListener("click", () => {
  state.page += 1;
  render();
});
