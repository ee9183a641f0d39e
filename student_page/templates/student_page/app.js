// The student's live page: show the dashboard, refetch it on every pushed event, and resume the
// WebSocket with ?after=<last seq> after any disconnect so no event is missed. It never shows more
// than it knows: the badge says "reconnecting…" the moment a pong is late or the browser goes offline,
// and an event it has not yet seen reflected in a dashboard is shown as "updating", never as "no courses".
(function () {
  "use strict";
  const params = new URLSearchParams(location.search);
  let token = params.get("token") || localStorage.getItem("studentToken") || "";
  let lastSeq = 0;       // the last event received
  let shownSeq = 0;      // the seq of the dashboard on screen
  let retryDelay = 500;
  let socket = null;
  let pingTimer = null;
  let pongDeadline = null;
  let reconnectTimer = null;
  const PING_EVERY_MS = Number(document.body.dataset.pingMs) || 20000;
  const PONG_WITHIN_MS = Number(document.body.dataset.pongMs) || 10000;
  const SIGN_IN_AGAIN = "Your sign-in has expired or is not valid. Please sign in again with the link from " +
    "your app or your confirmation email.";

  const $ = (id) => document.getElementById(id);

  function setState(state, text) {
    const el = $("connection");
    el.dataset.state = state;
    el.className = "state " + state;
    el.textContent = text || state;
  }

  class SignedOut extends Error {}

  async function refreshDashboard() {
    const response = await fetch("/api/v1/me/dashboard", { headers: { Authorization: "Token " + token } });
    if (response.status === 401 || response.status === 403) throw new SignedOut();
    if (!response.ok) throw new Error("dashboard " + response.status);
    const dashboard = await response.json();
    // A view older than an event already received would show the past as the present: fetch again.
    if (dashboard.seq < lastSeq) throw new Error("dashboard behind the events");
    render(dashboard);
    return dashboard;
  }

  // Session times in the student's zone (their profile's), else the browser's; always with the zone.
  let zone = browserZone();

  function browserZone() {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  }

  function localTime(iso) {
    const options = {
      weekday: "short", year: "numeric", month: "short", day: "numeric",
      hour: "2-digit", minute: "2-digit", timeZoneName: "short", timeZone: zone,
    };
    try {
      return new Date(iso).toLocaleString(undefined, options);
    } catch (err) { // a zone this browser does not know: its own instead
      zone = browserZone();
      return new Date(iso).toLocaleString(undefined, Object.assign(options, { timeZone: zone }));
    }
  }

  // Refetch until the dashboard reflects every event received, with a short backoff.
  async function catchUp(attempt = 0) {
    try {
      await refreshDashboard();
    } catch (err) {
      if (err instanceof SignedOut) { signedOut(); return; }
      setTimeout(() => catchUp(attempt + 1), Math.min(200 * 2 ** attempt, 5000));
    }
  }

  function render(dashboard) {
    shownSeq = dashboard.seq;
    $("login").hidden = true;
    $("student").hidden = false;
    $("student-name").textContent = dashboard.student.username + " (" + dashboard.student.email + ")";
    zone = dashboard.student.timezone || browserZone();
    $("zone").textContent = zone + (dashboard.student.timezone ? "" : " (this browser's)");
    $("purchases").replaceChildren(...dashboard.purchases.map(renderPurchase));
    showUpdating();
  }

  // "No courses yet" only when the dashboard on screen reflects every event received.
  function showUpdating() {
    const behind = shownSeq < lastSeq;
    $("updating").hidden = !behind;
    $("empty").hidden = behind || $("purchases").children.length > 0;
  }

  const STATUS_WORDS = {
    pending: "Payment received: finding you a trainer…",
    waitlisted: "On the waiting list: no trainer has a free place and time for this course yet. You will get the first one that opens.",
    active: "",
    refunded: "Refunded: this course and its sessions are cancelled.",
  };
  const STATUS_LABELS = { pending: "processing", waitlisted: "waiting list", active: "active", refunded: "refunded" };

  function renderPurchase(p) {
    const li = document.createElement("li");
    li.className = "purchase";
    li.dataset.purchaseId = p.id;
    li.dataset.status = p.status;
    const title = document.createElement("h3");
    title.textContent = p.course.title;
    const status = document.createElement("span");
    status.className = "status " + p.status;
    status.textContent = STATUS_LABELS[p.status] || p.status;
    title.append(status);
    li.append(title);
    const words = STATUS_WORDS[p.status];
    if (words) {
      const note = document.createElement("p");
      note.className = "status-note";
      note.textContent = words;
      li.append(note);
    }
    if (p.status === "refunded") return li; // no trainer, no sessions: nothing of it will happen
    if (p.trainer) {
      const trainer = document.createElement("p");
      trainer.className = "trainer";
      trainer.textContent = "Trainer: " + p.trainer.name;
      li.append(trainer);
    }
    const sessions = document.createElement("ol");
    sessions.className = "sessions";
    for (const s of p.sessions) {
      const item = document.createElement("li");
      item.className = "session " + s.status;
      item.dataset.startsAt = s.starts_at;
      item.textContent = localTime(s.starts_at) + " (" + s.status + ")";
      sessions.append(item);
    }
    li.append(sessions);
    return li;
  }

  function logEvent(event) {
    const item = document.createElement("li");
    item.dataset.seq = event.seq;
    item.textContent = "#" + event.seq + " " + event.type;
    $("events").prepend(item);
  }

  function connect() {
    clearTimeout(reconnectTimer);
    // The `ws` process's address when it has its own (REALTIME_WS_URL), else this page's origin.
    const base = document.body.dataset.wsUrl || (location.protocol === "https:" ? "wss" : "ws") + "://" + location.host;
    const url = base + "/ws/events/?token=" + encodeURIComponent(token) + "&after=" + lastSeq;
    const ws = new WebSocket(url);
    socket = ws;
    ws.onopen = () => { retryDelay = 500; setState("live", "live"); startPinging(); };
    ws.onmessage = (message) => {
      const event = JSON.parse(message.data);
      if (event.type === "pong") { clearTimeout(pongDeadline); pongDeadline = null; return; }
      if (typeof event.seq !== "number") return; // other control frames
      if (event.seq <= lastSeq) return; // already seen (a replay overlapping a push)
      lastSeq = event.seq;
      $("last-seq").textContent = String(lastSeq);
      logEvent(event);
      showUpdating();
      catchUp(); // the relay invalidated the cache before pushing: the refetch reflects this event
    };
    ws.onclose = (close) => {
      if (ws !== socket) return; // a socket we already gave up on
      stopPinging();
      if (close.code === 4401) { signedOut(); return; }
      // 4400 (cursor ahead of the stream) / 4410 (cursor purged): start over from a fresh dashboard.
      if (close.code === 4400 || close.code === 4410) { lastSeq = 0; reconnect(start); return; }
      reconnect(connect);
    };
  }

  // Say so at once, then try again with backoff. A socket given up on is closed without waiting:
  // offline, its close handshake may never complete.
  function reconnect(next) {
    setState("reconnecting", "reconnecting…");
    stopPinging();
    const old = socket;
    socket = null;
    if (old && old.readyState <= WebSocket.OPEN) {
      old.onclose = null;
      old.onmessage = null;
      try { old.close(); } catch (e) { /* already closing */ }
    }
    clearTimeout(reconnectTimer);
    reconnectTimer = setTimeout(next || connect, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 10000);
  }

  // An application ping finds a half-open connection that the browser would not notice (and makes
  // the server catch up on anything a dropped push missed).
  function startPinging() {
    stopPinging();
    pingTimer = setInterval(() => {
      if (!socket || socket.readyState !== WebSocket.OPEN) return;
      socket.send(JSON.stringify({ type: "ping" }));
      // The deadline runs from the oldest unanswered ping: a new ping must not push it back.
      if (pongDeadline === null) pongDeadline = setTimeout(() => reconnect(connect), PONG_WITHIN_MS);
    }, PING_EVERY_MS);
  }

  function stopPinging() {
    clearInterval(pingTimer);
    clearTimeout(pongDeadline);
    pongDeadline = null;
  }

  window.addEventListener("offline", () => { if (socket) reconnect(connect); });
  window.addEventListener("online", () => {
    if (!socket && token) { retryDelay = 500; clearTimeout(reconnectTimer); reconnectTimer = setTimeout(start, 0); }
  });

  function signedOut() {
    stopPinging();
    socket = null;
    setState("offline", "signed out");
    showLogin(SIGN_IN_AGAIN);
  }

  function showLogin(message) {
    $("login").hidden = false;
    $("student").hidden = true;
    if (message) $("signin-message").textContent = message;
  }

  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("token-input").value.trim();
    localStorage.setItem("studentToken", token);
    start();
  });

  async function start() {
    clearTimeout(reconnectTimer);
    if (!token) { setState("offline", "signed out"); showLogin(); return; }
    localStorage.setItem("studentToken", token);
    try {
      const dashboard = await refreshDashboard();
      lastSeq = dashboard.seq; // the view reflects every event up to here; the socket resumes after it
      $("last-seq").textContent = String(lastSeq);
      connect();
    } catch (err) {
      if (err instanceof SignedOut) { signedOut(); return; }
      reconnect(start);
    }
  }

  start();
})();
