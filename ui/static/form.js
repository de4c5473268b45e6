// The question builders shared by the answer page (page.js) and the inbox
// (inbox.js), so both show options with detail and forms of several
// questions with the same controls and read them the same way. Loaded
// before either script, from this site only (the pages' CSP allows no
// other script). It holds no strings: callers pass their labels
// L = {recommended, required, yes, no}. Agent-supplied text is only ever
// set with textContent, except a question's message, which the server
// has rendered from Markdown and sanitised.
(function () {
  'use strict';

  // optionEl builds one choice: the label, a "Recommended" badge and the
  // description under it (all as text), the description tied to the input
  // for screen readers.
  function optionEl(type, name, idBase, i, label, detail, L) {
    var wrap = document.createElement('label');
    wrap.className = 'option';
    var input = document.createElement('input');
    input.type = type;
    input.name = name;
    input.value = label;
    input.id = idBase + '-' + i;
    var text = document.createElement('span');
    text.className = 'option-text';
    var title = document.createElement('span');
    title.textContent = label;
    title.dir = 'auto';
    text.appendChild(title);
    if (detail && detail.recommended) {
      wrap.className += ' recommended';
      var badge = document.createElement('span');
      badge.className = 'badge';
      badge.textContent = L.recommended;
      title.appendChild(badge);
    }
    if (detail && detail.description) {
      var desc = document.createElement('span');
      desc.className = 'option-desc';
      desc.id = input.id + '-desc';
      desc.dir = 'auto';
      desc.textContent = detail.description;
      input.setAttribute('aria-describedby', desc.id);
      text.appendChild(desc);
    }
    wrap.appendChild(input);
    wrap.appendChild(text);
    return wrap;
  }

  // setHTML puts server-rendered, sanitised HTML (a question's Markdown)
  // into node; DOMParser never runs scripts.
  function setHTML(node, html) {
    var doc = new DOMParser().parseFromString(html, 'text/html');
    while (doc.body.firstChild) {
      node.appendChild(document.adoptNode(doc.body.firstChild));
    }
  }

  // buildQuestions renders a form of several questions into box: one
  // fieldset (or labelled field) per question, the inputs named
  // <prefix>q-<id> (the inbox has several forms on one page, so its ids
  // need a prefix; the page's is "").
  function buildQuestions(box, qs, L, prefix) {
    for (var i = 0; i < qs.length; i++) {
      var q = qs[i];
      var base = prefix + 'q-' + q.id;
      var field;
      var title;
      if (q.kind === 'text' || q.kind === 'number') {
        field = document.createElement('div');
        title = document.createElement('label');
        title.htmlFor = base;
      } else {
        field = document.createElement('fieldset');
        title = document.createElement('legend');
      }
      field.className = 'question-field';
      field.setAttribute('data-question', q.id);
      title.id = base + '-title';
      setHTML(title, q.messageHtml);
      if (q.required) {
        var req = document.createElement('span');
        req.className = 'req';
        req.textContent = '(' + L.required + ')';
        // Beside the question's last line, not under it.
        var last = title.lastElementChild;
        (last && last.tagName === 'P' ? last : title).appendChild(req);
      }
      field.appendChild(title);
      var def = q['default'];
      if (q.kind === 'single' || q.kind === 'multi') {
        var list = document.createElement('div');
        list.className = 'option-list';
        for (var j = 0; j < q.options.length; j++) {
          var o = optionEl(q.kind === 'multi' ? 'checkbox' : 'radio', base, base, j, q.options[j].label, q.options[j], L);
          var inp = o.querySelector('input');
          inp.checked = q.kind === 'single' ? def === q.options[j].label : Array.isArray(def) && def.indexOf(q.options[j].label) >= 0;
          list.appendChild(o);
        }
        field.appendChild(list);
      } else if (q.kind === 'boolean') {
        var yn = document.createElement('div');
        yn.className = 'option-list';
        [['true', L.yes], ['false', L.no]].forEach(function (b, k) {
          var o = optionEl('radio', base, base, k, b[1], null, L);
          var inp = o.querySelector('input');
          inp.value = b[0];
          inp.checked = def === (b[0] === 'true');
          yn.appendChild(o);
        });
        field.appendChild(yn);
      } else if (q.kind === 'text') {
        var ta = document.createElement('textarea');
        ta.id = base;
        ta.name = base;
        ta.rows = 3;
        ta.maxLength = q.max != null ? q.max : 10000;
        ta.autocomplete = 'off';
        ta.value = typeof def === 'string' ? def : '';
        field.appendChild(ta);
      } else {
        var num = document.createElement('input');
        num.type = 'number';
        num.id = base;
        num.name = base;
        num.step = 'any';
        num.inputMode = 'decimal';
        if (q.min != null) {
          num.min = String(q.min);
        }
        if (q.max != null) {
          num.max = String(q.max);
        }
        num.value = typeof def === 'number' ? String(def) : '';
        field.appendChild(num);
      }
      if (q.required) {
        var inputs = field.querySelectorAll('input, textarea');
        for (var r = 0; r < inputs.length; r++) {
          inputs[r].setAttribute('aria-required', 'true');
        }
      }
      box.appendChild(field);
    }
    box.hidden = false;
  }

  // formAnswers reads the questions qs from root (the form): {answers,
  // missing, bad}, where missing is the first required question without
  // an answer and bad the first number that is not one. The server checks
  // everything again.
  function formAnswers(root, qs, prefix) {
    var out = { answers: {}, missing: null, bad: null };
    for (var i = 0; i < qs.length; i++) {
      var q = qs[i];
      var base = prefix + 'q-' + q.id;
      var value;
      if (q.kind === 'single' || q.kind === 'boolean' || q.kind === 'multi') {
        var picked = [];
        var inputs = root.querySelectorAll('input[name="' + base + '"]');
        for (var j = 0; j < inputs.length; j++) {
          if (inputs[j].checked) {
            picked.push(inputs[j].value);
          }
        }
        if (q.kind === 'multi') {
          value = picked.length ? picked : undefined;
        } else if (picked.length) {
          value = q.kind === 'boolean' ? picked[0] === 'true' : picked[0];
        }
      } else {
        var f = root.querySelector('[name="' + base + '"]');
        if (q.kind === 'text') {
          value = f.value.trim() ? f.value : undefined;
        } else if (f.value !== '' || (f.validity && f.validity.badInput)) {
          value = Number(f.value);
          if (f.value === '' || !isFinite(value)) {
            out.bad = out.bad || q;
            value = undefined;
          }
        }
      }
      if (value === undefined) {
        if (q.required && !out.missing) {
          out.missing = q;
        }
      } else {
        out.answers[q.id] = value;
      }
    }
    return out;
  }

  // questionTitle is q's title as the person reads it, for messages.
  function questionTitle(root, q, prefix) {
    var t = root.querySelector('[id="' + prefix + 'q-' + q.id + '-title"]');
    return t ? t.textContent : q.id;
  }

  function focusQuestion(root, q, prefix) {
    var first = root.querySelector('[name="' + prefix + 'q-' + q.id + '"]');
    if (first) {
      first.focus();
    }
  }

  // imageFigure shows one of the asker's images: a figure with its alt
  // text as caption, filled from a blob: URL once load() (a fetch of the
  // image, with whatever credentials the caller's view uses) has brought
  // it; the pages' CSP allows no remote images. data-loaded says how it
  // went (1 or failed), for tests and styles.
  function imageFigure(ref, id, alt, load) {
    var fig = document.createElement('figure');
    var img = document.createElement('img');
    img.alt = ref.alt || alt;
    img.width = ref.width;
    img.height = ref.height;
    img.id = id;
    fig.appendChild(img);
    if (ref.alt) {
      var cap = document.createElement('figcaption');
      cap.dir = 'auto';
      cap.textContent = ref.alt;
      fig.appendChild(cap);
    }
    load().then(function (r) {
      if (!r.ok) {
        throw new Error('HTTP ' + r.status);
      }
      return r.blob();
    }).then(function (b) {
      // Once shown, the image no longer needs its blob (the inbox rebuilds
      // its cards on every change, which would otherwise keep them all).
      img.onload = function () {
        URL.revokeObjectURL(img.src);
      };
      img.src = URL.createObjectURL(b);
      img.setAttribute('data-loaded', '1');
    }).catch(function () {
      img.setAttribute('data-loaded', 'failed');
    });
    return fig;
  }

  // fill puts values into a translated string's {name} places.
  function fill(template, values) {
    return template.replace(/\{(\w+)\}/g, function (_, k) { return values[k] !== undefined ? String(values[k]) : ''; });
  }

  window.FBForm = {
    fill: fill,
    imageFigure: imageFigure,
    optionEl: optionEl,
    setHTML: setHTML,
    buildQuestions: buildQuestions,
    formAnswers: formAnswers,
    questionTitle: questionTitle,
    focusQuestion: focusQuestion
  };
})();
