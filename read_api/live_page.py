"""``GET /live``: a small browser page (dev mode only) that opens one story's live stream
(``GET /api/v1/stories/{id}/live?access_token=...``, server-sent events) with EventSource and
shows its view count and each poll's votes and percentages as they change, so a person can see
live updates work: ``/live?story=<story id>&token=<jwt>`` (or fill in the form).

Plain HTML and a little JavaScript, no build step. Everything the story carries is written with
``textContent`` (never as HTML): the story's text and poll options are other users' input.
"""

from __future__ import annotations

from aiohttp import web

from stories.settings import Settings

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Stories: live story</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; max-width: 42rem; margin: 2rem auto; padding: 0 1rem; }
  form { display: grid; grid-template-columns: max-content 1fr; gap: .4rem .6rem; margin-bottom: 1.5rem; }
  input { font: inherit; padding: .2rem .4rem; }
  table { border-collapse: collapse; margin: .3rem 0 1rem; }
  td, th { padding: .15rem .8rem .15rem 0; text-align: left; }
  td.votes, td.percentage { text-align: right; font-variant-numeric: tabular-nums; }
  #status { font-weight: bold; }
</style>
</head>
<body>
<h1>Live story</h1>
<form method="get" action="/live">
  <label for="story">Story id</label><input id="story" name="story" required>
  <label for="token">Token (JWT)</label><input id="token" name="token" required>
  <span></span><button type="submit">Watch</button>
</form>
<p>Status: <span id="status">not connected</span></p>
<p>Views: <span id="views">&ndash;</span> &middot; position <span id="position">&ndash;</span></p>
<div id="polls"></div>
<script>
"use strict";
const params = new URLSearchParams(location.search);
const storyId = params.get("story") || "", token = params.get("token") || "";
document.getElementById("story").value = storyId;
document.getElementById("token").value = token;
const setStatus = (text) => { document.getElementById("status").textContent = text; };

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
}

function render(story) {
  document.getElementById("views").textContent = story.view_count;
  const polls = document.getElementById("polls");
  polls.replaceChildren();
  (story.stickers || []).forEach((sticker, index) => {
    if (sticker.sticker_type !== "poll") return;
    const poll = sticker.poll;
    const box = document.createElement("section");
    box.className = "poll";
    box.dataset.sticker = index;
    const h = document.createElement("h2");
    h.textContent = poll.question + " (" + poll.total_votes + " votes)";
    box.append(h);
    const table = document.createElement("table");
    poll.options.forEach((option, i) => {
      const row = table.insertRow();
      row.dataset.option = i;
      cell(row, option.text, "text");
      cell(row, String(option.votes), "votes");
      cell(row, option.percentage.toFixed(1) + "%", "percentage");
    });
    box.append(table);
    polls.append(box);
  });
}

if (storyId && token) {
  const url = "/api/v1/stories/" + encodeURIComponent(storyId) + "/live?access_token=" + encodeURIComponent(token);
  const source = new EventSource(url);
  setStatus("connecting");
  source.onopen = () => setStatus("live");
  source.addEventListener("story", (e) => {
    document.getElementById("position").textContent = e.lastEventId;
    render(JSON.parse(e.data));
    setStatus("live");
  });
  source.addEventListener("end", () => { source.close(); setStatus("ended"); });
  source.onerror = () => {
    // EventSource retries by itself after a dropped connection; it gives up on an error answer
    // (401: a bad token, 404: no such story for you).
    setStatus(source.readyState === EventSource.CLOSED ? "closed (check the story id and the token)" : "reconnecting");
  };
}
</script>
</body>
</html>
"""


async def live_page(request: web.Request) -> web.Response:
    # The token travels in the page's URL; keep it out of Referer headers and caches.
    return web.Response(
        text=PAGE, content_type="text/html", headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    )


def add_live_page(app: web.Application, settings: Settings) -> None:
    """Serve ``GET /live`` in dev mode only; otherwise there is no such route (404).

    It is a developer's tool, not part of the contract: it puts a bearer token in a URL (browser
    history, logs), which is acceptable only on a developer's machine, and dev mode binds to
    loopback only. Like /docs and /health it is kept out of the OpenAPI document."""
    if settings.dev_mode:
        app.router.add_get("/live", live_page)
