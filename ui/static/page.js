// The answer page's script. It reads the capability token from the link's
// fragment (#t=…; browsers never send fragments, so it stays out of server
// logs and Referer), takes it out of the address bar and the history list,
// fetches the question as JSON with the token in the request body (bodies,
// unlike URLs and headers, are not in access logs), submits the same way,
// and follows the session live over the WebSocket, where the token is the
// first message (falling back to polling).
// Agent-supplied text is only ever set with textContent, except the message,
// which the server has rendered from Markdown and sanitised.
(function () {
  'use strict';

  var fill = window.FBForm.fill;

  var main = document.getElementById('main');
  var S = JSON.parse(document.getElementById('fb-strings').textContent);
  var id = main.getAttribute('data-session');
  var lang = main.getAttribute('data-lang') || 'en';
  var state = main.getAttribute('data-state');

  var token = readLink();
  if (token === null) {
    return; // reloading with theme/lang in the query
  }
  if (state === 'notfound' || !id) {
    return;
  }

  // Paths are built from this page's own path, so the page also works when
  // the module is mounted under a prefix (Caddy handle_path).
  var path = location.pathname;
  var prefix = path.slice(0, path.lastIndexOf('/feedback/'));
  var viewURL = prefix + '/feedback/' + id + '/view';
  var submitURL = prefix + '/feedback/' + id + '/submit';
  var uploadURL = prefix + '/feedback/' + id + '/attachments';
  var wsURL = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + prefix + '/ws/' + id + '?clientType=web';

  // One nonce per page load: a repeated or retried submit of this page's
  // answer gets the same success from the server instead of a conflict.
  var nonce = randomNonce();

  var el = function (x) { return document.getElementById(x); };
  var form = el('answer');
  var submitBtn = el('submit');
  var submitLabel = submitBtn.textContent;
  var freetext = el('freetext');
  var formError = el('form-error');
  var countdown = el('countdown');
  var conn = el('conn');
  var invisible = null; // the warning about invisible characters, built at the end

  var view = null;
  var skew = 0; // server clock minus this device's clock, in ms
  var built = false;
  var submitting = false;
  var ws = null;
  var wsBackoff = 1000;
  var pollTimer = null;
  var tickTimer = null;
  var lastExpiryCheck = 0;
  var loading = null;
  var again = false;
  var submittedHere = false;
  var connects = 0;

  // readLink returns the capability token of this page's link, or null when
  // the page is being reloaded. The link is …/feedback/<id>[?theme=…&lang=…]
  // #t=<token>, but theme and lang are also accepted inside the fragment,
  // after the token (#t=TOKEN&theme=dark, or #t=TOKEN?theme=dark&lang=zh as
  // when "?theme=…" is appended to a whole link): the server renders the
  // page in a theme and language, so those move to the query, with one
  // reload. The token then leaves the address bar and the history list; it
  // stays in this history entry's state (not its URL), so a reload, or a
  // phone restoring a discarded tab, still works.
  function readLink() {
    var frag = { t: '', theme: '', lang: '' };
    var valid = { theme: ['dark', 'light'], lang: ['en', 'zh'] };
    var parts = location.hash.replace(/^#/, '').split(/[?&]/);
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf('=');
      if (eq < 1) {
        continue;
      }
      var key = parts[i].slice(0, eq);
      var value;
      try {
        value = decodeURIComponent(parts[i].slice(eq + 1));
      } catch (e) {
        continue;
      }
      if (key === 't' && !frag.t && /^[A-Za-z0-9_-]{1,256}$/.test(value)) {
        frag.t = value;
      } else if (valid[key] && !frag[key] && valid[key].indexOf(value) >= 0) {
        frag[key] = value;
      }
    }
    var st = history.state;
    var tok = frag.t || (st && st.fbSession === id && typeof st.fbToken === 'string' ? st.fbToken : '');

    var params = new URLSearchParams(location.search);
    var move = false;
    ['theme', 'lang'].forEach(function (k) {
      // A valid value in the query wins; the fragment fills in the rest.
      if (frag[k] && valid[k].indexOf(params.get(k)) < 0) {
        params.set(k, frag[k]);
        move = true;
      }
    });
    if (move) {
      location.replace(location.pathname + '?' + params.toString() + (frag.t ? '#t=' + frag.t : ''));
      return null;
    }
    if (location.hash) {
      try {
        history.replaceState(tok ? { fbSession: id, fbToken: tok } : null, '', location.pathname + location.search);
      } catch (e) {
        // Some embedded browsers refuse replaceState; the page still works.
      }
    }
    return tok;
  }

  function randomNonce() {
    var b = new Uint8Array(16);
    crypto.getRandomValues(b);
    return Array.prototype.map.call(b, function (x) { return ('0' + x.toString(16)).slice(-2); }).join('');
  }

  function announce(text) {
    el('announce').textContent = text;
  }

  function setConn(text) {
    conn.textContent = text;
  }

  var onLayout = { pending: true, submitted: true, expired: true, cancelled: true };

  function setState(s) {
    var changed = s !== state;
    state = s;
    main.setAttribute('data-state', s);
    var panels = document.querySelectorAll('[data-panel]');
    for (var i = 0; i < panels.length; i++) {
      var names = panels[i].getAttribute('data-panel').split(' ');
      panels[i].hidden = names.indexOf(s) < 0;
    }
    el('layout').hidden = !onLayout[s];
    countdown.hidden = s !== 'pending';
    if (s !== 'pending') {
      stopTick();
    }
    if (changed && s !== 'pending' && s !== 'loading') {
      var h = document.querySelector('.banner[data-panel="' + s + '"] h1');
      if (h) {
        announce(h.textContent);
        h.setAttribute('tabindex', '-1');
        h.focus({ preventScroll: false });
      }
    }
  }

  function load() {
    if (!token) {
      setState('notfound');
      return Promise.resolve();
    }
    if (loading) {
      // A change may have landed after the request in flight was answered.
      again = true;
      return loading;
    }
    loading = fetch(viewURL, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'Accept': 'application/json' },
      body: JSON.stringify({ token: token }),
      cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer'
    }).then(function (r) {
      if (r.status === 404) {
        stopLive();
        setState('notfound');
        return null;
      }
      if (!r.ok) {
        throw new Error('HTTP ' + r.status);
      }
      return r.json();
    }).then(function (v) {
      if (v) {
        apply(v);
      }
    }).catch(function () {
      if (!view) {
        setState('error');
      }
      setConn(S.reconnecting);
      startPolling();
    }).then(function () {
      loading = null;
      if (again) {
        again = false;
        return load();
      }
    });
    return loading;
  }

  function apply(v) {
    var first = !view;
    view = v;
    skew = Date.parse(v.now) - Date.now();
    if (first) {
      renderQuestion(v);
    }
    if (v.status === 'pending') {
      if (!built) {
        buildForm(v);
      }
      setState('pending');
      startTick();
      connect();
      return;
    }
    if (v.status === 'submitted' && v.result) {
      renderGiven(v.result);
    }
    if (v.status === 'expired' && v.result && v.result.byTimeout) {
      el('timeout-choice-option').textContent = (v.result.selectedOptions || []).join(', ');
      el('timeout-choice').hidden = false;
    }
    if (!submittedHere) {
      // Closed without this page's answer (expired, withdrawn, or
      // answered elsewhere): what was typed here stays in view.
      showDraft(v);
    }
    stopLive();
    setState(v.status === 'submitted' || v.status === 'expired' || v.status === 'cancelled' ? v.status : 'notfound');
  }

  function renderQuestion(v) {
    // The server rendered and sanitised this HTML; DOMParser never runs
    // scripts, and the page's CSP forbids inline script and handlers.
    var doc = new DOMParser().parseFromString(v.messageHtml, 'text/html');
    var frag = document.createDocumentFragment();
    while (doc.body.firstChild) {
      frag.appendChild(document.adoptNode(doc.body.firstChild));
    }
    el('message').replaceChildren(frag);
    showImages(v.images || []);
    var md = v.metadata || [];
    if (md.length) {
      var dl = el('metadata');
      for (var i = 0; i < md.length; i++) {
        var dt = document.createElement('dt');
        dt.textContent = md[i].key;
        var dd = document.createElement('dd');
        dd.textContent = md[i].value;
        dl.appendChild(dt);
        dl.appendChild(dd);
      }
      el('metadata-box').hidden = false;
    }
  }

  // showImages fetches the asker's images with the token in the body (as
  // the view) and shows them from blob: URLs: the page's CSP allows only
  // data: and blob: images, never remote ones.
  function showImages(refs) {
    var box = el('images');
    refs.forEach(function (ref, i) {
      box.appendChild(F.imageFigure(ref, 'image-' + i, fill(S['image.alt'], { n: i + 1 }), function () {
        return fetch(prefix + '/feedback/' + id + '/image/' + i, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ token: token }),
          cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer'
        });
      }));
    });
    box.hidden = !refs.length;
  }

  // The builders shared with the inbox (form.js, loaded first).
  var F = window.FBForm;
  var labels = {
    recommended: form.getAttribute('data-recommended'),
    required: form.getAttribute('data-required'),
    yes: form.getAttribute('data-yes'),
    no: form.getAttribute('data-no')
  };

  function buildForm(v) {
    built = true;
    var opts = v.options || [];
    var details = v.optionDetails || [];
    if (opts.length) {
      var legend = el('options-legend');
      legend.textContent = legend.getAttribute(v.multiSelect ? 'data-label-multi' : 'data-label-single');
      var list = el('options');
      for (var i = 0; i < opts.length; i++) {
        var o = F.optionEl(v.multiSelect ? 'checkbox' : 'radio', 'option', 'option', i, opts[i], details[i], labels);
        if (v.preselect && details[i] && details[i].recommended) {
          // Only because the asker said so (preselectRecommended).
          o.querySelector('input').checked = true;
        }
        list.appendChild(o);
      }
      el('options-set').hidden = false;
    }
    if (v.questions && v.questions.length) {
      F.buildQuestions(el('questions'), v.questions, labels, '');
    }
    if (v.allowFreeText) {
      var fl = el('freetext-label');
      fl.textContent = fl.getAttribute(opts.length || (v.questions && v.questions.length) ? 'data-label-extra' : 'data-label-alone');
      el('freetext-wrap').hidden = false;
    }
    setupAttach(v);
    restoreDraft();
  }

  function formAnswers() {
    return F.formAnswers(form, view.questions || [], '');
  }

  function questionTitle(q) {
    return F.questionTitle(form, q, '');
  }

  function focusQuestion(q) {
    F.focusQuestion(form, q, '');
  }

  // Drafts: what the person has entered but not sent stays in this
  // browser's storage per question, so a reload (or a phone discarding the
  // tab) loses nothing, and a question that closes still shows it. Sent
  // answers are removed. Drafts older than a week are dropped.
  var draftKey = 'fb-draft:' + id;
  var draftMaxAge = 7 * 24 * 3600 * 1000;

  function storage() {
    try {
      return window.localStorage;
    } catch (e) {
      return null; // storage disabled: the page works without drafts
    }
  }

  function readDraft() {
    var st = storage();
    if (!st) {
      return null;
    }
    try {
      var d = JSON.parse(st.getItem(draftKey) || 'null');
      return d && typeof d === 'object' && Date.now() - d.at < draftMaxAge ? d : null;
    } catch (e) {
      return null;
    }
  }

  function saveDraft() {
    var st = storage();
    if (!st || !view || state !== 'pending') {
      return;
    }
    var d = { at: Date.now(), sel: selected(), text: freetext.value, answers: {}, files: uploadedFiles() };
    if (view.questions) {
      d.answers = formAnswers().answers;
      var nums = form.querySelectorAll('.question-field input[type="number"]');
      for (var i = 0; i < nums.length; i++) {
        if (nums[i].value !== '') {
          d.answers[nums[i].name.slice(2)] = nums[i].value;
        }
      }
    }
    try {
      st.setItem(draftKey, JSON.stringify(d));
    } catch (e) {
      // quota or private mode: nothing to do
    }
  }

  function dropDraft() {
    var st = storage();
    if (st) {
      try {
        st.removeItem(draftKey);
      } catch (e) {
        // ignore
      }
    }
  }

  function dropOldDrafts() {
    var st = storage();
    if (!st) {
      return;
    }
    try {
      for (var i = st.length - 1; i >= 0; i--) {
        var k = st.key(i);
        if (k && k.indexOf('fb-draft:') === 0) {
          var d = JSON.parse(st.getItem(k) || 'null');
          if (!d || !(Date.now() - d.at < draftMaxAge)) {
            st.removeItem(k);
          }
        }
      }
    } catch (e) {
      // ignore
    }
  }

  function restoreDraft() {
    var d = readDraft();
    if (!d) {
      return;
    }
    var sel = Array.isArray(d.sel) ? d.sel : [];
    var inputs = el('options').querySelectorAll('input');
    for (var i = 0; i < inputs.length; i++) {
      inputs[i].checked = sel.indexOf(inputs[i].value) >= 0;
    }
    if (typeof d.text === 'string') {
      freetext.value = d.text;
    }
    // Uploaded files live on the server until the question ends: the
    // draft keeps their ids, and they come back without a preview.
    if (Array.isArray(d.files) && attach) {
      for (var f = 0; f < d.files.length; f++) {
        var fd = d.files[f];
        if (fd && typeof fd.id === 'string' && typeof fd.name === 'string') {
          attach.addUploaded({ name: fd.name, type: String(fd.type || ''), size: Number(fd.size) || 0 }, fd.id);
        }
      }
    }
    var qs = view.questions || [];
    var ans = d.answers || {};
    for (var j = 0; j < qs.length; j++) {
      var q = qs[j];
      if (!Object.prototype.hasOwnProperty.call(ans, q.id)) {
        continue;
      }
      var v = ans[q.id];
      var base = 'q-' + q.id;
      if (q.kind === 'text' || q.kind === 'number') {
        el(base).value = String(v);
        continue;
      }
      var opts = form.querySelectorAll('input[name="' + base + '"]');
      for (var k = 0; k < opts.length; k++) {
        opts[k].checked = q.kind === 'multi' ? Array.isArray(v) && v.indexOf(opts[k].value) >= 0 : String(v) === opts[k].value;
      }
    }
  }

  // showDraft shows an unsent draft, read-only, once the question closed
  // without this answer (expired or withdrawn).
  function showDraft(v) {
    var d = readDraft();
    if (!d) {
      return;
    }
    var dl = el('draft-body');
    dl.replaceChildren();
    var add = function (k, val) {
      if (val === undefined || val === null || val === '' || (Array.isArray(val) && !val.length)) {
        return;
      }
      var dt = document.createElement('dt');
      dt.textContent = k;
      var dd = document.createElement('dd');
      dd.dir = 'auto';
      dd.textContent = Array.isArray(val) ? val.join(', ') : typeof val === 'boolean' ? form.getAttribute(val ? 'data-yes' : 'data-no') : String(val);
      dl.appendChild(dt);
      dl.appendChild(dd);
    };
    add(S['draft.choices'], d.sel);
    var qs = v.questions || [];
    var ans = d.answers || {};
    for (var i = 0; i < qs.length; i++) {
      add(qs[i].message, ans[qs[i].id]);
    }
    add(S['draft.text'], d.text);
    if (Array.isArray(d.files)) {
      add(S['draft.files'], d.files.map(function (f) { return f && f.name; }).filter(Boolean));
    }
    el('draft').hidden = !dl.firstChild;
  }

  function renderGiven(res) {
    var given = el('given-answers');
    if (res.answers && view && view.questions) {
      var dl = document.createElement('dl');
      for (var i = 0; i < view.questions.length; i++) {
        var q = view.questions[i];
        if (!Object.prototype.hasOwnProperty.call(res.answers, q.id)) {
          continue;
        }
        var a = res.answers[q.id];
        var dt = document.createElement('dt');
        dt.textContent = q.message;
        var dd = document.createElement('dd');
        dd.dir = 'auto';
        dd.textContent = Array.isArray(a) ? a.join(', ') : typeof a === 'boolean' ? form.getAttribute(a ? 'data-yes' : 'data-no') : String(a);
        dl.appendChild(dt);
        dl.appendChild(dd);
      }
      given.replaceChildren(dl);
      given.hidden = false;
      el('given-answers-label').hidden = false;
    }
    var opts = res.selectedOptions || [];
    el('given-options').textContent = opts.length ? opts.join(', ') : S.none;
    el('given-text').textContent = res.freeText ? res.freeText : S.none;
    if (res.attachments && res.attachments.length) {
      el('given-files').textContent = res.attachments.map(function (a) { return a.name + ' (' + window.FBAttach.humanSize(a.bytes) + ')'; }).join(', ');
      el('given-files').hidden = false;
      el('given-files-label').hidden = false;
    }
    var t = new Date(res.submittedAt);
    el('given-time').textContent = isNaN(t) ? S.none : t.toLocaleString(lang === 'zh' ? 'zh-CN' : 'en');
  }

  function showError(text) {
    formError.textContent = text;
    formError.hidden = !text;
  }

  function selected() {
    var out = [];
    var inputs = el('options').querySelectorAll('input');
    for (var i = 0; i < inputs.length; i++) {
      if (inputs[i].checked) {
        out.push(inputs[i].value);
      }
    }
    return out;
  }

  // Invisible characters, by the server's rule (internal/validate): control
  // characters other than tab and newlines, and Unicode's default-ignorable
  // characters (format characters Cf such as zero-width spaces, the word
  // joiner, U+FEFF, soft hyphen and bidi controls; variation selectors;
  // Hangul fillers; the tag block U+E0000–U+E0FFF), but not the prepended
  // concatenation marks, which are visible. Real text keeps what it needs:
  // ZWJ/ZWNJ between two visible non-ASCII characters (👩‍💻, Persian and
  // Indic spelling), one presentation selector after a non-ASCII character
  // or a keycap base (❤️, 1️⃣), and the England, Scotland and Wales flags.
  // Anything else would be sent without the person seeing it (and refused
  // by the server), so the page shows where it is and sends nothing until
  // it is gone.
  var ignorableRE = /[\p{Default_Ignorable_Code_Point}\p{Cf}]/u;
  var prependedMarkRE = /[\u0600-\u0605\u06DD\u070F\u0890\u0891\u08E2\u{110BD}\u{110CD}]/u;
  var flagTags = ['gbeng', 'gbsct', 'gbwls'];

  function isControl(cp) {
    return (cp < 0x20 && cp !== 0x09 && cp !== 0x0A && cp !== 0x0D) || (cp >= 0x7F && cp <= 0x9F);
  }

  function isIgnorable(ch) {
    var cp = ch.codePointAt(0);
    if (cp < 0xAD) {
      return false;
    }
    if (cp >= 0xE0000 && cp <= 0xE0FFF) {
      return true;
    }
    return ignorableRE.test(ch) && !prependedMarkRE.test(ch);
  }

  // visibleNonASCII: a character a joiner or presentation selector may attach to.
  function visibleNonASCII(ch) {
    if (!ch) {
      return false;
    }
    var cp = ch.codePointAt(0);
    if (cp < 0x80 || cp === 0xFFFD || /\s/u.test(ch) || isControl(cp)) {
      return false;
    }
    return cp === 0xFE0E || cp === 0xFE0F || !isIgnorable(ch);
  }

  // inFlagTag: the tag character chars[i] belongs to 🏴 + gbeng/gbsct/gbwls + cancel tag.
  function inFlagTag(chars, i) {
    var start = i;
    while (start > 0) {
      var c = chars[start - 1].codePointAt(0);
      if (c < 0xE0020 || c > 0xE007F) {
        break;
      }
      start--;
    }
    if (start === 0 || chars[start - 1].codePointAt(0) !== 0x1F3F4) {
      return false;
    }
    for (var f = 0; f < flagTags.length; f++) {
      var tag = flagTags[f];
      var ok = i <= start + tag.length;
      for (var k = 0; ok && k <= tag.length; k++) {
        var want = k < tag.length ? 0xE0000 + tag.charCodeAt(k) : 0xE007F;
        ok = start + k < chars.length && chars[start + k].codePointAt(0) === want;
      }
      if (ok) {
        return true;
      }
    }
    return false;
  }

  function refusedAt(chars, i) {
    var ch = chars[i];
    var cp = ch.codePointAt(0);
    if (isControl(cp)) {
      return true;
    }
    if (!isIgnorable(ch)) {
      return false;
    }
    var prev = chars[i - 1];
    var next = chars[i + 1];
    if (cp === 0x200C || cp === 0x200D) {
      return !visibleNonASCII(prev) || !visibleNonASCII(next);
    }
    if (cp === 0xFE0E || cp === 0xFE0F) {
      if (!prev || prev === '\uFE0E' || prev === '\uFE0F') {
        return true;
      }
      return !visibleNonASCII(prev) && '0123456789#*'.indexOf(prev) < 0;
    }
    if (cp >= 0xE0020 && cp <= 0xE007F) {
      return !inFlagTag(chars, i);
    }
    return true;
  }

  // findInvisible lists the refused characters of text by code point index.
  function findInvisible(chars) {
    var found = [];
    for (var i = 0; i < chars.length; i++) {
      if (refusedAt(chars, i)) {
        found.push(i);
      }
    }
    return found;
  }

  var invisibleText = {
    en: {
      warn1: 'Your answer contains an invisible character that would be sent with it: {list}. Remove it to send the answer.',
      warn: 'Your answer contains {n} invisible characters that would be sent with it: {list}. Remove them to send the answer.',
      clean: 'Remove invisible characters'
    },
    zh: {
      warn1: '你的回答中有 1 个不可见字符，会随回答一起发送：{list}。删除后才能发送。',
      warn: '你的回答中有 {n} 个不可见字符，会随回答一起发送：{list}。删除它们后才能发送。',
      clean: '删除不可见字符'
    }
  }[lang === 'zh' ? 'zh' : 'en'];

  function codePoint(ch) {
    var hex = ch.codePointAt(0).toString(16).toUpperCase();
    return 'U+' + ('0000' + hex).slice(-Math.max(4, hex.length));
  }

  // invisibleWarning builds the warning under the text box: what was found,
  // where (each spot with a little context, the characters shown as
  // ⟨U+200B⟩), and a button that removes them.
  function invisibleWarning() {
    var box = document.createElement('div');
    box.id = 'freetext-warning';
    box.className = 'form-error';
    box.setAttribute('aria-live', 'polite');
    box.hidden = true;
    var p = document.createElement('p');
    p.id = 'freetext-warning-text';
    var shownP = document.createElement('p');
    shownP.className = 'pre';
    var shown = document.createElement('code');
    shown.id = 'freetext-shown';
    shownP.appendChild(shown);
    var btn = document.createElement('button');
    btn.type = 'button';
    btn.id = 'freetext-clean';
    btn.textContent = invisibleText.clean;
    btn.addEventListener('click', function () {
      var chars = Array.from(freetext.value);
      var drop = findInvisible(chars);
      freetext.value = chars.filter(function (_, i) { return drop.indexOf(i) < 0; }).join('');
      checkInvisible();
      freetext.focus();
    });
    box.appendChild(p);
    box.appendChild(shownP);
    box.appendChild(btn);
    freetext.parentNode.insertBefore(box, freetext.nextSibling);
    freetext.addEventListener('input', checkInvisible);
    return { box: box, text: p, shown: shown, button: btn };
  }

  // checkInvisible updates the warning; it returns how many were found.
  function checkInvisible() {
    var chars = Array.from(freetext.value);
    var found = findInvisible(chars);
    invisible.box.hidden = !found.length;
    if (!found.length) {
      freetext.removeAttribute('aria-invalid');
      freetext.removeAttribute('aria-describedby');
      return 0;
    }
    var kinds = [];
    for (var i = 0; i < found.length; i++) {
      var cp = codePoint(chars[found[i]]);
      if (kinds.indexOf(cp) < 0) {
        kinds.push(cp);
      }
    }
    invisible.text.textContent = fill(found.length === 1 ? invisibleText.warn1 : invisibleText.warn, { n: found.length, list: kinds.join(', ') });
    // Up to three spots, each with a dozen characters of context (spots
    // that overlap are one); the refused characters show as ⟨U+200B⟩.
    var ranges = [];
    for (var j = 0; j < found.length; j++) {
      var from = Math.max(0, found[j] - 12);
      var to = Math.min(chars.length, found[j] + 13);
      var last = ranges[ranges.length - 1];
      if (last && from <= last.to) {
        last.to = to;
      } else if (ranges.length < 3) {
        ranges.push({ from: from, to: to });
      }
    }
    invisible.shown.textContent = ranges.map(function (r) {
      var piece = '';
      for (var k = r.from; k < r.to; k++) {
        piece += found.indexOf(k) >= 0 ? '⟨' + codePoint(chars[k]) + '⟩' : chars[k];
      }
      return (r.from > 0 ? '…' : '') + piece + (r.to < chars.length ? '…' : '');
    }).join('\n');
    freetext.setAttribute('aria-invalid', 'true');
    freetext.setAttribute('aria-describedby', 'freetext-warning-text');
    return found.length;
  }

  // Attachments (attach.js, shared with the inbox): the capability token
  // is the first multipart field and the remove's body, never in the URL.
  var attach = null;

  function uploadedFiles() {
    return attach ? attach.uploaded() : [];
  }

  function setupAttach(v) {
    var a = v.attach;
    if (!a || !a.maxFiles) {
      return;
    }
    attach = window.FBAttach.widget({
      wrap: el('attach-wrap'), hint: el('attach-hint'), input: el('attach-input'), camera: el('attach-camera'),
      cameraLabel: el('attach-camera-label'), error: el('attach-error'), list: el('attach-list')
    }, {
      rules: a, url: uploadURL, token: token, S: attachStrings(),
      canAdd: function () { return state === 'pending'; },
      canRemove: function () { return !submitting; },
      changed: saveDraft, gone: load, dropTarget: form, paste: true
    });
  }

  function attachStrings() {
    var out = { network: S['err.network'] };
    Object.keys(S).forEach(function (k) {
      if (k.indexOf('attach.') === 0) {
        out[k] = S[k];
      }
    });
    return out;
  }

  function submit() {
    if (submitting || state !== 'pending' || !view) {
      return;
    }
    var sel = selected();
    var text = view.allowFreeText ? freetext.value : '';
    if (attach && attach.busy()) {
      showError(S['attach.wait']);
      return;
    }
    var ids = uploadedFiles().map(function (f) { return f.id; });
    if (text && checkInvisible()) {
      showError('');
      invisible.button.focus();
      return;
    }
    var fa = null;
    if (view.questions && view.questions.length) {
      fa = formAnswers();
      if (fa.bad) {
        showError(fill(S['err.number'], { q: questionTitle(fa.bad) }));
        focusQuestion(fa.bad);
        return;
      }
      if (fa.missing) {
        showError(fill(S['err.required'], { q: questionTitle(fa.missing) }));
        focusQuestion(fa.missing);
        return;
      }
      if (!Object.keys(fa.answers).length && !text.trim()) {
        showError(S['err.form']);
        return;
      }
    } else if (!sel.length && !text.trim() && !(view.allowFreeText && ids.length)) {
      showError(view.allowFreeText ? S['err.choose'] : S['err.chooseOnly']);
      return;
    }
    showError('');
    submitting = true;
    submitBtn.disabled = true;
    submitBtn.textContent = S.sending;
    var answer = fa ? { answers: fa.answers, nonce: nonce } : { selectedOptions: sel, nonce: nonce };
    if (view.allowFreeText) {
      answer.freeText = text;
    }
    if (ids.length) {
      answer.attachments = ids;
    }
    fetch(submitURL, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'Accept': 'application/json' },
      body: JSON.stringify({ token: token, answer: answer }),
      cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer'
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (b) {
        if (r.ok) {
          submittedHere = true;
          dropDraft();
        }
        if (r.ok || r.status === 409 || r.status === 410 || r.status === 404) {
          // Sent, or closed meanwhile: the view says which state to show.
          return load();
        }
        showError(fill(S['err.server'], { m: (b.error && b.error.message) || ('HTTP ' + r.status) }));
      });
    }).catch(function () {
      showError(S['err.network']);
    }).then(function () {
      submitting = false;
      submitBtn.disabled = false;
      submitBtn.textContent = submitLabel;
    });
  }

  function remaining() {
    return Date.parse(view.expiresAt) - (Date.now() + skew);
  }

  function format(ms) {
    var s = Math.max(0, Math.ceil(ms / 1000));
    if (s >= 3600) {
      return fill(S.hours, { h: Math.floor(s / 3600), m: Math.floor((s % 3600) / 60) });
    }
    var m = Math.floor(s / 60);
    var r = s % 60;
    return m + ':' + (r < 10 ? '0' : '') + r;
  }

  function tick() {
    if (!view || state !== 'pending') {
      return;
    }
    var ms = remaining();
    if (ms <= 0) {
      countdown.textContent = S.expiring;
      countdown.className = 'countdown urgent';
      // The server decides expiry; ask it (the socket also says so).
      if (Date.now() - lastExpiryCheck > 2000) {
        lastExpiryCheck = Date.now();
        load();
      }
      return;
    }
    var t = format(ms);
    countdown.textContent = fill(S.countdown, { t: t });
    countdown.setAttribute('aria-label', fill(S['countdown.label'], { t: t }));
    countdown.className = ms < 60000 ? 'countdown urgent' : 'countdown';
  }

  function startTick() {
    if (!tickTimer) {
      tick();
      tickTimer = setInterval(tick, 1000);
    }
  }

  function stopTick() {
    if (tickTimer) {
      clearInterval(tickTimer);
      tickTimer = null;
    }
  }

  function startPolling() {
    if (!pollTimer && state !== 'notfound') {
      pollTimer = setInterval(load, 5000);
    }
  }

  function stopPolling() {
    if (pollTimer) {
      clearInterval(pollTimer);
      pollTimer = null;
    }
  }

  function stopLive() {
    stopPolling();
    stopTick();
    if (ws) {
      var s = ws;
      ws = null;
      s.onclose = null;
      s.close(1000);
    }
    setConn('');
  }

  function connect() {
    if (ws || state !== 'pending') {
      return;
    }
    if (!('WebSocket' in window)) {
      setConn(S.polling);
      startPolling();
      return;
    }
    var sock;
    try {
      sock = new WebSocket(wsURL);
    } catch (e) {
      setConn(S.polling);
      startPolling();
      return;
    }
    ws = sock;
    sock.onopen = function () {
      // The token goes in the first message, never in the URL.
      sock.send(JSON.stringify({ type: 'authenticate', data: { token: token } }));
    };
    sock.onmessage = function (ev) {
      var m;
      try {
        m = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      if (m.type === 'connection_established') {
        connects++;
        main.setAttribute('data-connects', String(connects));
        wsBackoff = 1000;
        stopPolling();
        setConn(S.live);
        if (m.data && view && m.data.status !== view.status) {
          load();
        }
      } else if (m.type === 'session_status_changed' || m.type === 'feedback_submitted') {
        load();
      }
    };
    sock.onclose = function (ev) {
      if (ws !== sock) {
        return;
      }
      ws = null;
      if (ev.code === 1000 || ev.code === 1008) {
        // Terminal state, or the token was refused: the view says which.
        load();
        return;
      }
      if (state !== 'pending') {
        return;
      }
      setConn(S.reconnecting);
      startPolling();
      // 1012 (server restart) and 1001 (going away) mean "come back soon";
      // anything else backs off up to 30 s while polling covers the gap.
      var delay = (ev.code === 1012 || ev.code === 1001) ? 200 + Math.random() * 800 : wsBackoff;
      wsBackoff = Math.min(wsBackoff * 2, 30000);
      setTimeout(connect, delay);
    };
  }

  form.addEventListener('submit', function (e) {
    e.preventDefault();
    submit();
  });
  // Every change is kept as a draft (see saveDraft).
  form.addEventListener('input', saveDraft);
  form.addEventListener('change', saveDraft);
  // Enter on an option selects it (Space does too, natively); it does not
  // send, so that a stray Enter never answers for the person.
  form.addEventListener('keydown', function (e) {
    if (e.key === 'Enter' && !e.ctrlKey && !e.metaKey && e.target.tagName === 'INPUT' && (e.target.type === 'radio' || e.target.type === 'checkbox')) {
      e.preventDefault();
      if (e.target.type === 'radio') {
        e.target.checked = true;
      } else {
        e.target.checked = !e.target.checked;
      }
      showError('');
      saveDraft();
    }
  });
  // A keypress (or a synthetic char event) after Enter would trigger the
  // form's implicit submission; an option's (or a number's) Enter only
  // selects.
  form.addEventListener('keypress', function (e) {
    if (e.key === 'Enter' && !e.ctrlKey && !e.metaKey && e.target.tagName === 'INPUT') {
      e.preventDefault();
    }
  });
  document.addEventListener('keydown', function (e) {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey) && state === 'pending') {
      e.preventDefault();
      submit();
    }
  });

  invisible = invisibleWarning();
  dropOldDrafts();
  load();
})();
