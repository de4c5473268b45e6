// The inbox's service worker. It shows a notification for each push of a
// new question (with a button per option when one tap can answer it),
// posts the one-tap answer when a button is pressed (the answer token
// travels in the body, never in a URL), opens the question when the body
// is tapped, and closes the notification when the question is answered
// elsewhere, withdrawn or expired (a "close" push).
'use strict';

var STRINGS = {
  en: { sent: 'Answer sent', failed: 'The answer could not be sent', open: 'Open the question to answer it.' },
  zh: { sent: '回答已发送', failed: '回答未能发送', open: '打开问题来回答。' }
};

function strings() {
  var l = (self.navigator && self.navigator.language) || 'en';
  return l.toLowerCase().indexOf('zh') === 0 ? STRINGS.zh : STRINGS.en;
}

function sameOrigin(u) {
  try {
    return new URL(u, self.location.href).origin === self.location.origin;
  } catch (e) {
    return false;
  }
}

function closeTag(tag) {
  return self.registration.getNotifications({ tag: tag }).then(function (ns) {
    ns.forEach(function (n) { n.close(); });
  });
}

self.addEventListener('install', function () { self.skipWaiting(); });
self.addEventListener('activate', function (e) { e.waitUntil(self.clients.claim()); });

self.addEventListener('push', function (e) {
  var d = null;
  try {
    d = e.data ? e.data.json() : null;
  } catch (err) {
    d = null;
  }
  if (!d || typeof d.id !== 'string') {
    return;
  }
  if (d.type === 'close') {
    e.waitUntil(closeTag(d.id));
    return;
  }
  var opts = Array.isArray(d.options) ? d.options.slice(0, 2) : [];
  var actions = opts.map(function (o, i) { return { action: 'option-' + i, title: String(o) }; });
  var body = (d.agent ? d.agent + ' · ' : '') + (actions.length ? '' : strings().open);
  e.waitUntil(self.registration.showNotification(String(d.title || '…'), {
    body: body,
    tag: d.id,
    data: d,
    actions: actions,
    requireInteraction: true,
    icon: '../feedback-static/icon-192.png'
  }).catch(function (err) {
    console.error('showing the notification failed', err);
  }));
});

self.addEventListener('notificationclick', function (e) {
  var n = e.notification;
  var d = n.data || {};
  n.close();
  var m = /^option-(\d)$/.exec(e.action || '');
  if (m && d.options && d.token && sameOrigin(d.answerUrl)) {
    var option = d.options[Number(m[1])];
    var s = strings();
    e.waitUntil(fetch(d.answerUrl, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ token: d.token, option: option }),
      credentials: 'omit',
      cache: 'no-store'
    }).then(function (r) {
      return r.ok;
    }, function () {
      return false;
    }).then(function (ok) {
      return self.registration.showNotification(ok ? s.sent : s.failed, {
        body: option, tag: d.id + ':done', data: { url: d.url }
      });
    }));
    return;
  }
  var url = d.url && sameOrigin(d.url) ? d.url : './';
  e.waitUntil(self.clients.openWindow(url));
});
