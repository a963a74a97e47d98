// The attachment page (src/web/mod.rs). Plain JavaScript, no framework, no build step.
//
// Everything goes through the routes every CalDAV client uses, on this page's origin:
// PROPFIND for the principal, calendar home and calendars (RFC 4918, RFC 4791 §6),
// a calendar-query REPORT with a time-range for events (RFC 4791 §7.8), GET of the
// event, the attachment POST (RFC 8607 §3.4-3.6) and downloads (RFC 8607 §3.10).
// Sign-in is the browser's own Basic prompt on the upstream's 401; no password is kept.
'use strict';

(function () {
  const DAV = 'DAV:';
  const CAL = 'urn:ietf:params:xml:ns:caldav';
  const $ = (id) => document.getElementById(id);
  // The page's own path without its trailing slash is the attachment prefix.
  const PREFIX = location.pathname.replace(/\/+$/, '');
  // Events listed at once; a search narrows a long calendar down.
  const MAX_LISTED = 200;

  const state = {
    calendars: [],
    calendar: null, // {href, name}
    event: null, // {href, etag, text, cal}
    occurrences: null, // Map rid -> instance component (from an expand REPORT)
    rid: '',
    searches: 0,
  };

  class SignInError extends Error {}

  // ---- helpers ------------------------------------------------------------------

  // Absolute same-origin URL of a path. Built from location.origin, which never holds
  // credentials, so a page opened as http://user:pass@host/ still makes valid requests.
  function url(path) {
    return new URL(path, location.origin + '/');
  }

  function xmlEscape(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({
      '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;',
    })[c]);
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children) {
      if (c !== null && c !== undefined) e.append(c);
    }
    return e;
  }

  function setStatus(text, isError) {
    const s = $('status');
    s.textContent = text;
    s.classList.toggle('error', !!isError);
  }

  function formatSize(n) {
    if (n === null || n === undefined || isNaN(n)) return '';
    const units = ['bytes', 'KiB', 'MiB', 'GiB'];
    let v = Number(n);
    let u = 0;
    while (v >= 1024 && u < units.length - 1) {
      v /= 1024;
      u++;
    }
    return u === 0 ? `${v} ${units[0]}` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
  }

  // ---- WebDAV -------------------------------------------------------------------

  async function dav(method, path, body, headers) {
    const h = Object.assign({ 'Content-Type': 'application/xml; charset=utf-8' }, headers || {});
    const resp = await fetch(url(path), {
      method,
      body,
      headers: h,
      credentials: 'same-origin',
      cache: 'no-store',
      redirect: 'follow',
    });
    if (resp.status === 401) throw new SignInError('sign-in needed');
    return resp;
  }

  function parseXml(text) {
    const doc = new DOMParser().parseFromString(text, 'application/xml');
    if (doc.getElementsByTagName('parsererror').length) return null;
    return doc;
  }

  function children(node, ns, name) {
    return Array.from(node.children).filter((c) => c.namespaceURI === ns && c.localName === name);
  }

  function child(node, ns, name) {
    return children(node, ns, name)[0] || null;
  }

  // The multistatus responses: [{href, prop}] where prop is the 200 propstat's prop.
  function multistatus(doc, base) {
    const out = [];
    if (!doc) return out;
    for (const r of doc.getElementsByTagNameNS(DAV, 'response')) {
      const href = child(r, DAV, 'href');
      if (!href) continue;
      let prop = null;
      for (const ps of children(r, DAV, 'propstat')) {
        const st = child(ps, DAV, 'status');
        if (st && / 2\d\d /.test(st.textContent + ' ')) prop = child(ps, DAV, 'prop');
      }
      out.push({ href: new URL(href.textContent.trim(), base).pathname, prop });
    }
    return out;
  }

  function hrefIn(prop, ns, name) {
    const p = prop && child(prop, ns, name);
    const h = p && p.getElementsByTagNameNS(DAV, 'href')[0];
    return h ? h.textContent.trim() : null;
  }

  const PROPFIND_PRINCIPAL = '<?xml version="1.0" encoding="utf-8"?>' +
    '<D:propfind xmlns:D="DAV:"><D:prop><D:current-user-principal/></D:prop></D:propfind>';

  // The DAV entry point: /.well-known/caldav (RFC 6764 §5, forwarded to the upstream,
  // which may redirect, e.g. to /dav.php/), then the root.
  async function findPrincipal() {
    for (const path of ['/.well-known/caldav', '/']) {
      const resp = await dav('PROPFIND', path, PROPFIND_PRINCIPAL, { Depth: '0' });
      if (resp.status !== 207) continue;
      const doc = parseXml(await resp.text());
      for (const r of multistatus(doc, resp.url)) {
        const href = hrefIn(r.prop, DAV, 'current-user-principal');
        if (href) return new URL(href, resp.url).pathname;
      }
    }
    throw new Error('the server names no current user principal (DAV:current-user-principal)');
  }

  async function findHomes(principal) {
    const body = '<?xml version="1.0" encoding="utf-8"?>' +
      '<D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop>' +
      '<C:calendar-home-set/><D:displayname/></D:prop></D:propfind>';
    const resp = await dav('PROPFIND', principal, body, { Depth: '0' });
    if (resp.status !== 207) throw new Error(`reading ${principal} failed (${resp.status})`);
    const doc = parseXml(await resp.text());
    const homes = [];
    let name = '';
    for (const r of multistatus(doc, resp.url)) {
      if (!r.prop) continue;
      const set = child(r.prop, CAL, 'calendar-home-set');
      if (set) {
        for (const h of set.getElementsByTagNameNS(DAV, 'href')) {
          homes.push(new URL(h.textContent.trim(), resp.url).pathname);
        }
      }
      const dn = child(r.prop, DAV, 'displayname');
      if (dn && dn.textContent.trim()) name = dn.textContent.trim();
    }
    if (!homes.length) throw new Error('the server names no calendar home (CALDAV:calendar-home-set)');
    return { homes, name };
  }

  async function findCalendars(home) {
    const body = '<?xml version="1.0" encoding="utf-8"?>' +
      '<D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop>' +
      '<D:resourcetype/><D:displayname/><C:supported-calendar-component-set/>' +
      '<C:max-attachment-size/><C:max-attachments-per-resource/>' +
      '</D:prop></D:propfind>';
    const resp = await dav('PROPFIND', home, body, { Depth: '1' });
    if (resp.status !== 207) throw new Error(`listing ${home} failed (${resp.status})`);
    const doc = parseXml(await resp.text());
    const out = [];
    for (const r of multistatus(doc, resp.url)) {
      if (!r.prop) continue;
      const rt = child(r.prop, DAV, 'resourcetype');
      if (!rt || !child(rt, CAL, 'calendar')) continue;
      const comps = child(r.prop, CAL, 'supported-calendar-component-set');
      if (comps) {
        const names = Array.from(comps.getElementsByTagNameNS(CAL, 'comp')).map((c) => c.getAttribute('name'));
        if (names.length && !names.includes('VEVENT')) continue;
      }
      const dn = child(r.prop, DAV, 'displayname');
      const num = (n) => {
        const p = child(r.prop, CAL, n);
        return p && p.textContent.trim() ? Number(p.textContent.trim()) : null;
      };
      const segments = r.href.split('/').filter(Boolean);
      out.push({
        href: r.href,
        name: (dn && dn.textContent.trim()) || decodeURIComponent(segments[segments.length - 1] || r.href),
        maxSize: num('max-attachment-size'),
        maxCount: num('max-attachments-per-resource'),
      });
    }
    return out;
  }

  // ---- iCalendar (RFC 5545 §3.1: unfold, then content lines) ----------------------

  function unfold(text) {
    return text.replace(/\r?\n[ \t]/g, '');
  }

  // RFC 6868 parameter value encoding.
  function paramDecode(v) {
    return v.replace(/\^(\^|n|N|')/g, (m, c) => (c === '^' ? '^' : c === "'" ? '"' : '\n'));
  }

  function parseLine(line) {
    let i = 0;
    const n = line.length;
    const stop = (c) => c === ';' || c === ':';
    let s = i;
    while (i < n && !stop(line[i])) i++;
    const name = line.slice(s, i).toUpperCase();
    const params = {};
    while (i < n && line[i] === ';') {
      i++;
      s = i;
      while (i < n && line[i] !== '=' && !stop(line[i])) i++;
      const pname = line.slice(s, i).toUpperCase();
      const values = [];
      if (line[i] === '=') {
        i++;
        for (;;) {
          if (line[i] === '"') {
            const end = line.indexOf('"', i + 1);
            if (end < 0) {
              values.push(line.slice(i + 1));
              i = n;
              break;
            }
            values.push(line.slice(i + 1, end));
            i = end + 1;
          } else {
            s = i;
            while (i < n && line[i] !== ',' && !stop(line[i])) i++;
            values.push(line.slice(s, i));
          }
          if (line[i] === ',') {
            i++;
            continue;
          }
          break;
        }
      }
      params[pname] = paramDecode(values.join(','));
    }
    return { name, params, value: line[i] === ':' ? line.slice(i + 1) : '' };
  }

  function parseICal(text) {
    const root = { name: 'ROOT', props: [], comps: [] };
    const stack = [root];
    for (const raw of unfold(text).split(/\r?\n/)) {
      if (!raw) continue;
      const line = parseLine(raw);
      const top = stack[stack.length - 1];
      if (line.name === 'BEGIN') {
        const comp = { name: line.value.toUpperCase(), props: [], comps: [] };
        top.comps.push(comp);
        stack.push(comp);
      } else if (line.name === 'END') {
        if (stack.length > 1) stack.pop();
      } else {
        top.props.push(line);
      }
    }
    return root.comps.find((c) => c.name === 'VCALENDAR') || null;
  }

  function prop(comp, name) {
    return comp.props.find((p) => p.name === name) || null;
  }

  function textValue(v) {
    return v.replace(/\\([\\;,nN])/g, (m, c) => (c === 'n' || c === 'N' ? '\n' : c));
  }

  function events(cal) {
    return cal ? cal.comps.filter((c) => c.name === 'VEVENT') : [];
  }

  function master(cal) {
    const evs = events(cal);
    return evs.find((c) => !prop(c, 'RECURRENCE-ID')) || evs[0] || null;
  }

  function isRecurring(cal) {
    const m = master(cal);
    return !!m && (!!prop(m, 'RRULE') || !!prop(m, 'RDATE') || events(cal).length > 1);
  }

  // A DATE or DATE-TIME value as a Date (a TZID or floating time is shown as local time).
  function parseDate(p) {
    if (!p) return null;
    const m = /^(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2})(Z)?)?$/.exec(p.value.trim());
    if (!m) return null;
    const [, y, mo, d, h, mi, s, z] = m;
    if (h === undefined) return { date: new Date(+y, mo - 1, +d), allDay: true };
    const args = [+y, mo - 1, +d, +h, +mi, +s];
    return { date: z ? new Date(Date.UTC(...args)) : new Date(...args), allDay: false };
  }

  function formatWhen(p) {
    const d = parseDate(p);
    if (!d) return p ? p.value : '';
    return d.allDay
      ? d.date.toLocaleDateString(undefined, { dateStyle: 'medium' })
      : d.date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  }

  function formatRid(rid) {
    return formatWhen({ value: rid, params: {} });
  }

  // The ATTACH properties of a component (RFC 8607 §4: MANAGED-ID, FILENAME, SIZE,
  // FMTTYPE on managed ones).
  function attachments(comp) {
    if (!comp) return [];
    return comp.props.filter((p) => p.name === 'ATTACH').map((p) => ({
      managedId: p.params['MANAGED-ID'] || null,
      filename: p.params.FILENAME || '',
      size: p.params.SIZE ? Number(p.params.SIZE) : null,
      type: p.params.FMTTYPE || '',
      binary: (p.params.VALUE || '').toUpperCase() === 'BINARY' || !!p.params.ENCODING,
      uri: p.value,
    }));
  }

  // Download links stay on this origin: a managed attachment's URL is under the prefix,
  // so its path is rebased here (the same calattach, whatever host the event names).
  function downloadHref(uri) {
    try {
      const u = new URL(uri, location.origin + '/');
      if (u.pathname.startsWith(PREFIX + '/')) return url(u.pathname).href;
      return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
    } catch (e) {
      return null;
    }
  }

  // ---- calendars and events -----------------------------------------------------

  function compactUtc(date) {
    return date.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
  }

  function todayInput() {
    const d = new Date();
    const pad = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  }

  function startOf(input) {
    const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(input || '');
    return m ? new Date(+m[1], m[2] - 1, +m[3]) : new Date(new Date().setHours(0, 0, 0, 0));
  }

  async function queryEvents(calendar, q, from) {
    const textFilter = q
      ? '<C:prop-filter name="SUMMARY"><C:text-match collation="i;unicode-casemap">' +
        xmlEscape(q) + '</C:text-match></C:prop-filter>'
      : '';
    const body = '<?xml version="1.0" encoding="utf-8"?>' +
      '<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">' +
      '<D:prop><D:getetag/><C:calendar-data/></D:prop>' +
      '<C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">' +
      `<C:time-range start="${compactUtc(from)}"/>` + textFilter +
      '</C:comp-filter></C:comp-filter></C:filter></C:calendar-query>';
    const resp = await dav('REPORT', calendar.href, body, { Depth: '1' });
    if (resp.status !== 207) throw new Error(`searching ${calendar.name} failed (${resp.status})`);
    const doc = parseXml(await resp.text());
    const out = [];
    const needle = (q || '').toLocaleLowerCase();
    for (const r of multistatus(doc, resp.url)) {
      const data = r.prop && child(r.prop, CAL, 'calendar-data');
      if (!data) continue;
      const cal = parseICal(data.textContent);
      const m = master(cal);
      if (!m) continue;
      const summary = prop(m, 'SUMMARY') ? textValue(prop(m, 'SUMMARY').value) : '';
      if (needle && !summary.toLocaleLowerCase().includes(needle)) continue;
      const start = prop(m, 'DTSTART');
      const parsed = parseDate(start);
      const ids = new Set();
      for (const ev of events(cal)) {
        for (const a of attachments(ev)) if (a.managedId) ids.add(a.managedId);
      }
      out.push({
        href: r.href,
        summary,
        start,
        sort: parsed ? parsed.date.getTime() : 0,
        recurring: isRecurring(cal),
        count: ids.size,
      });
    }
    out.sort((a, b) => a.sort - b.sort || a.summary.localeCompare(b.summary));
    return out;
  }

  async function loadCalendars() {
    setStatus('Signing in…');
    const principal = await findPrincipal();
    const { homes, name } = await findHomes(principal);
    const segments = principal.split('/').filter(Boolean);
    $('account').textContent = `Signed in as ${name || decodeURIComponent(segments[segments.length - 1] || principal)}`;
    let calendars = [];
    for (const home of homes) calendars = calendars.concat(await findCalendars(home));
    state.calendars = calendars;
    const select = $('calendar');
    select.replaceChildren(...calendars.map((c, i) => el('option', { value: String(i), 'data-href': c.href, text: c.name })));
    $('calendar-section').hidden = false;
    if (!calendars.length) {
      setStatus('No calendars with events were found in your calendar home.', true);
      return;
    }
    setStatus('');
    await chooseCalendar(0);
  }

  async function chooseCalendar(index) {
    state.calendar = state.calendars[index];
    const c = state.calendar;
    const limits = [];
    if (c.maxSize !== null) limits.push(`files up to ${formatSize(c.maxSize)}`);
    if (c.maxCount !== null) limits.push(`at most ${c.maxCount} per event`);
    $('limits').textContent = limits.length ? `Attachments: ${limits.join(', ')}.` : '';
    $('events-section').hidden = false;
    $('event-section').hidden = true;
    state.event = null;
    await search();
  }

  async function search() {
    const q = $('q').value.trim();
    const from = startOf($('from').value);
    setStatus('Searching…');
    // Only the latest search may fill the list (a calendar change starts another).
    const mine = ++state.searches;
    const found = await queryEvents(state.calendar, q, from);
    if (mine !== state.searches) return;
    const list = $('events');
    const shown = found.slice(0, MAX_LISTED);
    list.replaceChildren(...shown.map((ev) => {
      const details = [formatWhen(ev.start)];
      if (ev.recurring) details.push('repeats');
      if (ev.count) details.push(ev.count === 1 ? '1 attachment' : `${ev.count} attachments`);
      const button = el('button', {
        type: 'button',
        'data-href': ev.href,
        onclick: () => openEvent(ev.href, true).catch(fail),
      }, el('span', { class: 'title', text: ev.summary || '(no title)' }),
      el('span', { class: 'when', text: details.join(' · ') }));
      return el('li', {}, button);
    }));
    const what = `from ${from.toLocaleDateString()}${q ? ` matching “${q}”` : ''}`;
    let note = `No events ${what}.`;
    if (found.length > shown.length) {
      note = `The first ${shown.length} of ${found.length} events ${what}, earliest first; search to narrow them down.`;
    } else if (found.length) {
      note = `${found.length} event${found.length === 1 ? '' : 's'} ${what}, earliest first.`;
    }
    $('events-note').textContent = note;
    setStatus('');
    markCurrent();
  }

  function markCurrent() {
    for (const b of $('events').querySelectorAll('button')) {
      b.setAttribute('aria-current', state.event && b.dataset.href === state.event.href ? 'true' : 'false');
    }
  }

  // ---- one event ------------------------------------------------------------------

  async function fetchEvent(href) {
    const resp = await fetch(url(href), { credentials: 'same-origin', cache: 'no-store' });
    if (resp.status === 401) throw new SignInError('sign-in needed');
    if (!resp.ok) throw new Error(`reading the event failed (${resp.status})`);
    const text = await resp.text();
    return { href, etag: resp.headers.get('ETag'), text, cal: parseICal(text) };
  }

  async function openEvent(href, focus) {
    setStatus('Opening the event…');
    state.event = await fetchEvent(href);
    state.rid = '';
    state.occurrences = null;
    $('uploads').replaceChildren();
    await loadOccurrences();
    render();
    $('event-section').hidden = false;
    markCurrent();
    setStatus('');
    if (focus) $('event-title').focus();
  }

  async function reloadEvent() {
    state.event = await fetchEvent(state.event.href);
    await loadOccurrences();
    render();
  }

  // The upcoming occurrences of a recurring event and each one's attachments, from a
  // calendar-query REPORT with expand (RFC 4791 §9.6.5) for this UID.
  async function loadOccurrences() {
    const cal = state.event.cal;
    if (!isRecurring(cal)) {
      state.occurrences = null;
      return;
    }
    const m = master(cal);
    const uid = prop(m, 'UID') ? prop(m, 'UID').value : '';
    const from = new Date(new Date().setHours(0, 0, 0, 0));
    const to = new Date(from.getTime() + 366 * 86400000);
    const body = '<?xml version="1.0" encoding="utf-8"?>' +
      '<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">' +
      `<D:prop><C:calendar-data><C:expand start="${compactUtc(from)}" end="${compactUtc(to)}"/></C:calendar-data></D:prop>` +
      '<C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">' +
      `<C:time-range start="${compactUtc(from)}" end="${compactUtc(to)}"/>` +
      `<C:prop-filter name="UID"><C:text-match collation="i;octet">${xmlEscape(uid)}</C:text-match></C:prop-filter>` +
      '</C:comp-filter></C:comp-filter></C:filter></C:calendar-query>';
    const occurrences = new Map();
    try {
      const resp = await dav('REPORT', state.calendar.href, body, { Depth: '1' });
      if (resp.status === 207) {
        const doc = parseXml(await resp.text());
        for (const r of multistatus(doc, resp.url)) {
          if (r.href !== state.event.href) continue;
          const data = r.prop && child(r.prop, CAL, 'calendar-data');
          for (const ev of events(data ? parseICal(data.textContent) : null)) {
            const rid = prop(ev, 'RECURRENCE-ID');
            if (rid && occurrences.size < 100) occurrences.set(rid.value.trim(), ev);
          }
        }
      }
    } catch (e) {
      if (e instanceof SignInError) throw e;
    }
    // Without an expansion (a server without expand, or nothing upcoming), the
    // overridden instances are still occurrences to choose. (With one, they are in it,
    // in UTC; their own RECURRENCE-ID text may differ, e.g. TZID-local.)
    if (!occurrences.size) {
      for (const ev of events(cal)) {
        const rid = prop(ev, 'RECURRENCE-ID');
        if (rid) occurrences.set(rid.value.trim(), ev);
      }
    }
    state.occurrences = occurrences;
    if (state.rid && !occurrences.has(state.rid)) state.rid = '';
  }

  function currentAttachments() {
    const cal = state.event.cal;
    if (state.rid && state.occurrences && state.occurrences.has(state.rid)) {
      return attachments(state.occurrences.get(state.rid));
    }
    return attachments(master(cal));
  }

  function render() {
    const cal = state.event.cal;
    const m = master(cal);
    $('event-title').textContent = m && prop(m, 'SUMMARY') ? textValue(prop(m, 'SUMMARY').value) : '(no title)';
    const when = m ? formatWhen(prop(m, 'DTSTART')) : '';
    $('event-when').textContent = isRecurring(cal) ? `${when} · repeats` : when;

    const row = $('occurrence-row');
    const select = $('occurrence');
    if (state.occurrences) {
      row.hidden = false;
      const options = [el('option', { value: '', text: 'All occurrences' })];
      for (const rid of Array.from(state.occurrences.keys()).sort()) {
        options.push(el('option', { value: rid, text: `Only ${formatRid(rid)}` }));
      }
      select.replaceChildren(...options);
      select.value = state.rid;
    } else {
      row.hidden = true;
    }

    const list = $('attachments');
    const items = currentAttachments();
    list.replaceChildren(...items.map(attachmentItem));
    $('no-attachments').hidden = items.length > 0;
  }

  function attachmentItem(a) {
    const name = a.filename || (a.binary ? 'inline file' : a.uri);
    const href = a.binary ? null : downloadHref(a.uri);
    const meta = [formatSize(a.size), a.type].filter(Boolean).join(' · ');
    const link = href
      ? el('a', { href, download: a.filename || true, text: name })
      : el('span', { text: name });
    const info = el('div', { class: 'name' }, link,
      el('span', { class: 'meta', text: a.managedId ? meta : `${meta ? meta + ' · ' : ''}not managed by this server` }));
    const li = el('li', { class: 'attachment', 'data-managed-id': a.managedId || '', 'data-filename': name }, info);
    if (a.managedId) {
      const replace = el('input', {
        type: 'file',
        class: 'visually-hidden replace-input',
        'aria-label': `Replace ${name}`,
        onchange: (e) => {
          const file = e.target.files[0];
          e.target.value = '';
          if (file) replaceAttachment(a, file).catch(fail);
        },
      });
      const replaceLabel = el('label', { class: 'button' }, replace, 'Replace…');
      const remove = el('button', {
        type: 'button',
        class: 'danger remove',
        'aria-label': `Remove ${name}`,
        onclick: () => removeAttachment(a).catch(fail),
      }, 'Remove');
      li.append(el('div', { class: 'actions' }, replaceLabel, remove));
    }
    return li;
  }

  // ---- the attachment POST (RFC 8607 §3.4-3.6) ----------------------------------

  function contentDisposition(name) {
    const ascii = name.replace(/[^\x20-\x7e]|["\\]/g, '_');
    const star = encodeURIComponent(name).replace(/['()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
    return `attachment; filename="${ascii}"; filename*=UTF-8''${star}`;
  }

  function post(action, opts, onProgress) {
    const target = url(state.event.href);
    target.searchParams.set('action', action);
    if (opts.managedId) target.searchParams.set('managed-id', opts.managedId);
    if (opts.rid) target.searchParams.set('rid', opts.rid);
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open('POST', target.href);
      xhr.setRequestHeader('Prefer', 'return=representation');
      if (opts.ifMatch) xhr.setRequestHeader('If-Match', opts.ifMatch);
      if (opts.file) {
        xhr.setRequestHeader('Content-Type', opts.file.type || 'application/octet-stream');
        xhr.setRequestHeader('Content-Disposition', contentDisposition(opts.file.name));
        if (onProgress) {
          xhr.upload.addEventListener('progress', (e) => {
            if (e.lengthComputable) onProgress(e.loaded, e.total);
          });
        }
      }
      xhr.addEventListener('load', () => resolve({
        status: xhr.status,
        etag: xhr.getResponseHeader('ETag'),
        type: xhr.getResponseHeader('Content-Type') || '',
        text: xhr.responseText,
      }));
      xhr.addEventListener('error', () => reject(new Error('the connection to the server failed')));
      xhr.addEventListener('abort', () => reject(new Error('the upload was cancelled')));
      xhr.send(opts.file || null);
    });
  }

  // The names of the precondition elements in a DAV:error body (RFC 8607 §3.11).
  function errorNames(reply) {
    if (!/xml/.test(reply.type)) return [];
    const doc = parseXml(reply.text);
    if (!doc || doc.documentElement.localName !== 'error') return [];
    return Array.from(doc.documentElement.children).map((c) => c.localName);
  }

  function explain(reply, what) {
    const names = errorNames(reply);
    const has = (n) => names.includes(n);
    const c = state.calendar || {};
    if (has('max-attachment-size')) {
      return `the file is too large for this server${c.maxSize !== null && c.maxSize !== undefined ? ` (at most ${formatSize(c.maxSize)})` : ''}`;
    }
    if (has('max-attachments-per-resource') || has('max-attachments')) {
      return `this event already has the most attachments allowed${c.maxCount !== null && c.maxCount !== undefined ? ` (${c.maxCount})` : ''}`;
    }
    if (has('valid-attachment-add') || has('valid-attachment-update') || has('valid-attachment-remove')) {
      return `this is your copy of someone else's invitation: only the organizer can ${what} attachments`;
    }
    if (has('valid-managed-id') || has('valid-managed-id-parameter')) {
      return 'the attachment is no longer in this event (replaced or removed meanwhile); the event was reloaded';
    }
    if (has('valid-rid') || has('valid-rid-parameter')) return 'that occurrence is not part of this event';
    if (has('max-resource-size') || has('max-instances')) return 'this event is too large to be changed here';
    if (has('valid-calendar-data')) return 'this event cannot be read as iCalendar';
    if (has('need-privileges')) return 'you may not change this event';
    switch (reply.status) {
      case 401: return 'you are not signed in (reload the page to sign in)';
      case 403: return 'you may not change this event';
      case 404: return 'the event no longer exists';
      case 409: return 'the event kept changing while the change was being saved; please try again';
      case 412: return 'the event was changed elsewhere meanwhile; it was reloaded, please try again';
      case 413: return 'the file is too large for this server';
      case 503: return 'the server is busy; please try again in a moment';
      case 507: return 'the server has no room for this file';
      default: {
        const first = (reply.text || '').split('\n')[0].slice(0, 200);
        return `the server answered ${reply.status}${first && !/^</.test(first) ? `: ${first}` : ''}`;
      }
    }
  }

  // Applies a successful reply: the representation it carries, else a fresh GET.
  async function applyReply(reply) {
    if (reply.text && /text\/calendar/.test(reply.type)) {
      const text = reply.text;
      state.event = { href: state.event.href, etag: reply.etag, text, cal: parseICal(text) };
      await loadOccurrences();
      render();
    } else {
      await reloadEvent();
    }
    markCurrent();
  }

  async function afterFailure(reply) {
    if ([404, 409, 412].includes(reply.status) || errorNames(reply).some((n) => n.startsWith('valid-managed-id'))) {
      try {
        await reloadEvent();
      } catch (e) {
        // The message for the failure itself is what the user needs.
      }
    }
  }

  // Uploads run one after the other: each commits a new version of the event.
  let queue = Promise.resolve();

  function addFiles(files) {
    if (!state.event || !files.length) return;
    const href = state.event.href;
    const rid = state.rid;
    for (const file of files) {
      const progress = el('progress', { max: '100', value: '0', 'aria-label': `Upload of ${file.name}` });
      const msg = el('span', { class: 'msg', text: 'waiting…' });
      const li = el('li', { 'data-state': 'waiting', 'data-filename': file.name },
        el('span', { class: 'name', text: `${file.name} (${formatSize(file.size)})` }), progress, msg);
      $('uploads').append(li);
      queue = queue.then(() => uploadOne(href, rid, file, li, progress, msg));
    }
  }

  async function uploadOne(href, rid, file, li, progress, msg) {
    if (!state.event || state.event.href !== href) {
      li.dataset.state = 'error';
      msg.textContent = 'not uploaded: another event was opened';
      return;
    }
    li.dataset.state = 'uploading';
    msg.textContent = 'uploading…';
    try {
      const reply = await post('attachment-add', { file, rid }, (loaded, total) => {
        progress.value = total ? Math.round((loaded / total) * 100) : 100;
      });
      if (reply.status >= 200 && reply.status < 300) {
        progress.value = 100;
        li.dataset.state = 'done';
        msg.textContent = rid ? `added to ${formatRid(rid)}` : 'added';
        await applyReply(reply);
      } else {
        li.dataset.state = 'error';
        msg.textContent = `not added: ${explain(reply, 'add')}`;
        await afterFailure(reply);
      }
    } catch (e) {
      li.dataset.state = 'error';
      msg.textContent = `not added: ${e.message}`;
      if (e instanceof SignInError) signInNeeded();
    }
  }

  async function replaceAttachment(a, file) {
    const name = a.filename || 'the attachment';
    const progress = el('progress', { max: '100', value: '0', 'aria-label': `Upload of ${file.name}` });
    const msg = el('span', { class: 'msg', text: 'waiting…' });
    const li = el('li', { 'data-state': 'waiting', 'data-filename': file.name },
      el('span', { class: 'name', text: `${file.name} replacing ${name}` }), progress, msg);
    $('uploads').append(li);
    queue = queue.then(async () => {
      li.dataset.state = 'uploading';
      msg.textContent = 'uploading…';
      try {
        const reply = await post('attachment-update', { file, managedId: a.managedId, ifMatch: state.event.etag },
          (loaded, total) => { progress.value = total ? Math.round((loaded / total) * 100) : 100; });
        if (reply.status >= 200 && reply.status < 300) {
          progress.value = 100;
          li.dataset.state = 'done';
          msg.textContent = 'replaced';
          await applyReply(reply);
        } else {
          li.dataset.state = 'error';
          msg.textContent = `not replaced: ${explain(reply, 'replace')}`;
          await afterFailure(reply);
        }
      } catch (e) {
        li.dataset.state = 'error';
        msg.textContent = `not replaced: ${e.message}`;
      }
    });
    await queue;
  }

  function confirmDialog(text) {
    const dialog = $('confirm');
    $('confirm-text').textContent = text;
    return new Promise((resolve) => {
      const done = (answer) => {
        dialog.removeEventListener('close', onClose);
        $('confirm-ok').removeEventListener('click', onOk);
        $('confirm-cancel').removeEventListener('click', onCancel);
        if (dialog.open) dialog.close();
        resolve(answer);
      };
      const onOk = () => done(true);
      const onCancel = () => done(false);
      const onClose = () => done(false);
      dialog.addEventListener('close', onClose);
      $('confirm-ok').addEventListener('click', onOk);
      $('confirm-cancel').addEventListener('click', onCancel);
      dialog.showModal();
      $('confirm-cancel').focus();
    });
  }

  async function removeAttachment(a) {
    const name = a.filename || 'this attachment';
    const scope = state.rid ? ` from the occurrence of ${formatRid(state.rid)}` : '';
    if (!(await confirmDialog(`Remove “${name}”${scope}? Its download link stops working.`))) return;
    const rid = state.rid;
    await (queue = queue.then(async () => {
      setStatus(`Removing ${name}…`);
      const reply = await post('attachment-remove', { managedId: a.managedId, rid, ifMatch: state.event.etag });
      if (reply.status >= 200 && reply.status < 300) {
        await applyReply(reply);
        setStatus(`Removed ${name}.`);
        // The row and its button are gone: keep the keyboard focus in the event.
        $('attachments-heading').focus();
      } else {
        setStatus(`${name} was not removed: ${explain(reply, 'remove')}.`, true);
        await afterFailure(reply);
      }
    }).catch(fail));
  }

  // ---- wiring -------------------------------------------------------------------

  function signInNeeded() {
    setStatus('Sign-in needed: the calendar server did not accept your password, or the browser did not ask for one. Reload the page to sign in again.', true);
  }

  function fail(e) {
    if (e instanceof SignInError) {
      signInNeeded();
    } else {
      setStatus(`Something went wrong: ${e.message}`, true);
    }
  }

  function init() {
    $('from').value = todayInput();
    $('calendar').addEventListener('change', (e) => chooseCalendar(Number(e.target.value)).catch(fail));
    $('search').addEventListener('submit', (e) => {
      e.preventDefault();
      search().catch(fail);
    });
    $('occurrence').addEventListener('change', (e) => {
      state.rid = e.target.value;
      render();
    });
    $('add-files').addEventListener('change', (e) => {
      const files = Array.from(e.target.files);
      e.target.value = '';
      addFiles(files);
    });
    const drop = $('drop');
    const section = $('event-section');
    section.addEventListener('dragover', (e) => {
      if (!e.dataTransfer || !Array.from(e.dataTransfer.types).includes('Files')) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = 'copy';
      drop.classList.add('over');
    });
    section.addEventListener('dragleave', (e) => {
      if (!section.contains(e.relatedTarget)) drop.classList.remove('over');
    });
    section.addEventListener('drop', (e) => {
      e.preventDefault();
      drop.classList.remove('over');
      addFiles(Array.from(e.dataTransfer.files));
    });
    loadCalendars().catch(fail);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
