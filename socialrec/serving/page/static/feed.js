// The feed page's actions: an event to POST /events (and /blocks for "see fewer like this")
// with the page's bearer token (local profile only), then the next page of cards from
// /feed/cards. Everything else on the page is plain links and forms.
"use strict";

const EVENTS = { like: "LIKE", dislike: "DISLIKE", fewer: "DISLIKE", seen: "IMPRESSION" };
const token = document.querySelector('meta[name="socialrec-token"]')?.content;
const status = (text) => { document.getElementById("status").textContent = text; };

async function post(path, body) {
  const r = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  });
  if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  return r.json();
}

async function nextPage() {
  const feed = document.getElementById("feed");
  const r = await fetch(feed.dataset.src);
  if (!r.ok) throw new Error(`next page: ${r.status}`);
  feed.outerHTML = await r.text();
}

async function act(button) {
  const card = button.closest(".card");
  const action = button.dataset.action;
  const user = Number(document.getElementById("feed")?.dataset.user ?? NaN);
  const post_id = Number(card.dataset.post);
  const creator = Number(card.dataset.creator);
  if (!token || Number.isNaN(user)) return;
  button.disabled = true;
  const event = {
    event_id: `page-${Date.now()}-${Math.random().toString(36).slice(2, 10)}`,
    user_id: user,
    post_id,
    event_type: EVENTS[action],
    ts: new Date().toISOString(),
  };
  try {
    await post("/events", { events: [event] });
    if (action === "fewer" && creator >= 0) {
      await post("/blocks", { user_id: user, creator_ids: [creator] });
    }
    if (document.getElementById("feed")) await nextPage();
    status(`${event.event_type} on post ${post_id} recorded; the feed is the next page now`);
  } catch (err) {
    status(`not recorded: ${err.message}`);
    button.disabled = false;
  }
}

document.addEventListener("click", (ev) => {
  const button = ev.target.closest("button[data-action]");
  if (button) act(button);
});
