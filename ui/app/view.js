// The MCP Apps view of a question: rendered by the host (Claude, VS Code,
// ChatGPT, …) in a sandboxed iframe inside the conversation. It speaks the
// MCP Apps postMessage protocol (JSON-RPC 2.0, spec 2026-01-26) directly:
// the handful of messages it needs are smaller than the ext-apps App
// bundle (≈435 KB minified) by two orders of magnitude, and the e2e test
// drives it from the official AppBridge, so it stays interoperable.
//
// What it trusts: the host (its parent window) only. The question's
// Markdown arrives already rendered and sanitised by the server (the same
// renderer as the answer page), and the page's Content-Security-Policy
// (meta tag, script and style by hash) refuses inline handlers and remote
// loads, so an injection in that HTML still runs nothing. Options and
// answers are set as text. The capability token lives in this script's
// memory only and goes to the server in the app-only tools' arguments.
(function () {
  "use strict";
  var META_KEY = "mcpfeedback/question";
  var TOOL_VIEW = "feedback_app_view";
  var TOOL_ANSWER = "feedback_app_answer";
  var REQUEST_TIMEOUT = 30000;

  var all = JSON.parse(document.getElementById("fb-strings").textContent);
  var S = all.en;
  var $ = function (id) { return document.getElementById(id); };
  var main = $("main");

  // --- JSON-RPC over postMessage to the host --------------------------------
  var nextId = 1;
  var waiting = {};
  function post(msg) { window.parent.postMessage(msg, "*"); }
  function request(method, params) {
    var id = nextId++;
    return new Promise(function (resolve, reject) {
      var timer = setTimeout(function () {
        delete waiting[id];
        reject(new Error(method + ": no answer from the host"));
      }, REQUEST_TIMEOUT);
      waiting[id] = function (m) {
        clearTimeout(timer);
        delete waiting[id];
        if (m.error) reject(new Error(m.error.message || "error " + m.error.code));
        else resolve(m.result);
      };
      post({ jsonrpc: "2.0", id: id, method: method, params: params || {} });
    });
  }
  function notify(method, params) { post({ jsonrpc: "2.0", method: method, params: params || {} }); }

  window.addEventListener("message", function (ev) {
    if (ev.source !== window.parent) return; // only the host speaks to us
    var m = ev.data;
    if (!m || m.jsonrpc !== "2.0") return;
    if (m.method === undefined) {
      if (m.id !== undefined && waiting[m.id]) waiting[m.id](m);
      return;
    }
    if (m.id !== undefined) { // a request from the host
      if (m.method === "ui/resource-teardown" || m.method === "ping") {
        stopPolling();
        post({ jsonrpc: "2.0", id: m.id, result: {} });
      } else {
        post({ jsonrpc: "2.0", id: m.id, error: { code: -32601, message: "method not found: " + m.method } });
      }
      return;
    }
    var p = m.params || {};
    switch (m.method) {
      case "ui/notifications/tool-result": onToolResult(p); break;
      case "ui/notifications/tool-cancelled": if (!q) showUnavailable(p.reason || ""); break;
      case "ui/notifications/host-context-changed": applyContext(p); break;
    }
  });

  // --- host context: language, theme, style variables -----------------------
  function applyContext(ctx) {
    if (!ctx) return;
    if (typeof ctx.locale === "string") {
      var lang = /^zh\b/i.test(ctx.locale) ? "zh" : "en";
      S = all[lang];
      document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
      translate();
    }
    if (ctx.theme === "dark" || ctx.theme === "light") document.documentElement.setAttribute("data-theme", ctx.theme);
    var vars = ctx.styles && ctx.styles.variables;
    if (vars && typeof vars === "object") {
      Object.keys(vars).forEach(function (k) {
        // Only custom properties, set through the CSSOM: a value cannot
        // escape its declaration, and CSP keeps url() from loading anything.
        if (/^--[a-z0-9-]+$/i.test(k) && typeof vars[k] === "string") document.documentElement.style.setProperty(k, vars[k]);
      });
    }
  }
  function translate() {
    Array.prototype.forEach.call(document.querySelectorAll("[data-t]"), function (el) {
      el.textContent = S[el.getAttribute("data-t")] || "";
    });
    if (q && q.view) render();
  }
  function fill(s, vals) { return s.replace(/\{(\w+)\}/g, function (_, k) { return vals[k]; }); }

  // --- the question ----------------------------------------------------------
  var q = null;        // {sessionId, token?, view}
  var skew = 0;        // server clock minus ours, ms
  var pollTimer = 0, tickTimer = 0, stopped = false;
  var nonce = (crypto.randomUUID && crypto.randomUUID()) || String(Math.random()).slice(2);
  var sending = false;
  var hostCaps = {};

  function onToolResult(res) {
    res = res || {};
    var meta = res._meta && res._meta[META_KEY];
    if (res.isError || !meta || !meta.view || typeof meta.sessionId !== "string") {
      var text = "";
      (res.content || []).forEach(function (c) { if (c && c.type === "text") text += c.text; });
      showUnavailable(text);
      return;
    }
    q = { sessionId: meta.sessionId, token: typeof meta.token === "string" ? meta.token : "", pollMs: 1000 * (meta.pollSeconds || 5) };
    update(meta.view, true);
  }

  function update(view, first) {
    if (!view || typeof view.status !== "string") { schedulePoll(); return; } // a reply without the view: keep what we show
    var built = q.view;
    q.view = view;
    if (view.now) skew = Date.parse(view.now) - Date.now();
    if (first || !built) buildForm();
    render();
    schedulePoll();
  }

  var announced = "";
  function setState(state) {
    if (main.getAttribute("data-state") !== state) {
      // One short announcement per change of state, not per re-render.
      var say = { submitted: "submitted.heading", expired: "expired.heading", cancelled: "cancelled.heading", unavailable: "app.unavailable" }[state];
      if (say && say !== announced) { announced = say; $("announce").textContent = S[say]; }
    }
    main.setAttribute("data-state", state);
    Array.prototype.forEach.call(document.querySelectorAll("[data-panel]"), function (el) {
      el.hidden = el.getAttribute("data-panel").split(" ").indexOf(state) < 0;
    });
  }

  function showUnavailable(text) {
    stopPolling();
    $("unavailable-text").textContent = text;
    $("question").hidden = true;
    setState("unavailable");
  }

  function buildForm() {
    var v = q.view;
    // Server-rendered, sanitised Markdown (ui.RenderMarkdown): see above.
    $("message").innerHTML = v.messageHtml;
    var list = $("options");
    list.textContent = "";
    (v.options || []).forEach(function (opt, i) {
      var label = document.createElement("label");
      label.className = "option";
      var input = document.createElement("input");
      input.type = v.multiSelect ? "checkbox" : "radio";
      input.name = "opt";
      input.value = opt;
      input.id = "opt-" + i;
      var span = document.createElement("span");
      span.textContent = opt;
      var d = (v.optionDetails || [])[i];
      if (d && d.recommended) span.textContent += " (" + S.recommended + ")";
      if (v.preselect && d && d.recommended) input.checked = true;
      label.appendChild(input);
      label.appendChild(span);
      if (d && d.description) {
        var desc = document.createElement("small");
        desc.className = "option-desc";
        desc.textContent = d.description;
        span.appendChild(document.createElement("br"));
        span.appendChild(desc);
      }
      list.appendChild(label);
    });
    // The agent's metadata, as display text the server prepared.
    var dl = $("metadata");
    dl.textContent = "";
    (v.metadata || []).forEach(function (m) {
      var dt = document.createElement("dt");
      dt.textContent = m.key;
      var dd = document.createElement("dd");
      dd.textContent = m.value;
      dl.appendChild(dt);
      dl.appendChild(dd);
    });
    $("metadata-box").hidden = !(v.metadata && v.metadata.length);
    $("options-set").hidden = !(v.options && v.options.length);
    $("freetext-wrap").hidden = !v.allowFreeText;
    $("freetext").maxLength = v.maxFreeText || 10000;
  }

  function render() {
    var v = q.view;
    $("question").hidden = false;
    $("options-legend").textContent = v.multiSelect ? S["options.many"] : S["options.one"];
    $("freetext-label").textContent = v.options && v.options.length ? S["freetext.optional"] : S["freetext.label"];
    var state = v.status;
    // A form of several questions or a question with images is answered on
    // the answer page: this view shows neither (it would send an answer
    // the form refuses, or one given without seeing the images).
    var onPage = (v.questions && v.questions.length) || (v.images && v.images.length);
    if (state === "pending" && (!q.token || onPage)) state = "readonly";
    var note = document.querySelector('[data-panel="readonly"].note');
    if (note) note.textContent = S[onPage ? "app.form" : "app.readonly"] || "";
    setState(state);
    if (v.status === "submitted" && v.result) {
      $("given-options").textContent = (v.result.selectedOptions || []).join("; ") || S.none;
      $("given-text").textContent = v.result.freeText || S.none;
    }
    if (v.status === "pending") startTicking(); else stopTicking();
  }

  // --- countdown -------------------------------------------------------------
  function startTicking() { if (!tickTimer) { tick(); tickTimer = setInterval(tick, 1000); } }
  function stopTicking() { clearInterval(tickTimer); tickTimer = 0; $("countdown").hidden = true; }
  function tick() {
    var left = Math.max(0, Math.round((Date.parse(q.view.expiresAt) - (Date.now() + skew)) / 1000));
    var el = $("countdown");
    el.hidden = false;
    el.classList.toggle("urgent", left <= 60);
    if (left === 0) { el.textContent = S.expiring; poll(); return; }
    var h = Math.floor(left / 3600), m = Math.floor(left % 3600 / 60), s = left % 60;
    var t = h ? fill(S.hours, { h: h, m: m }) : m + ":" + (s < 10 ? "0" : "") + s;
    el.textContent = fill(S.countdown, { t: t });
    el.setAttribute("aria-label", fill(S["countdown.label"], { t: t }));
  }

  // --- live state: poll the app-only read tool while the question is open ---
  function schedulePoll() {
    clearTimeout(pollTimer);
    pollTimer = 0;
    if (!stopped && q.token && q.view && q.view.status === "pending") pollTimer = setTimeout(poll, q.pollMs);
  }
  // stopPolling is for good: the host tears the view down, or it has
  // nothing left to show.
  function stopPolling() { stopped = true; clearTimeout(pollTimer); stopTicking(); }
  var inFlight = false;
  function poll() {
    // One read at a time: the countdown asks for one every second once it
    // reaches zero, until the server reports the expiry.
    if (!q || !q.token || stopped || inFlight) return;
    inFlight = true;
    callTool(TOOL_VIEW, { sessionId: q.sessionId, token: q.token }).then(function (res) {
      inFlight = false;
      if (res.isError) { showUnavailable(textOf(res)); return; }
      update(res.structuredContent, false);
    }, function () { inFlight = false; schedulePoll(); }); // the host or the server is away: keep trying
  }

  function callTool(name, args) { return request("tools/call", { name: name, arguments: args }); }
  function textOf(res) {
    var t = "";
    (res.content || []).forEach(function (c) { if (c && c.type === "text") t += c.text; });
    return t;
  }

  // --- answering -------------------------------------------------------------
  // The send button is a plain button, not a form submission: hosts
  // sandbox the view without allow-forms, and there a submission (and its
  // submit event) never happens.
  $("submit").addEventListener("click", send);
  $("answer").addEventListener("submit", function (e) { e.preventDefault(); send(); });
  function send() {
    if (sending || !q || !q.token) return;
    var v = q.view;
    var picked = [];
    Array.prototype.forEach.call(document.querySelectorAll("#options input:checked"), function (i) { picked.push(i.value); });
    var text = v.allowFreeText ? $("freetext").value.trim() : "";
    var err = $("form-error");
    if (!picked.length && !text) {
      err.textContent = v.allowFreeText ? S["err.choose"] : S["err.chooseOnly"];
      err.hidden = false;
      return;
    }
    err.hidden = true;
    sending = true;
    var btn = $("submit");
    btn.disabled = true;
    btn.textContent = S.sending;
    callTool(TOOL_ANSWER, { sessionId: q.sessionId, token: q.token, answer: { selectedOptions: picked, freeText: text, nonce: nonce } })
      .then(function (res) {
        if (res.isError) {
          err.textContent = fill(S["err.server"], { m: textOf(res) });
          err.hidden = false;
          poll(); // it may have closed meanwhile: show that
          return;
        }
        update(res.structuredContent, false);
        tellModel();
      }, function () {
        err.textContent = S["err.network"];
        err.hidden = false;
      })
      .then(function () {
        sending = false;
        btn.disabled = false;
        btn.textContent = S.submit;
      });
  }
  // tellModel leaves a note in the host's model context (for hosts that
  // take one), so that an agent whose turn had ended learns at its next
  // turn that the answer is in. The answer itself reaches it the one usual
  // way, get_feedback_result.
  function tellModel() {
    var m = hostCaps.updateModelContext;
    if (!m || !m.text) return;
    request("ui/update-model-context", { content: [{ type: "text", text:
      "The user answered the question " + q.sessionId + " in its view. Call get_feedback_result with {\"sessionId\":\"" + q.sessionId + "\"} to read the answer." }] })
      .catch(function () {});
  }
  $("freetext").addEventListener("keydown", function (e) {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); send(); }
  });

  // Links in the question open through the host (the sandbox has no
  // popups); the host decides whether and how.
  $("message").addEventListener("click", function (e) {
    var a = e.target.closest && e.target.closest("a[href]");
    if (!a) return;
    e.preventDefault();
    request("ui/open-link", { url: a.href }).catch(function () {});
  });

  // --- size and start ---------------------------------------------------------
  if (window.ResizeObserver) {
    var last = "";
    new ResizeObserver(function () {
      var r = document.documentElement.getBoundingClientRect();
      var size = Math.ceil(r.width) + "x" + Math.ceil(r.height);
      if (size !== last) { last = size; notify("ui/notifications/size-changed", { width: Math.ceil(r.width), height: Math.ceil(r.height) }); }
    }).observe(document.documentElement);
  }
  translate();
  request("ui/initialize", {
    appInfo: { name: "caddy-mcp-feedback question", version: "1" },
    appCapabilities: { availableDisplayModes: ["inline"] },
    protocolVersion: "2026-01-26"
  }).then(function (res) {
    hostCaps = (res && res.hostCapabilities) || {};
    applyContext(res && res.hostContext);
    notify("ui/notifications/initialized", {});
  }, function (e) { showUnavailable(e.message); });
})();
