/*
 * Chat widget for the channel gateway. No dependencies, no build step.
 *
 *   <script src="https://GATEWAY/widget.js" data-client="spa-del-sol"></script>
 *
 * Optional: data-color="#0f766e" (accent colour), data-open="true" (start open),
 * data-remember="false" (send no visitor id: the business does not recognise
 * this browser as a returning contact).
 *
 * Adds a chat bubble (bottom right) inside a Shadow DOM, so the host page's CSS
 * and the widget's never meet. Talks DESIGN.md's web chat protocol over
 * ws(s)://GATEWAY/web/chat/<client>: streams "token" events (a "discard"
 * withdraws the tokens streamed so far), renders quick
 * replies, reconnects with exponential backoff and "resume"s from the last
 * reply it committed. Session id, transcript and unanswered messages live in
 * localStorage (one key per client), so a reload shows the conversation once:
 * the transcript holds everything up to the committed event id, and the server
 * replays only what came after it. A random visitor id, kept there too, goes
 * with every connection (?visitor_id=...), so a returning visitor's details
 * can be offered back instead of asked again.
 */
(function () {
  "use strict";

  var script = document.currentScript ||
    document.querySelector('script[data-client][src*="widget.js"]');
  if (!script) return;
  var clientId = script.getAttribute("data-client");
  if (!clientId) {
    console.warn("chat widget: add data-client=\"<client id>\" to the script tag");
    return;
  }
  var TAG = "cg-chat-widget";
  if (document.querySelector(TAG + '[data-client="' + CSS.escape(clientId) + '"]')) return;

  var src = new URL(script.src, location.href);
  var base = src.href.replace(/\/widget\.js(?:[?#].*)?$/, "");
  var WS_URL = base.replace(/^http/, "ws") + "/web/chat/" + encodeURIComponent(clientId);
  var STORE_KEY = "cg-chat:" + clientId;
  var MAX_LINES = 200;
  var accent = script.getAttribute("data-color") || "#0f766e";

  // -- persisted state --------------------------------------------------------------------
  var saved = load();
  var state = {
    sessionId: typeof saved.sessionId === "string" ? saved.sessionId : null,
    cursor: Number.isInteger(saved.cursor) ? saved.cursor : 0, // id of the last committed reply
    lines: Array.isArray(saved.lines) ? saved.lines : [], // [{role: "user"|"bot", text}]
    pending: Array.isArray(saved.pending) ? saved.pending : [], // [{id, text}] not answered yet
    quick: Array.isArray(saved.quick) ? saved.quick : [], // quick replies of the last reply
    open: saved.open === true || script.getAttribute("data-open") === "true",
    title: typeof saved.title === "string" ? saved.title : "Chat",
    visitorId: typeof saved.visitorId === "string" && /^[A-Za-z0-9_-]{8,128}$/.test(saved.visitorId)
      ? saved.visitorId : null,
  };
  var REMEMBER = script.getAttribute("data-remember") !== "false";
  if (REMEMBER && !state.visitorId) state.visitorId = newId();

  function load() {
    try {
      return JSON.parse(localStorage.getItem(STORE_KEY) || "{}") || {};
    } catch (e) {
      return {};
    }
  }

  function save() {
    try {
      localStorage.setItem(STORE_KEY, JSON.stringify(state));
    } catch (e) { /* storage full or blocked: the chat still works, only reloads forget it */ }
  }

  // -- connection state (not persisted) ---------------------------------------------------
  var ws = null;
  var ready = false; // a session is settled on this connection
  var resolving = false; // we sent "resume" and await its answer
  var provisional = null; // a new-session event seen while resolving
  var liveCursor = state.cursor; // highest event id handled on this connection
  var sentHere = new Set(); // pending ids already sent on this connection
  var attempt = 0;
  var retryTimer = null;
  var refused = false; // 4403/4404: do not retry
  var streamText = null;
  var noticeTimer = null;

  // -- DOM --------------------------------------------------------------------------------
  if (!customElements.get(TAG)) {
    customElements.define(TAG, class extends HTMLElement {});
  }
  var host = document.createElement(TAG);
  host.setAttribute("data-client", clientId);
  var root = host.attachShadow({ mode: "open" });
  root.innerHTML =
    "<style>" + css() + "</style>" +
    '<section class="panel" role="dialog" aria-modal="false" hidden>' +
    '  <header><span class="dot" aria-hidden="true"></span>' +
    '    <div class="head"><h2 class="title"></h2><p class="status" aria-live="polite"></p></div>' +
    '    <button type="button" class="close" aria-label="Close chat">' + icon("close") + "</button>" +
    "  </header>" +
    '  <div class="log" role="log" aria-live="polite" aria-label="Conversation" tabindex="0"></div>' +
    '  <div class="quick" role="group" aria-label="Suggested replies"></div>' +
    '  <p class="notice" role="status" aria-live="assertive" hidden></p>' +
    '  <form class="composer">' +
    '    <input type="text" aria-label="Type your message" placeholder="Type a message…" autocomplete="off" maxlength="2000">' +
    '    <button type="submit" class="send" aria-label="Send message">' + icon("send") + "</button>" +
    "  </form>" +
    "</section>" +
    '<button type="button" class="bubble" aria-label="Open chat" aria-expanded="false">' +
    icon("chat") + "</button>";
  host.style.setProperty("--accent", accent);

  var $ = function (sel) { return root.querySelector(sel); };
  var panel = $(".panel");
  var bubble = $(".bubble");
  var logEl = $(".log");
  var quickEl = $(".quick");
  var noticeEl = $(".notice");
  var statusEl = $(".status");
  var input = $("input");
  var typingEl = document.createElement("div");
  typingEl.className = "typing";
  typingEl.setAttribute("role", "status");
  typingEl.setAttribute("aria-label", "Assistant is typing");
  typingEl.innerHTML = "<span></span><span></span><span></span>";
  var streamEl = null;

  bubble.addEventListener("click", function () { setOpen(!state.open, true); });
  $(".close").addEventListener("click", function () { setOpen(false, true); });
  panel.addEventListener("keydown", function (e) {
    if (e.key === "Escape") setOpen(false, true);
  });
  $(".composer").addEventListener("submit", function (e) {
    e.preventDefault();
    var text = input.value.trim();
    if (!text) return;
    input.value = "";
    send(text, text);
  });
  window.addEventListener("online", function () {
    if (!ws && !refused && (state.open || state.pending.length)) {
      clearTimeout(retryTimer);
      connect();
    }
  });

  function mount() {
    document.body.appendChild(host);
    setTitle(state.title);
    renderAll();
    if (state.open) setOpen(true, false);
    else if (state.pending.length) connect();
  }
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);

  // -- UI ---------------------------------------------------------------------------------
  function setOpen(open, focus) {
    state.open = open;
    save();
    panel.hidden = !open;
    bubble.setAttribute("aria-expanded", String(open));
    bubble.setAttribute("aria-label", open ? "Close chat" : "Open chat");
    host.classList.toggle("open", open);
    if (open) {
      connect();
      scrollDown();
      if (focus) input.focus();
    } else if (focus) {
      bubble.focus();
    }
  }

  function setTitle(title) {
    state.title = title;
    $(".title").textContent = title;
    panel.setAttribute("aria-label", "Chat with " + title);
  }

  function setStatus(text, online) {
    statusEl.textContent = text;
    host.setAttribute("data-connection", online ? "online" : text);
    host.classList.toggle("online", !!online);
  }

  function notice(text) {
    noticeEl.textContent = text;
    noticeEl.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(function () { noticeEl.hidden = true; }, 6000);
  }

  function lineEl(role, text, sources) {
    var el = document.createElement("div");
    el.className = "msg " + role;
    el.textContent = text;
    if (sources && sources.length) {
      // The documents an answer was drawn from, by name (metadata.sources).
      var src = document.createElement("div");
      src.className = "sources";
      src.textContent = "Source: " + sources.join(", ");
      el.appendChild(src);
    }
    return el;
  }

  function sourceNames(meta) {
    var seen = [];
    (Array.isArray(meta.sources) ? meta.sources : []).forEach(function (s) {
      if (!s || typeof s.file !== "string") return;
      var name = s.file === "config" ? "business info" : s.file.split("/").pop();
      if (typeof s.page === "number") name += " p. " + s.page;
      if (seen.indexOf(name) < 0) seen.push(name);
    });
    return seen.slice(0, 3);
  }

  function renderAll() {
    logEl.textContent = "";
    state.lines.forEach(function (l) { logEl.appendChild(lineEl(l.role, l.text, l.sources)); });
    streamEl = null;
    renderQuick();
    renderTyping();
  }

  function addLine(role, text, sources) {
    var line = { role: role, text: text };
    if (sources && sources.length) line.sources = sources;
    state.lines.push(line);
    if (state.lines.length > MAX_LINES) state.lines.splice(0, state.lines.length - MAX_LINES);
    logEl.insertBefore(lineEl(role, text, sources), streamEl || (typingEl.parentNode ? typingEl : null));
    scrollDown();
  }

  function renderQuick() {
    quickEl.textContent = "";
    state.quick.forEach(function (q) {
      var b = document.createElement("button");
      b.type = "button";
      b.textContent = q.title;
      b.addEventListener("click", function () {
        send(q.value, q.title);
        input.focus();
      });
      quickEl.appendChild(b);
    });
    quickEl.hidden = state.quick.length === 0;
  }

  function renderTyping() {
    var waiting = state.pending.length > 0 || streamText !== null ||
      (state.open && !ready && state.lines.length === 0);
    if (waiting) logEl.appendChild(typingEl);
    else if (typingEl.parentNode) typingEl.remove();
    host.setAttribute("aria-busy", String(waiting));
    scrollDown();
  }

  function scrollDown() {
    logEl.scrollTop = logEl.scrollHeight;
  }

  // -- protocol ---------------------------------------------------------------------------
  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  function send(text, shown) {
    var item = { id: newId(), text: text };
    addLine("user", shown);
    state.pending.push(item);
    state.quick = [];
    save();
    renderQuick();
    renderTyping();
    if (ready) sendPending(item);
    else connect();
  }

  function sendPending(item) {
    if (!ws || !ready || ws.readyState !== WebSocket.OPEN || sentHere.has(item.id)) return;
    ws.send(JSON.stringify({ type: "message", text: item.text, id: item.id }));
    sentHere.add(item.id);
  }

  function connect() {
    if (ws || refused) return;
    clearTimeout(retryTimer);
    setStatus("Connecting…", false);
    var sock = new WebSocket(
      REMEMBER && state.visitorId ? WS_URL + "?visitor_id=" + encodeURIComponent(state.visitorId) : WS_URL
    );
    ws = sock;
    ready = false;
    resolving = false;
    provisional = null;
    sentHere = new Set();
    dropStream(); // a reply cut off mid-stream is replayed from the committed cursor
    liveCursor = state.cursor;
    sock.onopen = function () {
      if (ws !== sock || !state.sessionId) return;
      resolving = true;
      sock.send(JSON.stringify({
        type: "resume", session_id: state.sessionId, last_event_id: state.cursor,
      }));
    };
    sock.onmessage = function (m) {
      if (ws !== sock) return;
      var ev;
      try { ev = JSON.parse(m.data); } catch (e) { return; }
      if (ev && typeof ev === "object") handle(ev);
    };
    sock.onclose = function (e) {
      if (ws !== sock) return;
      ws = null;
      ready = false;
      dropStream();
      if (e.code === 4403 || e.code === 4404) {
        refused = true;
        setStatus("Chat unavailable", false);
        return;
      }
      var delay = Math.min(30000, 500 * Math.pow(2, attempt)) * (0.5 + Math.random() / 2);
      attempt += 1;
      setStatus("Reconnecting…", false);
      retryTimer = setTimeout(connect, delay);
    };
  }

  function handle(ev) {
    switch (ev.type) {
      case "session": return onSession(ev);
      case "token": return onToken(ev);
      case "discard": return onDiscard(ev);
      case "complete": return onComplete(ev);
      case "error": return onError(ev);
    }
  }

  function onSession(ev) {
    if (ev.client_name) setTitle(ev.client_name);
    if (ev.resumed) {
      resolving = false;
      provisional = null;
      state.sessionId = ev.session_id;
      liveCursor = ev.event_id;
      return settled();
    }
    if (resolving) { // the server may still answer our resume: keep both options open
      provisional = ev;
      return;
    }
    startSession(ev);
  }

  function startSession(ev) {
    if (state.sessionId && state.sessionId !== ev.session_id) {
      // The server no longer has our conversation: say so, start clean, and
      // send what the visitor typed but never got an answer to in the new one.
      var unanswered = state.pending.map(function (p) { return p.text; });
      state.lines = [];
      state.quick = [];
      renderAll();
      notice("Your previous conversation has expired, so this is a new one.");
      unanswered.forEach(function (text) { addLine("user", text); });
    }
    state.sessionId = ev.session_id;
    state.cursor = ev.event_id;
    liveCursor = ev.event_id;
    if (state.lines.length === 0 && ev.greeting) addLine("bot", ev.greeting);
    settled();
  }

  function settled() {
    ready = true;
    attempt = 0;
    setStatus("Online", true);
    save();
    renderTyping();
    state.pending.forEach(sendPending);
  }

  function onToken(ev) {
    if (!(ev.event_id > liveCursor)) return;
    liveCursor = ev.event_id;
    if (streamEl === null) {
      streamEl = lineEl("bot streaming", "");
      streamText = "";
      logEl.insertBefore(streamEl, typingEl.parentNode ? typingEl : null);
    }
    streamText += ev.content || "";
    streamEl.textContent = streamText;
    renderTyping();
  }

  function onDiscard(ev) {
    // The tokens streamed so far are withdrawn; what follows replaces them.
    if (!(ev.event_id > liveCursor)) return;
    liveCursor = ev.event_id;
    dropStream();
    renderTyping();
  }

  function onComplete(ev) {
    if (!(ev.event_id > liveCursor)) return;
    liveCursor = ev.event_id;
    dropStream();
    var meta = ev.metadata || {};
    // A staff reply (metadata.from === "staff") shows as a person's line; while a
    // person holds the conversation the bot's reply is empty: no bubble, a notice.
    if (ev.text) addLine(meta.from === "staff" ? "bot staff" : "bot", ev.text, sourceNames(meta));
    var held = meta.handoff === "pending_human" || meta.handoff === "human";
    if (!ev.text && held) notice("Waiting for a person from the team…");
    if (meta.handoff) host.setAttribute("data-handoff", meta.handoff);
    state.cursor = ev.event_id;
    state.pending = state.pending.filter(function (p) { return p.id !== ev.reply_to; });
    state.quick = Array.isArray(ev.quick_replies) ? ev.quick_replies : [];
    host.setAttribute("data-state", meta.state || "");
    host.setAttribute("data-expecting", meta.expecting || "");
    save();
    renderQuick();
    renderTyping();
  }

  function onError(ev) {
    if (typeof ev.event_id === "number" && ev.event_id > liveCursor) liveCursor = ev.event_id;
    if (resolving) {
      resolving = false;
      if (ev.code === "unknown_session" && provisional) {
        startSession(provisional);
        return;
      }
      if (ev.code === "busy" || ev.code === "unavailable") {
        ws.close(); // try again later, still as a resume
        return;
      }
    }
    if (ev.code === "unknown_session") return; // the new session's event follows
    var item = state.pending.find(function (p) { return p.id === ev.reply_to; });
    // Nothing of a refused or failed turn was kept by the server, so sending the
    // same message id again is safe: it is answered exactly once.
    var again = ev.code === "rate_limited" || ev.code === "busy" ||
      (ev.code === "unavailable" && (item && (item.tries || 0) < 3));
    if (item && again) {
      item.tries = (item.tries || 0) + (ev.code === "unavailable" ? 1 : 0);
      notice("One moment…");
      var sock = ws;
      setTimeout(function () {
        if (ws === sock) { sentHere.delete(item.id); sendPending(item); }
      }, 2000 * Math.max(1, item.tries || 1));
      return;
    }
    if (item) {
      state.pending = state.pending.filter(function (p) { return p !== item; });
      save();
      renderTyping();
    }
    notice(ev.code === "too_large" ? "That message is too long." :
      "Sorry, that message could not be sent. Please try again.");
  }

  function dropStream() {
    if (streamEl) streamEl.remove();
    streamEl = null;
    streamText = null;
  }

  // -- look -------------------------------------------------------------------------------
  function icon(name) {
    var paths = {
      chat: '<path d="M4 5.5A2.5 2.5 0 0 1 6.5 3h11A2.5 2.5 0 0 1 20 5.5v8a2.5 2.5 0 0 1-2.5 2.5H10l-4.2 3.6c-.5.4-1.3 0-1.3-.6V16A2.5 2.5 0 0 1 4 13.5z"/>',
      send: '<path d="M3.4 20.4 21 12 3.4 3.6 3.4 10l12.6 2-12.6 2z"/>',
      close: '<path d="M6.4 5 12 10.6 17.6 5 19 6.4 13.4 12l5.6 5.6-1.4 1.4-5.6-5.6L6.4 19 5 17.6l5.6-5.6L5 6.4z"/>',
    };
    return '<svg viewBox="0 0 24 24" width="24" height="24" aria-hidden="true" focusable="false">' +
      paths[name] + "</svg>";
  }

  function css() {
    return [
      ":host{all:initial;position:fixed;right:20px;bottom:20px;z-index:2147483000}",
      // Set, not inherited: page rules on the host element itself may win over :host.
      ".panel,.bubble{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;",
      "color:#1f2933;letter-spacing:normal;text-align:left;text-transform:none;visibility:visible}",
      "*{box-sizing:border-box}",
      "[hidden]{display:none!important}",
      "button{font:inherit;cursor:pointer}",
      "button:focus-visible,input:focus-visible,.log:focus-visible{outline:3px solid color-mix(in srgb,var(--accent) 45%,white);outline-offset:2px}",
      ".bubble{width:60px;height:60px;border-radius:50%;border:0;background:var(--accent);color:#fff;",
      "display:grid;place-items:center;box-shadow:0 8px 24px rgba(15,23,42,.25);margin-left:auto;transition:transform .15s}",
      ".bubble:hover{transform:scale(1.06)}",
      ".bubble svg{fill:currentColor;width:28px;height:28px}",
      ":host(.open) .bubble svg{display:none}",
      ":host(.open) .bubble::before{content:'';width:14px;height:14px;border:solid #fff;border-width:0 3px 3px 0;transform:translateY(-3px) rotate(45deg)}",
      ".panel{position:absolute;right:0;bottom:76px;width:370px;height:min(560px,calc(100vh - 120px));",
      "display:flex;flex-direction:column;background:#fff;border-radius:18px;overflow:hidden;",
      "box-shadow:0 18px 50px rgba(15,23,42,.28),0 2px 6px rgba(15,23,42,.08)}",
      "@media (max-width:440px){.panel{width:calc(100vw - 24px);right:-8px}}",
      "header{display:flex;align-items:center;gap:10px;padding:14px 12px 14px 18px;background:var(--accent);color:#fff}",
      ".head{flex:1;min-width:0}",
      ".title{margin:0;font-size:16px;font-weight:600;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}",
      ".status{margin:0;font-size:12px;opacity:.85}",
      ".dot{width:9px;height:9px;border-radius:50%;background:#cbd5e1;flex:none}",
      ":host(.online) .dot{background:#86efac}",
      ".close{border:0;background:transparent;color:#fff;width:34px;height:34px;border-radius:50%;display:grid;place-items:center}",
      ".close:hover{background:rgba(255,255,255,.15)}",
      ".close svg{fill:currentColor;width:20px;height:20px}",
      ".log{flex:1;overflow-y:auto;padding:16px 14px;display:flex;flex-direction:column;gap:8px;background:#f7f8fa}",
      ".msg{max-width:82%;padding:9px 13px;border-radius:16px;white-space:pre-wrap;overflow-wrap:anywhere}",
      ".msg.bot{align-self:flex-start;background:#fff;border:1px solid #e4e7eb;border-bottom-left-radius:5px}",
      ".msg.staff{border-color:var(--accent);border-left-width:3px}",
      ".msg .sources{margin-top:6px;font-size:11px;color:#6b7280}",
      ".msg.user{align-self:flex-end;background:var(--accent);color:#fff;border-bottom-right-radius:5px}",
      ".typing{align-self:flex-start;display:flex;gap:4px;padding:12px 14px;background:#fff;border:1px solid #e4e7eb;border-radius:16px;border-bottom-left-radius:5px}",
      ".typing span{width:7px;height:7px;border-radius:50%;background:#9aa5b1;animation:blink 1.2s infinite ease-in-out}",
      ".typing span:nth-child(2){animation-delay:.2s}.typing span:nth-child(3){animation-delay:.4s}",
      "@keyframes blink{0%,80%,100%{opacity:.3;transform:translateY(0)}40%{opacity:1;transform:translateY(-3px)}}",
      "@media (prefers-reduced-motion:reduce){.typing span{animation:none}.bubble{transition:none}}",
      ".quick{display:flex;flex-wrap:wrap;gap:6px;padding:8px 14px 4px;background:#f7f8fa}",
      ".quick button{border:1px solid var(--accent);background:#fff;color:var(--accent);border-radius:999px;padding:6px 12px;font-size:13px}",
      ".quick button:hover{background:var(--accent);color:#fff}",
      ".notice{margin:0;padding:6px 14px;font-size:13px;background:#fff7ed;color:#9a3412}",
      ".composer{display:flex;gap:8px;padding:10px 12px;border-top:1px solid #e4e7eb;background:#fff}",
      ".composer input{flex:1;min-width:0;border:1px solid #cbd2d9;border-radius:999px;padding:10px 14px;font:inherit;color:inherit;background:#fff}",
      ".composer input:focus{border-color:var(--accent);outline:none}",
      ".send{width:42px;height:42px;border:0;border-radius:50%;background:var(--accent);color:#fff;display:grid;place-items:center;flex:none}",
      ".send svg{fill:currentColor;width:20px;height:20px}",
    ].join("");
  }
})();
