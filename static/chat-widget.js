/* Helpdesk chat widget (docs/CHAT.md): <script src=".../chat-widget.js" data-team data-lang data-title
   data-color defer>. Shadow DOM, a constructed stylesheet, no eval or inline code: strict-CSP safe. */
(() => {
'use strict';
if (document.getElementById('helpdesk-chat')) return;
const me = document.currentScript ||
  [].slice.call(document.scripts).reverse().filter(s => /chat-widget\.js([?#].*)?$/.test(s.src))[0];
if (!me) return;
const SRC = new URL(me.src, location.href), ORIGIN = SRC.origin;
const WS_URL = (SRC.protocol === 'https:' ? 'wss://' : 'ws://') + SRC.host + '/ws/chat';
const D = me.dataset, TEAM = (D.team || '').trim();
const LANG = /^ja/i.test(D.lang || navigator.language || '') ? 'ja' : 'en';
const COLOR = /^#([0-9a-f]{3}|[0-9a-f]{6})$/i.test(D.color || '') ? D.color : '#0b6e4f';
const KEY = 'helpdesk.chat:' + ORIGIN, VKEY = 'helpdesk.chat.visitor';

const T = {
  en: {
    title: 'Chat with us', open: 'Open chat', min: 'Close', agent: 'Agent', name: 'Name',
    intro: 'Tell us your name to start a chat.', emailOpt: 'Email (optional)', email: 'Email',
    start: 'Start chat', message: 'Message', send: 'Send', attach: 'Attach a file',
    ask: 'Ask your question and we will connect you with an agent.',
    typing: '{n} is typing…', queue: 'You are number {n} in the queue.', waiting: 'Waiting for an agent…',
    wait: 'Estimated wait: about {n} min.',
    ended: 'The chat has ended.', end: 'End chat',
    connecting: 'Connecting…', sending: 'Sending…', notSent: 'Not sent',
    offline: 'No one can chat right now.', hours: 'The chat is closed now.', hint: 'Leave a message and we will email you.',
    left: 'Thank you! Your message is case #{n}.',
    rateQ: 'How was this chat?', comment: 'Comment (optional)', skip: 'No thanks',
    rated: 'Thank you for your feedback!', newChat: 'Start a new chat', tx: 'Email the transcript',
    txQueued: 'The transcript will be sent to {n}.', sug: 'Related articles',
    tooBig: 'The file is too large (max {n}).',
    tooLong: 'Too long (max {n} characters).', slow: 'Too fast: please wait {n} s.',
    failed: 'Something went wrong.'
  },
  ja: {
    title: 'チャットでお問い合わせ', open: 'チャットを開く', min: '閉じる', agent: '担当者', name: 'お名前',
    intro: 'お名前を入力してください。', emailOpt: 'メール(任意)', email: 'メール',
    start: 'チャットを開始', message: 'メッセージ', send: '送信', attach: 'ファイルを添付',
    ask: 'ご質問を入力してください。担当者におつなぎします。',
    typing: '{n}が入力中…', queue: '待ち順: {n}番目', waiting: '担当者をお待ちください…',
    wait: '予想待ち時間: 約{n}分',
    ended: 'チャットは終了しました。', end: '終了',
    connecting: '接続中…', sending: '送信中…', notSent: '未送信',
    offline: 'ただいま対応できる担当者がいません。', hours: 'ただいま受付時間外です。', hint: 'メッセージをお送りください。メールで返信します。',
    left: '受け付けました。受付番号 #{n}',
    rateQ: 'チャットはいかがでしたか?', comment: 'コメント(任意)', skip: '評価しない',
    rated: 'ご評価ありがとうございました。', newChat: '新しいチャット', tx: '履歴をメールで受け取る',
    txQueued: '{n} 宛てに履歴を送ります。', sug: '関連する記事',
    tooBig: '上限 {n} を超えています。',
    tooLong: '長すぎます(最大{n}文字)。', slow: '{n}秒ほどお待ちください。',
    failed: 'エラーが発生しました。'
  }
}[LANG];
const TITLE = D.title || T.title;
const t = (k, n) => T[k].replace('{n}', () => n);

// -- helpers
function h(tag, attrs, kids) { // attrs: a class, or attributes (on*: listeners)
  const el = document.createElement(tag);
  if (typeof attrs === 'string') attrs = { class: attrs };
  Object.keys(attrs || {}).forEach(k => {
    const v = attrs[k];
    if (v == null || v === false) return;
    if (k === 'text') el.textContent = v;
    else if (k.slice(0, 2) === 'on') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  });
  el.append(...(kids || []).filter(Boolean));
  return el;
}
function icon(d) {
  const NS = 'http://www.w3.org/2000/svg', s = document.createElementNS(NS, 'svg'), p = document.createElementNS(NS, 'path');
  s.setAttribute('viewBox', '0 0 24 24'); s.setAttribute('aria-hidden', 'true');
  p.setAttribute('d', d); s.appendChild(p);
  return s;
}
const field = (label, input) => h('label', 'hd-field', [h('span', { text: label }), input]);
const btn = (cls, text, onclick) => h('button', { type: 'button', class: cls, text, onclick });
const ibtn = (cls, label, onclick, d) => h('button', { type: 'button', class: cls, 'aria-label': label, onclick }, [icon(d)]);
const rid = p => p + Array.from(crypto.getRandomValues(new Uint8Array(9)), b => (b + 256).toString(16).slice(1)).join('');
const parse = s => { try { return JSON.parse(s); } catch (e) { return null; } };
const getItem = k => { try { return localStorage.getItem(k); } catch (e) { return null; } };
const setItem = (k, v) => { try { v == null ? localStorage.removeItem(k) : localStorage.setItem(k, v); } catch (e) { /* private mode */ } };
function safeUrl(u) {
  try { const x = new URL(u, ORIGIN); return /^https?:$/.test(x.protocol) ? x.href : null; } catch (e) { return null; }
}
// snippets are HTML (<mark>): read as text in an inert document, never injected
const plain = s => new DOMParser().parseFromString(String(s || ''), 'text/html').body.textContent;

// -- state
let ws = null, token = null, mode = 'pre', state = null, agentName = '', position = null, wait = null;
const limits = { max_chars: 2000, max_upload_bytes: 5242880 };
let ready = false, helloFrame = null, leaveFrame = null, backoff = 500, retryT, flushT;
let contig = 0, acked = 0, ackT, bySeq = {}, pend = {}, outbox = [];
let hasVisitorMsg = false, agentTyping = false, typingT, typedAt = 0, idleT;
let rated = false, skipped = false, txOpen = false, sugCount = 0, sugT, sugN = 0, sugPause = 0;
let isOpen = false, flashT;

// -- the UI
const CSS = ':host{all:initial;--c:' + COLOR + ';--l:#e1e7e4;--m:#55635e}*{box-sizing:border-box}[hidden]{display:none!important}' +
  '.hd-launcher,.hd-panel{position:fixed;right:20px;z-index:2147483000;color:#1d2327;font:14px/1.45 system-ui,sans-serif}' +
  'button{font:inherit;font-weight:600;cursor:pointer;border:0;border-radius:8px;background:var(--c);color:#fff;padding:9px 14px}' +
  'button:disabled{opacity:.5}p{margin:0}a{color:var(--c)}form{margin:0}' +
  ':focus-visible{outline:2px solid var(--c);outline-offset:2px}.hd-head :focus-visible{outline-color:#fff}' +
  'svg{width:20px;height:20px;fill:none;stroke:currentColor;stroke-width:2;stroke-linecap:round;stroke-linejoin:round}' +
  '.hd-launcher,.hd-icon,.hd-send{display:grid;place-items:center}' +
  '.hd-launcher{bottom:20px;width:56px;height:56px;border-radius:50%;box-shadow:0 4px 14px #0004}.hd-launcher svg{width:26px;height:26px}' +
  '.hd-panel{bottom:88px;width:360px;height:520px;max-width:calc(100vw - 24px);max-height:calc(100vh - 100px);background:#fff;border-radius:12px;box-shadow:0 10px 40px #0004;display:flex;flex-direction:column;overflow:hidden}' +
  '.hd-head{display:flex;align-items:center;gap:4px;padding:10px 8px 10px 16px;background:var(--c);color:#fff}' +
  '.hd-titles{flex:1}.hd-title{margin:0;font-size:15px}.hd-icon{background:none;color:inherit;padding:6px}' +
  '.hd-end{background:#fff2;border:1px solid #fff9;padding:3px 10px}.hd-sub,.hd-meta,.hd-snip,.hd-end{font-size:12px}' +
  '.hd-conn,.hd-queue,.hd-error{padding:6px 14px;background:#eef4f1}.hd-error{background:#fdecea;color:#a4161a}' +
  '.hd-main{flex:1;overflow-y:auto;padding:12px 14px;background:#f8faf9}.hd-main,.hd-messages,.hd-box,form,.hd-field{display:flex;flex-direction:column;gap:10px}' +
  '.hd-msg{max-width:85%;align-self:flex-start}[data-from=visitor]{align-self:flex-end;text-align:right}' +
  '.hd-body{display:inline-block;text-align:left;padding:7px 11px;border-radius:12px;background:#fff;border:1px solid var(--l);white-space:pre-wrap;overflow-wrap:anywhere}.hd-body:empty{display:none}' +
  '[data-from=visitor] .hd-body{background:var(--c);border-color:var(--c);color:#fff}[data-from=system]{align-self:center;text-align:center}' +
  '[data-from=system] .hd-meta{display:none}[data-from=system] .hd-body{background:none;border:0}.hd-meta,.hd-note,.hd-typing,.hd-snip,.hd-suggestions p,[data-from=system] .hd-body{color:var(--m)}' +
  '.hd-meta{margin:0 4px 2px}.hd-pending{opacity:.6}.hd-note{text-align:center}.hd-typing{font-style:italic}' +
  '.hd-att img{max-width:220px;max-height:220px;border-radius:8px;display:block;margin-top:4px}' +
  '.hd-field{gap:3px}.hd-conn,.hd-queue,.hd-error,.hd-note,.hd-typing,.hd-field,.hd-suggestions{font-size:13px}' +
  'input,textarea{font:inherit;font-weight:400;color:inherit;border:1px solid #bfcac6;border-radius:8px;padding:8px 10px;width:100%;resize:none}' +
  '.hd-link{background:none;color:var(--c);text-decoration:underline;align-self:center}' +
  '.hd-scores{display:flex;gap:6px}.hd-scores button{flex:1}[aria-pressed=true]{box-shadow:inset 0 0 0 3px #fff8}' +
  '.hd-q,.hd-done,.hd-field,.hd-suggestions a,.hd-suggestions p{font-weight:600}.hd-done{color:var(--c)}' +
  '.hd-transcript{padding-top:10px}.hd-transcript,.hd-suggestions,.hd-compose{border-top:1px solid var(--l)}.hd-conn,.hd-queue{border-bottom:1px solid var(--l)}' +
  '.hd-suggestions{padding:8px 14px;max-height:150px;overflow-y:auto}.hd-suggestions ul{margin:0;padding:0;list-style:none}.hd-suggestions li{margin-top:6px}' +
  '.hd-snip{display:block;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}' +
  '.hd-compose{display:flex;align-items:flex-end;gap:6px;padding:8px}.hd-compose .hd-icon{color:var(--m);height:40px}' +
  '.hd-input{flex:1;max-height:120px}.hd-send{width:40px;height:40px;padding:0}' +
  '.hd-sr{position:absolute;width:1px;height:1px;overflow:hidden;clip-path:inset(50%)}';

const host = h('div', { id: 'helpdesk-chat' }), root = host.attachShadow({ mode: 'open' });
const sheet = new CSSStyleSheet();
sheet.replaceSync(CSS);
root.adoptedStyleSheets = [sheet];

const launcher = h('button', { type: 'button', class: 'hd-launcher', 'aria-label': T.open, 'aria-expanded': 'false',
  onclick: () => isOpen ? closePanel() : openPanel() }, [icon('M21 12a8 8 0 0 1-11.6 7.1L4 20l1-4.6A8 8 0 1 1 21 12z')]);
const agentEl = h('div', 'hd-sub');
const txBtn = ibtn('hd-icon hd-tx', T.tx, () => { txOpen = !txOpen; refresh(); txOpen && txEmail.focus(); }, 'M3 6h18v12H3zM3 7l9 6 9-6');
const endBtn = btn('hd-end', T.end, () => act({ type: 'close' }));
const status = (tag, cls) => h(tag, { class: cls, role: 'status', hidden: true });
const connEl = status('div', 'hd-conn');
const queueEl = status('div', 'hd-queue');
const input = (name, type, req) => h('input', { name, type, required: req, maxlength: name === 'name' ? 100 : 254, autocomplete: name });
const nameIn = input('name', 'text', true), emailIn = input('email', 'email');
const prechat = h('form', { class: 'hd-prechat', onsubmit: startChat }, [h('p', { text: T.intro }),
  field(T.name, nameIn), field(T.emailOpt, emailIn), h('button', { type: 'submit', text: T.start })]);
const offNote = h('p'), offName = input('name', 'text', true), offEmail = input('email', 'email', true);
const offBody = h('textarea', { name: 'body', required: true, rows: 4 });
const offForm = h('form', { class: 'hd-offline', onsubmit: leaveMessage }, [field(T.name, offName),
  field(T.email, offEmail), field(T.message, offBody), h('button', { type: 'submit', text: T.send })]);
const offDone = status('p', 'hd-done');
const offWrap = h('div', 'hd-box', [offNote, offForm, offDone]);
const list = h('div', 'hd-messages');
const askEl = h('p', { class: 'hd-note hd-ask', text: T.ask });
const typingEl = h('div', 'hd-typing');
const comment = h('textarea', { class: 'hd-comment', rows: 2, 'aria-label': T.comment, placeholder: T.comment });
const scores = [1, 2, 3, 4, 5].map(n => h('button', { type: 'button', 'data-score': n, text: String(n), onclick: () => rate(n) }));
const csat = h('div', 'hd-csat hd-box', [h('p', { class: 'hd-q', text: T.rateQ }), comment,
  h('div', { class: 'hd-scores', role: 'group', 'aria-label': T.rateQ }, scores),
  btn('hd-link hd-skip', T.skip, () => { skipped = true; refresh(); })]);
const ratedEl = status('p', 'hd-done');
ratedEl.textContent = T.rated;
const newBtn = btn('hd-primary hd-new', T.newChat, () => forget());
const endBox = h('div', 'hd-box', [csat, ratedEl, newBtn]);
const txEmail = input('email', 'email', true), txDone = status('p', 'hd-done');
const txForm = h('form', { class: 'hd-transcript', onsubmit: sendTranscript }, [field(T.tx, txEmail),
  h('button', { type: 'submit', text: T.send }), txDone]);
const main = h('div', 'hd-main', [prechat, offWrap, askEl, list, typingEl, endBox, txForm]);
const sugEl = h('div', 'hd-suggestions');
const errEl = h('div', { class: 'hd-error', role: 'alert', hidden: true });
const fileIn = h('input', { type: 'file', hidden: true, tabindex: '-1', onchange: upload });
const attachBtn = ibtn('hd-icon hd-attach', T.attach, () => fileIn.click(),
  'M20 11.5l-8.3 8.3a5 5 0 0 1-7-7L13.3 4.2a3.3 3.3 0 0 1 4.7 4.7l-8.6 8.6a1.7 1.7 0 0 1-2.4-2.4l7.9-7.9');
const box = h('textarea', { class: 'hd-input', rows: 2, maxlength: limits.max_chars, 'aria-label': T.message, placeholder: T.message, onkeydown: onKey, oninput: onInput });
const compose = h('div', 'hd-compose', [fileIn, attachBtn, box, ibtn('hd-send', T.send, submitText, 'M4 12l16-8-6 16-3-7z')]);
const panel = h('div', { class: 'hd-panel', role: 'dialog', 'aria-label': TITLE, hidden: true,
  onkeydown: e => { if (e.key === 'Escape' && !e.isComposing) { e.preventDefault(); closePanel(); } } }, [
  h('div', 'hd-head', [h('div', 'hd-titles', [h('h2', { class: 'hd-title', text: TITLE }), agentEl]), txBtn, endBtn,
    ibtn('hd-icon hd-min', T.min, closePanel, 'M6 6l12 12M18 6L6 18')]),
  connEl, queueEl, main, sugEl, errEl, compose]);
const live = h('div', { class: 'hd-sr hd-live', 'aria-live': 'polite' });
[launcher, panel, live].forEach(el => root.appendChild(el));

const ended = () => state === 'closed' || state === 'abandoned';
function refresh() {
  const chat = mode === 'chat', over = chat && ended(), going = chat && !over;
  prechat.hidden = mode !== 'pre';
  offWrap.hidden = mode !== 'off';
  list.hidden = !chat;
  askEl.hidden = !(going && state === 'new' && !hasVisitorMsg);
  queueEl.hidden = !(going && (state === 'queued' || state === 'offered'));
  queueEl.textContent = (position != null ? t('queue', position) : T.waiting) +
    (wait != null ? ' ' + t('wait', Math.max(1, Math.round(wait / 60))) : '');
  typingEl.hidden = !(going && agentTyping);
  typingEl.textContent = t('typing', agentName || T.agent);
  agentEl.textContent = going && state === 'active' ? agentName : '';
  endBox.hidden = !over;
  csat.hidden = rated || skipped;
  ratedEl.hidden = !rated;
  newBtn.hidden = !(rated || skipped);
  compose.hidden = !going;
  endBtn.hidden = !(going && token);
  txBtn.hidden = !(chat && token);
  txBtn.setAttribute('aria-expanded', txOpen);
  txForm.hidden = !(chat && token && (txOpen || over));
  sugEl.hidden = !(going && sugCount);
  const a = root.activeElement; // focus must not stay on something just hidden
  if (isOpen && a && !a.getClientRects().length) focusFirst();
}
// the first of these that is shown
const focusFirst = () => [nameIn, offName, box, scores[0], newBtn, panel.querySelector('.hd-min')].filter(e => e.getClientRects().length)[0].focus();
function flash(msg) { // an error above the text box, for a while
  clearTimeout(flashT);
  errEl.textContent = msg || '';
  errEl.hidden = !msg;
  if (msg) flashT = setTimeout(flash, 6000);
}
const setConn = text => { connEl.hidden = !text; connEl.textContent = text || ''; };
function say(text) { // the live region: a new node each time, so a repeat is read
  live.appendChild(h('div', { text }));
  while (live.childNodes.length > 3) live.removeChild(live.firstChild);
}
const scroll = () => { main.scrollTop = main.scrollHeight; };
function openPanel() {
  isOpen = true; panel.hidden = false;
  launcher.setAttribute('aria-expanded', 'true');
  refresh(); scroll(); focusFirst();
}
function closePanel() {
  isOpen = false; panel.hidden = true;
  launcher.setAttribute('aria-expanded', 'false');
  launcher.focus();
}

// -- the socket
const stored = () => (parse(getItem(KEY)) || {}).token;
function save(started) { // {token, seq}; never bring back a chat another tab has forgotten
  const cur = stored();
  if (cur === token || (started && !cur)) setItem(KEY, JSON.stringify({ token, seq: contig, rated }));
}
function send(f) {
  if (ws && ws.readyState === 1) { ws.send(JSON.stringify(f)); return true; }
  return false;
}
const act = f => ready && send(f) || flash(T.connecting); // a button's frame
function drop() {
  if (ws) { ws.onopen = ws.onmessage = ws.onclose = null; ws.close(1000); }
  ws = null; ready = false;
}
function connect() {
  clearTimeout(retryT); drop();
  if (!token && !helloFrame) return;
  let s;
  try { s = new WebSocket(WS_URL); } catch (e) { return onClose(1006); }
  ws = s;
  s.onopen = () => {
    s.resumed = !!token;
    // contig: 0 on a fresh page (the whole history), else the highest seq shown
    send(token ? { type: 'resume', token, after: contig } : helloFrame);
  };
  s.onmessage = e => { const f = parse(e.data); if (f && f.type) onFrame(f, s); };
  s.onclose = e => { ws = null; ready = false; onClose(e.code); };
}
function onClose(code) {
  if (code === 4404) return forget(); // unknown or expired token: start over
  if (code === 4400) { // refused (an error frame says why): back to the form
    setConn(''); helloFrame = null;
    if (!token) mode = 'pre';
    if (errEl.hidden) flash(T.failed);
    return refresh();
  }
  if (token || helloFrame) setConn(T.connecting);
  retryT = setTimeout(connect, backoff);
  backoff = Math.min(backoff * 2, 10000);
}
function flush() {
  if (!ready) return;
  outbox.forEach(send);
}
function scheduleAck() {
  clearTimeout(ackT);
  ackT = setTimeout(() => {
    if (contig > acked && send({ type: 'ack', seq: contig })) acked = contig;
    save();
  }, 200);
}
function setState(s, agent) {
  if (!s) return;
  state = s;
  agentName = agent && agent.name || (s === 'active' ? agentName : '');
  if (ended()) { agentTyping = false; stopTyping(); sugCount = 0; }
}
function onFrame(f, s) {
  switch (f.type) {
    case 'welcome':
      token = f.token || token; backoff = 500; helloFrame = null; mode = 'chat';
      setConn('');
      Object.assign(limits, f.limits);
      box.maxLength = limits.max_chars;
      txEmail.value = txEmail.value || (f.visitor || {}).email || '';
      setState(f.state, f.agent);
      rated = rated || !!f.csat;
      position = f.position; wait = f.wait_seconds;
      save(true);
      if (!s.resumed) { ready = true; flush(); } // a resume is ready at `synced`
      break;
    case 'synced': // end of the replay: we have everything up to f.seq
      contig = Math.max(contig, +f.seq || 0);
      while (bySeq[contig + 1]) contig++;
      ready = true; setConn(''); flush(); scheduleAck();
      break;
    case 'chat_message': addMsg(f); break;
    case 'ack': onAck(f); break;
    case 'chat_typing':
      if (f.from && f.from !== 'agent') break;
      agentTyping = !!f.on;
      clearTimeout(typingT);
      if (agentTyping) typingT = setTimeout(() => { agentTyping = false; refresh(); }, 15000);
      break;
    case 'chat_queue':
      position = f.position; wait = f.wait_seconds;
      if (state === 'new') state = 'queued';
      break;
    case 'chat_state':
      setState(f.state, f.agent);
      break;
    case 'offline':
      mode = 'off'; backoff = 500; setConn('');
      offNote.textContent = (f.reason === 'closed_hours' ? T.hours : T.offline) + ' ' + T.hint;
      if (leaveFrame) send(leaveFrame);
      break;
    case 'message_left':
      leaveFrame = helloFrame = null; drop();
      offForm.hidden = true; offDone.hidden = false;
      offDone.textContent = t('left', f.case_number);
      break;
    case 'rated': rated = true; save(); break;
    case 'transcript_queued': txDone.hidden = false; txDone.textContent = t('txQueued', f.email || txEmail.value); break;
    case 'error': onError(f); break;
    case 'ping': send({ type: 'pong' }); break;
  }
  refresh();
}
function onError(f) {
  const c = f.code;
  if (c === 'rate_limited') { // send the outbox again when allowed
    const secs = Math.max(1, +f.retry_after || 2);
    clearTimeout(flushT); flushT = setTimeout(flush, secs * 1000);
    return flash(t('slow', secs));
  }
  flash(c === 'too_long' ? t('tooLong', limits.max_chars) : c === 'closed' ? T.ended : f.message || T.failed);
  if (pend[f.ref]) { unbox(f.ref); pend[f.ref].firstChild.textContent = T.notSent; } // refused for good
}

// -- messages: shown once per seq, in seq order
function fill(el, f, pending) {
  el.textContent = '';
  el.className = 'hd-msg' + (pending ? ' hd-pending' : '');
  el.setAttribute('data-from', f.from || 'system');
  const at = new Date(f.at || Date.now()), time = isNaN(at) ? '' : at.toLocaleTimeString(LANG, { timeStyle: 'short' });
  const who = f.from === 'agent' ? (f.name || T.agent) + ' · ' : '';
  el.appendChild(h('div', { class: 'hd-meta', text: pending ? T.sending : who + time }));
  el.appendChild(h('div', { class: 'hd-body', text: f.body || '' }));
  const a = f.attachment;
  if (a && typeof a === 'object') {
    const u = String(a.url || ''), label = a.filename || 'file';
    const url = safeUrl(/token=/.test(u) ? u : u + (/\?/.test(u) ? '&' : '?') + 'token=' + token); // the visitor's copy
    const img = url && /^image\//.test(a.content_type || '') && h('img', { src: url, alt: label });
    el.appendChild(h('div', 'hd-att', [url ? h('a', { href: url, target: '_blank', rel: 'noopener noreferrer' }, [img || label]) : label]));
  }
}
function place(el, seq) { // pending messages (no seq yet) stay last
  el.setAttribute('data-seq', seq);
  bySeq[seq] = el;
  const ref = [].filter.call(list.children, k => k !== el && (!k.hasAttribute('data-seq') || +k.getAttribute('data-seq') > seq))[0];
  list.insertBefore(el, ref || null);
  while (bySeq[contig + 1]) contig++;
  scheduleAck();
}
const unbox = cid => { outbox = outbox.filter(m => m.client_id !== cid); };
function addMsg(f) {
  const seq = +f.seq;
  let el = bySeq[seq];
  if (!seq || (el && !el.local)) return;
  if (f.client_id) { // our own message: it is no longer pending
    unbox(f.client_id);
    el = el || pend[f.client_id];
    delete pend[f.client_id];
  }
  el = el || h('div');
  el.local = false;
  fill(el, f);
  place(el, seq);
  if (f.from === 'visitor') hasVisitorMsg = true;
  if (f.from === 'agent') agentTyping = false;
  if (ready && f.from !== 'visitor') // live, not a replay: agent and system lines are read out
    say((f.name ? f.name + ': ' : '') + (f.body || (f.attachment && f.attachment.filename) || ''));
  refresh(); scroll();
}
function onAck(f) {
  unbox(f.client_id);
  const el = pend[f.client_id], seq = +f.seq;
  if (!el || !seq) return;
  delete pend[f.client_id];
  if (bySeq[seq]) return list.removeChild(el);
  fill(el, el.frame);
  el.local = true; // our own copy until the server's chat_message comes
  place(el, seq);
}
function post(body, attachment) {
  const m = { type: 'message', client_id: rid('c-'), body };
  if (attachment) m.attachment = attachment.id;
  const el = h('div');
  el.frame = { from: 'visitor', body, attachment };
  fill(el, el.frame, true);
  pend[m.client_id] = el;
  list.appendChild(el);
  outbox.push(m);
  hasVisitorMsg = true;
  if (ready) send(m);
  refresh(); scroll();
}
function submitText() {
  const body = box.value.trim();
  if (!body) return;
  if (body.length > limits.max_chars) return flash(t('tooLong', limits.max_chars));
  box.value = '';
  stopTyping(); showSug([]);
  post(body, null);
  box.focus();
}
function onKey(e) { // Enter sends, Shift+Enter: new line; not while composing (IME)
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) { e.preventDefault(); submitText(); }
}
function onInput() {
  if (token && !ended()) {
    const now = Date.now();
    if (now - typedAt >= 2000 && send({ type: 'typing', on: true })) typedAt = now;
    clearTimeout(idleT);
    idleT = setTimeout(stopTyping, 3000);
  }
  clearTimeout(sugT);
  sugT = setTimeout(suggest, 300);
}
function stopTyping() {
  clearTimeout(idleT);
  if (typedAt) { send({ type: 'typing', on: false }); typedAt = 0; }
}

// -- FAQ suggestions (the public KB search; on 429 stop for a while)
function suggest() {
  const q = box.value.trim().slice(0, 200), n = ++sugN;
  if (q.length < 2 || Date.now() < sugPause || ended()) return showSug([]);
  fetch(ORIGIN + '/api/kb/search?q=' + encodeURIComponent(q) + '&lang=' + LANG + '&limit=3', { credentials: 'omit' })
    .then(r => {
      if (r.status === 429) sugPause = Date.now() + 1000 * Math.max(+r.headers.get('Retry-After') || 0, 30);
      return r.ok ? r.json() : {};
    })
    .then(j => n === sugN && showSug(j.results || []), () => showSug([]));
}
function showSug(results) {
  sugEl.textContent = '';
  const items = results.map(r => {
    const url = safeUrl(r.url);
    return url && h('li', null, [h('a', { href: url, target: '_blank', rel: 'noopener noreferrer', text: r.title || plain(r.title_html) }),
      h('span', { class: 'hd-snip', text: plain(r.snippet_html) })]);
  }).filter(Boolean);
  sugCount = items.length;
  if (sugCount) { sugEl.appendChild(h('p', { text: T.sug })); sugEl.appendChild(h('ul', null, items)); }
  refresh();
}

// -- forms
function startChat(e) {
  e.preventDefault();
  const name = nameIn.value.trim(), email = emailIn.value.trim();
  if (!name) return nameIn.focus();
  reset();
  let id = getItem(VKEY); // this browser's visitor id
  if (!id) setItem(VKEY, id = rid('v-'));
  const visitor = { name, language: LANG, id };
  if (email) visitor.email = email;
  helloFrame = { type: 'hello', visitor, page: location.href.slice(0, 2000) };
  if (TEAM) helloFrame.team = TEAM;
  txEmail.value = offEmail.value = email;
  offName.value = name;
  mode = 'chat';
  setConn(T.connecting);
  connect(); refresh();
  box.focus();
}
function leaveMessage(e) {
  e.preventDefault();
  leaveFrame = { type: 'leave_message', name: offName.value.trim(), email: offEmail.value.trim(), body: offBody.value.trim() };
  if (!send(leaveFrame) && !ws) connect(); // else it goes after the `offline` answer
}
function rate(n) {
  scores.forEach(b => b.setAttribute('aria-pressed', b.getAttribute('data-score') == n));
  const f = { type: 'rate', score: n };
  if (comment.value.trim()) f.comment = comment.value.trim();
  act(f);
}
function sendTranscript(e) {
  e.preventDefault();
  txDone.hidden = true;
  act({ type: 'transcript', email: txEmail.value.trim() });
}
function upload() {
  const file = fileIn.files[0];
  fileIn.value = '';
  if (!file || !token) return;
  if (file.size > limits.max_upload_bytes) return flash(t('tooBig', (limits.max_upload_bytes / 1048576).toFixed(1) + ' MB'));
  const fd = new FormData();
  fd.append('file', file);
  attachBtn.disabled = true;
  setConn(T.sending);
  fetch(ORIGIN + '/api/chat/uploads', { method: 'POST', body: fd, headers: { 'X-Chat-Token': token }, credentials: 'omit' })
    .then(r => r.json().catch(() => ({})).then(j => {
      if (!r.ok || !j.id) throw new Error(j.error && j.error.message || T.failed);
      return j;
    }))
    .then(a => post('', a), err => flash(err.message || T.failed))
    .then(() => { attachBtn.disabled = false; setConn(''); });
}
function reset() { // clear the conversation on screen (not the stored token)
  drop();
  [retryT, ackT, flushT].forEach(clearTimeout);
  list.textContent = '';
  bySeq = {}; pend = {}; outbox = [];
  contig = acked = typedAt = 0; backoff = 500;
  state = helloFrame = leaveFrame = position = wait = null; agentName = '';
  hasVisitorMsg = agentTyping = rated = skipped = txOpen = false;
  comment.value = ''; txDone.hidden = true;
  scores.forEach(b => b.setAttribute('aria-pressed', 'false'));
  setConn(''); flash(); showSug([]);
}
function forget() {
  if (stored() === token) setItem(KEY, null);
  token = null; reset(); mode = 'pre'; refresh();
}
function adopt(tok, wasRated) { // show a stored conversation from its start
  reset(); token = tok; rated = !!wasRated; mode = 'chat';
  setConn(T.connecting); connect(); refresh();
}

// -- start
addEventListener('storage', e => { // another tab started, resumed or forgot a chat
  if (e.key !== KEY) return;
  const v = parse(e.newValue), tok = v && v.token || null;
  if (tok === token) { if (v && v.rated && !rated) { rated = true; refresh(); } }
  else if (tok) adopt(tok, v.rated);
  else forget();
});
setInterval(() => send({ type: 'ping' }), 25000);

function init() {
  document.body.appendChild(host);
  const stored = parse(getItem(KEY));
  if (stored && stored.token) adopt(stored.token, stored.rated); else refresh();
}
if (document.body) init(); else document.addEventListener('DOMContentLoaded', init);
})();
