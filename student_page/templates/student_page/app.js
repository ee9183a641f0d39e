// The student's live page: show the dashboard, refetch it on every pushed event, and resume the
// WebSocket with ?after=<last seq> after any disconnect so no event is missed.
(function () {
  "use strict";
  const params = new URLSearchParams(location.search);
  let token = params.get("token") || localStorage.getItem("studentToken") || "";
  let lastSeq = 0;
  let retryDelay = 500;
  let socket = null;
  let pingTimer = null;
  let pongDeadline = null;
  const PING_EVERY_MS = 20000;
  const PONG_WITHIN_MS = 10000;

  const $ = (id) => document.getElementById(id);

  function setState(state, text) {
    const el = $("connection");
    el.dataset.state = state;
    el.className = "state " + state;
    el.textContent = text || state;
  }

  async function refreshDashboard() {
    const response = await fetch("/api/v1/me/dashboard", { headers: { Authorization: "Token " + token } });
    if (response.status === 401) { showLogin("That token is not valid."); return null; }
    if (!response.ok) throw new Error("dashboard " + response.status);
    const dashboard = await response.json();
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

  function render(dashboard) {
    $("login").hidden = true;
    $("student").hidden = false;
    $("student-name").textContent = dashboard.student.username + " (" + dashboard.student.email + ")";
    zone = dashboard.student.timezone || browserZone();
    $("zone").textContent = zone + (dashboard.student.timezone ? "" : " (this browser's)");
    const list = $("purchases");
    list.replaceChildren(...dashboard.purchases.map(renderPurchase));
    $("empty").hidden = dashboard.purchases.length > 0;
  }

  function renderPurchase(p) {
    const li = document.createElement("li");
    li.className = "purchase";
    li.dataset.purchaseId = p.id;
    li.dataset.status = p.status;
    const title = document.createElement("h3");
    title.textContent = p.course.title;
    const status = document.createElement("span");
    status.className = "status " + p.status;
    status.textContent = p.status;
    title.append(status);
    const trainer = document.createElement("p");
    trainer.className = "trainer";
    trainer.textContent = p.trainer ? "Trainer: " + p.trainer.name : "Trainer: not allocated yet";
    const sessions = document.createElement("ol");
    sessions.className = "sessions";
    for (const s of p.sessions) {
      const item = document.createElement("li");
      item.className = "session " + s.status;
      item.dataset.startsAt = s.starts_at;
      item.textContent = localTime(s.starts_at) + " (" + s.status + ")";
      sessions.append(item);
    }
    li.append(title, trainer, sessions);
    return li;
  }

  function logEvent(event) {
    const item = document.createElement("li");
    item.dataset.seq = event.seq;
    item.textContent = "#" + event.seq + " " + event.type;
    $("events").prepend(item);
  }

  function connect() {
    // The `ws` process's address when it has its own (REALTIME_WS_URL), else this page's origin.
    const base = document.body.dataset.wsUrl || (location.protocol === "https:" ? "wss" : "ws") + "://" + location.host;
    const url = base + "/ws/events/?token=" + encodeURIComponent(token) + "&after=" + lastSeq;
    socket = new WebSocket(url);
    socket.onopen = () => { retryDelay = 500; setState("live", "live"); startPinging(); };
    socket.onmessage = async (message) => {
      const event = JSON.parse(message.data);
      if (event.type === "pong") { clearTimeout(pongDeadline); return; }
      if (typeof event.seq !== "number") return; // other control frames
      if (event.seq <= lastSeq) return; // already seen (a replay overlapping a push)
      lastSeq = event.seq;
      $("last-seq").textContent = String(lastSeq);
      logEvent(event);
      await refreshDashboard(); // the relay invalidated the cache before pushing: this is fresh
    };
    socket.onclose = (close) => {
      stopPinging();
      if (close.code === 4401) { setState("offline", "not authorised"); showLogin("That token is not valid."); return; }
      setState("reconnecting", "reconnecting…");
      // 4400 (cursor ahead of the stream) / 4410 (cursor purged): start over from a fresh dashboard.
      const next = close.code === 4400 || close.code === 4410 ? start : connect;
      setTimeout(next, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 10000);
    };
  }

  // An application ping finds a half-open connection that the browser would not notice (and makes
  // the server catch up on anything a dropped push missed).
  function startPinging() {
    stopPinging();
    pingTimer = setInterval(() => {
      if (!socket || socket.readyState !== WebSocket.OPEN) return;
      socket.send(JSON.stringify({ type: "ping" }));
      clearTimeout(pongDeadline);
      pongDeadline = setTimeout(() => socket.close(), PONG_WITHIN_MS);
    }, PING_EVERY_MS);
  }

  function stopPinging() {
    clearInterval(pingTimer);
    clearTimeout(pongDeadline);
  }

  function showLogin(message) {
    $("login").hidden = false;
    $("student").hidden = true;
    if (message) $("token-input").placeholder = message;
  }

  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("token-input").value.trim();
    localStorage.setItem("studentToken", token);
    start();
  });

  async function start() {
    if (!token) { setState("offline", "no token"); showLogin(); return; }
    localStorage.setItem("studentToken", token);
    try {
      const dashboard = await refreshDashboard();
      if (!dashboard) { setState("offline", "not authorised"); return; }
      lastSeq = dashboard.seq; // the view reflects every event up to here; the socket resumes after it
      $("last-seq").textContent = String(lastSeq);
      connect();
    } catch (err) {
      setState("reconnecting", "reconnecting…");
      setTimeout(start, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 10000);
    }
  }

  start();
})();
