// Attachments, shared by the answer page (page.js) and the inbox
// (inbox.js), so both check, upload, show progress and remove files with
// the same code. Files are pasted, dropped or picked, checked against the
// server's rules (size, count, type) so that a file that cannot be taken
// is refused before a byte is sent, then uploaded at once with
// XMLHttpRequest (fetch cannot report upload progress). The caller says
// how the upload is authorised: the answer page's capability token as the
// first multipart field and in the remove's body (never in the URL, no
// cookies), or the inbox's sign-in cookie. The submit names the uploads'
// ids; an upload no answer names expires with the question. Loaded before
// either script, from this site only. File names are set with textContent
// only.
(function () {
  'use strict';

  var fill = window.FBForm.fill;

  function humanSize(n) {
    var units = ['B', 'KiB', 'MiB', 'GiB'];
    var u = 0;
    while (n >= 1024 && u < units.length - 1) {
      n /= 1024;
      u++;
    }
    return (Math.round(n * 10) / 10) + ' ' + units[u];
  }


  // build makes the controls the answer page's template holds, for a page
  // that builds its forms itself (the inbox): ids start with idBase.
  // L = {label, pick, camera}.
  function build(idBase, L) {
    var wrap = document.createElement('div');
    wrap.className = 'attach';
    wrap.hidden = true;
    var label = document.createElement('p');
    label.className = 'attach-label';
    label.textContent = L.label;
    wrap.appendChild(label);
    var hint = document.createElement('p');
    hint.className = 'hint-inline';
    hint.id = idBase + '-hint';
    wrap.appendChild(hint);
    var buttons = document.createElement('div');
    buttons.className = 'attach-buttons';
    function picker(suffix, text) {
      var l = document.createElement('label');
      l.className = 'button';
      l.htmlFor = idBase + '-' + suffix;
      l.textContent = text;
      var i = document.createElement('input');
      i.id = idBase + '-' + suffix;
      i.className = 'visually-hidden-input';
      i.type = 'file';
      i.setAttribute('aria-describedby', hint.id);
      buttons.appendChild(l);
      buttons.appendChild(i);
      return { label: l, input: i };
    }
    var pick = picker('input', L.pick);
    pick.input.multiple = true;
    var cam = picker('camera', L.camera);
    cam.input.accept = 'image/*';
    cam.input.setAttribute('capture', 'environment');
    cam.label.hidden = true;
    wrap.appendChild(buttons);
    var error = document.createElement('p');
    error.className = 'form-error';
    error.setAttribute('role', 'alert');
    error.hidden = true;
    wrap.appendChild(error);
    var list = document.createElement('ul');
    list.className = 'attach-list';
    list.setAttribute('aria-live', 'polite');
    wrap.appendChild(list);
    return { wrap: wrap, hint: hint, input: pick.input, camera: cam.input, cameraLabel: cam.label, error: error, list: list };
  }

  // widget runs the controls els (from the template, or build) for one
  // question. o: rules {maxFiles,maxSize,types}; url, the upload endpoint
  // (removal is url/<id>); token, the capability token, or '' to send the
  // sign-in cookie instead; S, the attach.* strings and network; canAdd()
  // and canRemove(), whether the question takes files now; changed(),
  // after the uploaded set changed; gone(), when the server says the
  // question is answered or gone; dropTarget, where files may be dropped;
  // paste, whether a paste anywhere on the page attaches.
  function widget(els, o) {
    var a = o.rules;
    var S = o.S;
    var files = []; // {name, type, size, id, state: uploading|done|failed, li, xhr}
    var changed = o.changed || function () {};
    var gone = o.gone || function () {};

    function attachError(text) {
      els.error.textContent = text;
      els.error.hidden = !text;
    }

    function setItemState(item, s, text) {
      item.state = s;
      item.li.setAttribute('data-state', s);
      item.li.className = s === 'failed' ? 'failed' : '';
      item.status.textContent = text;
    }

    function remove(item) {
      if (item.xhr) {
        item.xhr.abort();
      }
      if (item.id) {
        // Free the space on the server too; if this fails, the upload
        // simply expires with the question.
        var init = { method: 'DELETE', headers: { 'Accept': 'application/json' }, cache: 'no-store', referrerPolicy: 'no-referrer' };
        if (o.token) {
          init.headers['Content-Type'] = 'application/json';
          init.body = JSON.stringify({ token: o.token });
          init.credentials = 'omit';
        } else {
          init.credentials = 'same-origin';
        }
        fetch(o.url + '/' + encodeURIComponent(item.id), init).catch(function () {});
      }
      files.splice(files.indexOf(item), 1);
      item.li.remove();
    }

    // addItem lists a file: being uploaded (file given), or already
    // uploaded (id given, from a draft).
    function addItem(meta, uploadedID, file) {
      var item = { name: meta.name, type: meta.type, size: meta.size, id: uploadedID, state: uploadedID ? 'done' : 'uploading' };
      var li = document.createElement('li');
      if (file && file.type.indexOf('image/') === 0) {
        var img = document.createElement('img');
        img.alt = '';
        img.src = URL.createObjectURL(file);
        img.onload = function () { URL.revokeObjectURL(img.src); };
        li.appendChild(img);
      }
      var nm = document.createElement('span');
      nm.className = 'attach-name';
      nm.dir = 'auto';
      nm.textContent = meta.name + ' (' + humanSize(meta.size) + ')';
      li.appendChild(nm);
      var prog = document.createElement('progress');
      prog.max = 100;
      prog.value = uploadedID ? 100 : 0;
      prog.setAttribute('aria-label', meta.name);
      li.appendChild(prog);
      var st = document.createElement('span');
      st.className = 'attach-status';
      st.textContent = uploadedID ? fill(S['attach.done'], { name: meta.name }) : '';
      li.appendChild(st);
      var rm = document.createElement('button');
      rm.type = 'button';
      rm.className = 'button';
      rm.textContent = '×';
      rm.setAttribute('aria-label', fill(S['attach.remove'], { name: meta.name }));
      rm.addEventListener('click', function () {
        if (!o.canRemove()) {
          return; // the answer being sent may name it
        }
        remove(item);
        changed();
      });
      li.appendChild(rm);
      item.li = li;
      item.progress = prog;
      item.status = st;
      li.setAttribute('data-state', item.state);
      els.list.appendChild(li);
      files.push(item);
      return item;
    }

    function upload(item, file) {
      var xhr = new XMLHttpRequest();
      item.xhr = xhr;
      xhr.open('POST', o.url);
      xhr.responseType = 'json';
      xhr.withCredentials = !o.token;
      xhr.setRequestHeader('Accept', 'application/json');
      xhr.upload.onprogress = function (e) {
        if (e.lengthComputable) {
          var p = Math.round(e.loaded / e.total * 100);
          item.progress.value = p;
          item.status.textContent = fill(S['attach.uploading'], { name: item.name, p: p });
        }
      };
      xhr.onload = function () {
        item.xhr = null;
        var b = xhr.response || {};
        if (xhr.status === 201 && b.id) {
          item.id = b.id;
          item.progress.value = 100;
          setItemState(item, 'done', fill(S['attach.done'], { name: item.name }));
          changed();
          return;
        }
        var m = (b.error && b.error.message) || ('HTTP ' + xhr.status);
        setItemState(item, 'failed', fill(S['attach.failed'], { name: item.name, m: m }));
        if (xhr.status === 409 || xhr.status === 410 || xhr.status === 404) {
          gone();
        }
      };
      xhr.onerror = function () {
        item.xhr = null;
        setItemState(item, 'failed', fill(S['attach.failed'], { name: item.name, m: S.network }));
      };
      var fd = new FormData();
      if (o.token) {
        // The token first: the server reads no file from anyone without it.
        fd.append('token', o.token);
      }
      fd.append('file', file, item.name);
      xhr.send(fd);
    }

    function add(list) {
      if (!o.canAdd()) {
        return;
      }
      attachError('');
      for (var i = 0; i < list.length; i++) {
        var file = list[i];
        var name = file.name || 'file';
        var live = files.filter(function (f) { return f.state !== 'failed'; }).length;
        if (live >= a.maxFiles) {
          attachError(fill(S['attach.tooMany'], { n: a.maxFiles, name: name }));
          return;
        }
        if (file.size > a.maxSize) {
          attachError(fill(S['attach.tooBig'], { name: name, size: humanSize(file.size), max: humanSize(a.maxSize) }));
          continue;
        }
        if (a.types.indexOf(file.type) < 0) {
          attachError(fill(S['attach.type'], { name: name, types: a.types.join(', ') }));
          continue;
        }
        upload(addItem({ name: name, type: file.type, size: file.size }, null, file), file);
      }
    }

    var wrap = els.wrap;
    wrap.hidden = false;
    var kinds = a.types.map(function (t) { return t === 'text/plain' ? 'TXT' : t.split('/')[1].toUpperCase(); }).join(', ');
    els.hint.textContent = fill(S['attach.hint'], { n: a.maxFiles, size: humanSize(a.maxSize), types: kinds });
    var input = els.input;
    input.accept = a.types.join(',');
    input.addEventListener('change', function () {
      add(input.files);
      input.value = '';
    });
    if (a.types.some(function (t) { return t.indexOf('image/') === 0; })) {
      var cam = els.camera;
      els.cameraLabel.hidden = false;
      cam.addEventListener('change', function () {
        add(cam.files);
        cam.value = '';
      });
    } else {
      els.camera.disabled = true;
    }
    if (o.paste) {
      // Paste anywhere on the page (a screenshot from the clipboard).
      document.addEventListener('paste', function (e) {
        if (!o.canAdd() || !e.clipboardData || !e.clipboardData.files || !e.clipboardData.files.length) {
          return;
        }
        // Text copied from a document often comes with a picture of
        // itself: a paste with text is a text paste.
        if (Array.prototype.indexOf.call(e.clipboardData.types || [], 'text/plain') >= 0) {
          return;
        }
        e.preventDefault();
        add(e.clipboardData.files);
      });
    }
    var drop = o.dropTarget;
    drop.addEventListener('dragover', function (e) {
      if (e.dataTransfer && Array.prototype.indexOf.call(e.dataTransfer.types, 'Files') >= 0) {
        e.preventDefault();
        wrap.classList.add('dragging');
      }
    });
    drop.addEventListener('dragleave', function () {
      wrap.classList.remove('dragging');
    });
    drop.addEventListener('drop', function (e) {
      wrap.classList.remove('dragging');
      if (e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files.length) {
        e.preventDefault();
        add(e.dataTransfer.files);
      }
    });

    return {
      add: add,
      // addUploaded lists a file uploaded before (a draft's).
      addUploaded: function (meta, id) {
        if (files.length < a.maxFiles) {
          addItem(meta, id);
        }
      },
      // uploaded is what the answer carries, and a draft keeps.
      uploaded: function () {
        return files.filter(function (f) { return f.state === 'done'; }).map(function (f) {
          return { id: f.id, name: f.name, type: f.type, size: f.size };
        });
      },
      busy: function () {
        return files.some(function (f) { return f.state === 'uploading'; });
      }
    };
  }

  window.FBAttach = { build: build, widget: widget, humanSize: humanSize };
})();
