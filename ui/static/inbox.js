// The inbox's script: the signed-in person's questions from
// inbox/questions, rendered as on the answer page, answered inline through
// inbox/questions/<id>/answer (the same exactly-once path), kept live over
// one WebSocket (inbox/ws) with polling when it is down, the open count in
// the title and the app badge, and per-device notifications (Web Push).
// Options with descriptions and the recommended mark, and forms of
// several questions, are built by form.js, the answer page's own builders,
// so both read and check them alike; the asker's images are fetched with
// the sign-in and shown from blob: URLs, as on the page; files are
// attached with attach.js, the page's own code, by sign-in.
// Agent-supplied text is only ever set with textContent, except the
// message, which the server has rendered from Markdown and sanitised.
(function () {
  'use strict';

  var S = JSON.parse(document.getElementById('fb-strings').textContent);
  var F = window.FBForm;
  var fill = F.fill;
  var labels = { recommended: S.recommended, required: S.required, yes: S.yes, no: S.no };
  var main = document.getElementById('main');
  var baseTitle = main.getAttribute('data-title') || document.title;
  var el = function (x) { return document.getElementById(x); };
  // Paths relative to this page (…/inbox), so a path prefix works.
  var base = location.pathname.replace(/\/+$/, '');
  var wsURL = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + base + '/ws';

  var cards = {}; // id → {li, view, nonce}
  var skew = 0;
  var pushKey = '';
  var ws = null;
  var wsBackoff = 1000;
  var pollTimer = null;
  var loading = false;
  var again = false;

  function announce(text) { el('announce').textContent = text; }
  function randomNonce() {
    var b = new Uint8Array(16);
    crypto.getRandomValues(b);
    return Array.prototype.map.call(b, function (x) { return ('0' + x.toString(16)).slice(-2); }).join('');
  }
  function format(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    if (h > 0) {
      return fill(S.hours, { h: h, m: m });
    }
    return m + ':' + ('0' + sec).slice(-2);
  }

  function load() {
    if (loading) {
      again = true;
      return;
    }
    loading = true;
    fetch(base + '/questions', { credentials: 'same-origin', cache: 'no-store' }).then(function (r) {
      if (r.status === 401) {
        location.reload(); // into the sign-in
        throw new Error('signed out');
      }
      if (!r.ok) {
        throw new Error('status ' + r.status);
      }
      return r.json();
    }).then(function (list) {
      skew = new Date(list.now).getTime() - Date.now();
      render(list.questions || []);
      if (list.pushKey && !pushKey) {
        pushKey = list.pushKey;
        setupPush();
      }
    }).catch(function () {
      el('conn').textContent = S.offline;
    }).then(function () {
      loading = false;
      if (again) {
        again = false;
        load();
      }
    });
  }

  function render(qs) {
    var open = el('open'), done = el('done');
    var seen = {};
    var openCount = 0, doneCount = 0;
    qs.forEach(function (v) {
      seen[v.sessionId] = true;
      var c = cards[v.sessionId];
      var pending = v.status === 'pending';
      if (c && c.view.status === v.status) {
        c.view = v;
      } else {
        var changed = !!c;
        if (c) {
          c.li.remove();
        }
        c = { view: v, nonce: randomNonce(), li: buildCard(v) };
        cards[v.sessionId] = c;
        if (changed && !pending) {
          announce(fill(S.closed, { s: S['status.' + v.status] || v.status }));
        }
      }
      // The server's order, newest first; a card already in its place is
      // left alone, since moving a node takes the focus out of it (and
      // drops the file input a person is picking with).
      var list = pending ? open : done;
      var at = list.children[pending ? openCount : doneCount];
      if (at !== c.li) {
        list.insertBefore(c.li, at || null);
      }
      if (pending) {
        openCount++;
      } else {
        doneCount++;
      }
    });
    Object.keys(cards).forEach(function (id) {
      if (!seen[id]) {
        cards[id].li.remove();
        delete cards[id];
      }
    });
    el('open-empty').hidden = openCount > 0;
    el('done-empty').hidden = done.children.length > 0;
    el('count').textContent = openCount ? String(openCount) : '';
    document.title = (openCount ? '(' + openCount + ') ' : '') + baseTitle;
    if (navigator.setAppBadge) {
      (openCount ? navigator.setAppBadge(openCount) : navigator.clearAppBadge()).catch(function () {});
    }
    tick(false);
  }

  function messageNode(html) {
    // The server rendered and sanitised this HTML; DOMParser never runs
    // scripts, and the page's CSP forbids inline script and handlers.
    var doc = new DOMParser().parseFromString(html, 'text/html');
    var frag = document.createDocumentFragment();
    while (doc.body.firstChild) {
      frag.appendChild(document.adoptNode(doc.body.firstChild));
    }
    var div = document.createElement('div');
    div.className = 'message';
    div.appendChild(frag);
    return div;
  }

  function buildCard(v) {
    var li = document.createElement('li');
    li.className = 'card' + (v.status === 'pending' ? '' : ' card-done');
    li.setAttribute('data-session', v.sessionId);
    var head = document.createElement('div');
    head.className = 'card-head';
    var h = document.createElement('h3');
    h.id = 'q-' + v.sessionId;
    h.textContent = v.agent ? fill(S.asks, { a: v.agent }) : v.for ? fill(S.agentOf, { p: v.for }) : S.agent;
    h.dir = 'auto';
    head.appendChild(h);
    if (v.for) {
      // Someone else's question, addressed to me too (to).
      var by = document.createElement('p');
      by.className = 'on-behalf';
      by.dir = 'auto';
      by.textContent = fill(S.onBehalf, { p: v.for });
      head.appendChild(by);
    }
    li.setAttribute('aria-labelledby', h.id);
    if (v.status === 'pending') {
      var cd = document.createElement('p');
      cd.className = 'countdown';
      cd.setAttribute('data-expires', v.expiresAt);
      head.appendChild(cd);
    }
    li.appendChild(head);
    li.appendChild(messageNode(v.messageHtml));
    if (v.images && v.images.length) {
      li.appendChild(imagesNode(v));
    }
    if (v.status === 'pending') {
      li.appendChild(buildForm(v));
    } else {
      var st = document.createElement('p');
      st.className = 'status status-' + v.status;
      var text = S['status.' + v.status] || v.status;
      if (v.result) {
        var parts = (v.result.selectedOptions || []).slice();
        if (v.result.answers) {
          // A form's answers, {id: value}, shown as id: value.
          Object.keys(v.result.answers).forEach(function (k) {
            parts.push(k + ': ' + JSON.stringify(v.result.answers[k]));
          });
        }
        if (v.result.freeText) {
          parts.push(v.result.freeText);
        }
        text += ': ' + parts.join(' · ');
      }
      st.textContent = text;
      li.appendChild(st);
    }
    return li;
  }

  // imagesNode shows the asker's images: fetched with the sign-in (POST,
  // so no other site's page can embed them) and shown from blob: URLs,
  // since the page's CSP allows no remote images.
  function imagesNode(v) {
    var box = document.createElement('div');
    box.className = 'images';
    v.images.forEach(function (ref, i) {
      box.appendChild(F.imageFigure(ref, 'image-' + v.sessionId + '-' + i, fill(S.imageAlt, { n: i + 1 }), function () {
        return fetch(base + '/questions/' + encodeURIComponent(v.sessionId) + '/image/' + i, {
          method: 'POST', credentials: 'same-origin', cache: 'no-store'
        });
      }));
    });
    return box;
  }

  function buildForm(v) {
    var form = document.createElement('form');
    form.className = 'answer';
    form.noValidate = true;
    var prefix = v.sessionId + '-';
    var opts = v.options || [];
    var details = v.optionDetails || [];
    var qs = v.questions || [];
    if (opts.length) {
      var fs = document.createElement('fieldset');
      fs.className = 'options';
      var lg = document.createElement('legend');
      lg.textContent = v.multiSelect ? S.chooseMany : S.chooseOne;
      fs.appendChild(lg);
      var list = document.createElement('div');
      list.className = 'option-list';
      opts.forEach(function (o, i) {
        var opt = F.optionEl(v.multiSelect ? 'checkbox' : 'radio', 'option-' + v.sessionId, 'option-' + v.sessionId, i, o, details[i], labels);
        if (v.preselect && details[i] && details[i].recommended) {
          // Only because the asker said so (preselectRecommended).
          opt.querySelector('input').checked = true;
        }
        list.appendChild(opt);
      });
      fs.appendChild(list);
      form.appendChild(fs);
    }
    if (qs.length) {
      var qbox = document.createElement('div');
      qbox.className = 'questions';
      F.buildQuestions(qbox, qs, labels, prefix);
      form.appendChild(qbox);
    }
    var ta = null;
    if (v.allowFreeText) {
      var wrap = document.createElement('div');
      wrap.className = 'freetext';
      var fl = document.createElement('label');
      ta = document.createElement('textarea');
      ta.id = 'text-' + v.sessionId;
      ta.rows = 3;
      ta.maxLength = v.maxFreeText || 10000;
      fl.htmlFor = ta.id;
      fl.textContent = opts.length || qs.length ? S.writeOwn : S.yourAnswer;
      wrap.appendChild(fl);
      wrap.appendChild(ta);
      form.appendChild(wrap);
    }
    var sending = false;
    var attach = null;
    if (v.attach && v.attach.maxFiles) {
      // The page's attachments (attach.js), sent with the sign-in cookie
      // to this question's inbox endpoint instead of with a token.
      var els = window.FBAttach.build('attach-' + v.sessionId, { label: S['attach.label'], pick: S['attach.pick'], camera: S['attach.camera'] });
      form.appendChild(els.wrap);
      var as = { network: S['attach.network'] };
      Object.keys(S).forEach(function (k) {
        if (k.indexOf('attach.') === 0) {
          as[k] = S[k];
        }
      });
      attach = window.FBAttach.widget(els, {
        rules: v.attach, url: base + '/questions/' + encodeURIComponent(v.sessionId) + '/attachments', token: '', S: as,
        canAdd: function () { return !sending; },
        canRemove: function () { return !sending; },
        gone: load, dropTarget: form, paste: false
      });
    }
    var err = document.createElement('p');
    err.className = 'form-error';
    err.setAttribute('role', 'alert');
    err.hidden = true;
    form.appendChild(err);
    var btn = document.createElement('button');
    btn.type = 'submit';
    btn.className = 'primary';
    btn.textContent = S.send;
    form.appendChild(btn);
    function fail(text) {
      err.textContent = text;
      err.hidden = false;
    }
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      if (sending) {
        return;
      }
      var text = ta ? ta.value : '';
      var c = cards[v.sessionId];
      var answer;
      if (attach && attach.busy()) {
        fail(S['attach.wait']);
        return;
      }
      var ids = attach ? attach.uploaded().map(function (f) { return f.id; }) : [];
      if (qs.length) {
        // The page's checks, with the page's messages.
        var fa = F.formAnswers(form, qs, prefix);
        if (fa.bad) {
          fail(fill(S.errNumber, { q: F.questionTitle(form, fa.bad, prefix) }));
          F.focusQuestion(form, fa.bad, prefix);
          return;
        }
        if (fa.missing) {
          fail(fill(S.errRequired, { q: F.questionTitle(form, fa.missing, prefix) }));
          F.focusQuestion(form, fa.missing, prefix);
          return;
        }
        if (!Object.keys(fa.answers).length && !text.trim()) {
          fail(S.errForm);
          return;
        }
        answer = { answers: fa.answers };
      } else {
        var chosen = Array.prototype.filter.call(form.querySelectorAll('input[name="option-' + v.sessionId + '"]'), function (i) { return i.checked; })
          .map(function (i) { return i.value; });
        if (!chosen.length && !text.trim() && !(v.allowFreeText && ids.length)) {
          fail(v.allowFreeText ? S.chooseOrWrite : S.chooseOnly);
          return;
        }
        answer = { selectedOptions: chosen };
      }
      if (v.allowFreeText) {
        answer.freeText = text;
      }
      if (ids.length) {
        answer.attachments = ids;
      }
      answer.nonce = c ? c.nonce : randomNonce();
      err.hidden = true;
      sending = true;
      btn.disabled = true;
      btn.textContent = S.sending;
      fetch(base + '/questions/' + encodeURIComponent(v.sessionId) + '/answer', {
        method: 'POST', credentials: 'same-origin', cache: 'no-store',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(answer)
      }).then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (b) {
          if (!r.ok) {
            throw new Error(b && b.error && b.error.message ? b.error.message : 'status ' + r.status);
          }
          announce(S.sent);
        });
      }).catch(function (e) {
        fail(fill(S.failed, { m: e.message }));
      }).then(function () {
        sending = false;
        btn.disabled = false;
        btn.textContent = S.send;
        load();
      });
    });
    form.addEventListener('keydown', function (ev) {
      if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
        ev.preventDefault();
        form.requestSubmit();
      }
    });
    return form;
  }

  // tick shows the time left; from the timer (reload true) a question whose
  // time is up has the list read again. Not from render: while the server
  // still says pending (clocks a little apart) that would read the list
  // back to back.
  function tick(reload) {
    var now = Date.now() + skew;
    var due = false;
    Array.prototype.forEach.call(document.querySelectorAll('[data-expires]'), function (p) {
      var left = new Date(p.getAttribute('data-expires')).getTime() - now;
      p.textContent = left > 0 ? fill(S.left, { t: format(left) }) : S.timeUp;
      p.classList.toggle('urgent', left < 60000);
      due = due || left <= 0;
    });
    if (due && reload) {
      load();
    }
  }

  function connect() {
    var sock;
    try {
      sock = new WebSocket(wsURL);
    } catch (e) {
      startPolling();
      return;
    }
    ws = sock;
    sock.onopen = function () {
      wsBackoff = 1000;
      stopPolling();
      el('conn').textContent = S.live;
    };
    sock.onmessage = function (ev) {
      var m;
      try {
        m = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      if (m.type === 'changed' || m.type === 'ready') {
        load();
      }
    };
    sock.onclose = function () {
      ws = null;
      el('conn').textContent = S.polling;
      startPolling();
      setTimeout(connect, wsBackoff);
      wsBackoff = Math.min(wsBackoff * 2, 30000);
    };
  }
  function startPolling() {
    if (!pollTimer) {
      pollTimer = setInterval(load, 5000);
    }
  }
  function stopPolling() {
    if (pollTimer) {
      clearInterval(pollTimer);
      pollTimer = null;
    }
  }

  // Notifications on this device.
  function keyBytes(b64) {
    // atob takes unpadded base64; the key is base64url (RFC 8292).
    var raw = atob(b64.replace(/-/g, '+').replace(/_/g, '/'));
    var out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) {
      out[i] = raw.charCodeAt(i);
    }
    return out;
  }
  function registration() {
    return navigator.serviceWorker.register(base + '/sw.js', { scope: base });
  }
  function showPush(on) {
    el('push-on').hidden = on;
    el('push-off').hidden = !on;
    el('push-state').textContent = on ? S.pushOn : '';
  }
  function setupPush() {
    if (!('serviceWorker' in navigator) || !('PushManager' in window) || !window.Notification) {
      return;
    }
    el('push-row').hidden = false;
    registration().then(function (reg) {
      return reg.pushManager.getSubscription();
    }).then(function (sub) {
      showPush(!!sub);
      if (sub) {
        send('POST', sub.toJSON()); // renews it on the server
      }
    }).catch(function () {});
    el('push-on').addEventListener('click', function () {
      Notification.requestPermission().then(function (perm) {
        if (perm !== 'granted') {
          throw new Error(S.pushDenied);
        }
        return registration();
      }).then(function (reg) {
        return reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: keyBytes(pushKey) });
      }).then(function (sub) {
        return send('POST', sub.toJSON());
      }).then(function () {
        showPush(true);
      }).catch(function (e) {
        el('push-state').textContent = fill(S.pushFailed, { m: e.message });
      });
    });
    el('push-off').addEventListener('click', function () {
      registration().then(function (reg) {
        return reg.pushManager.getSubscription();
      }).then(function (sub) {
        if (!sub) {
          return null;
        }
        var endpoint = sub.endpoint;
        return sub.unsubscribe().then(function () { return send('DELETE', { endpoint: endpoint }); });
      }).then(function () {
        showPush(false);
      }).catch(function (e) {
        el('push-state').textContent = fill(S.pushFailed, { m: e.message });
      });
    });
  }
  function send(method, body) {
    return fetch(base + '/push', {
      method: method, credentials: 'same-origin', cache: 'no-store',
      headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body)
    }).then(function (r) {
      if (!r.ok) {
        return r.json().catch(function () { return {}; }).then(function (b) {
          throw new Error(b && b.error ? b.error.message : 'status ' + r.status);
        });
      }
    });
  }

  load();
  connect();
  setInterval(function () { tick(true); }, 1000);
  // A fallback: the socket hears of changes on every instance, but an
  // announcement can be lost while the server reconnects to its store.
  setInterval(load, 20000);
})();
