// The session and every call to the API: the bearer token is kept in
// memory and in sessionStorage (this tab only, gone when it closes), renewed
// with the refresh token shortly before it expires or when a call answers
// 401, and dropped on sign-out.

const KEY = 'console.session';
const listeners = new Set();
let session = load();
let refreshing = null;

function load() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY) || 'null');
  } catch {
    return null;
  }
}

function store(next) {
  session = next;
  if (next) sessionStorage.setItem(KEY, JSON.stringify(next));
  else sessionStorage.removeItem(KEY);
  for (const fn of listeners) fn(session);
}

/** Calls `fn(session)` whenever the session changes (null: signed out). */
export function onSession(fn) {
  listeners.add(fn);
}

/** The current session, or null. */
export function current() {
  return session;
}

/** An answer that was not 2xx, with the problem+json body's words. */
export class ApiError extends Error {
  constructor(status, problem) {
    const params = (problem && problem.invalid_params) || [];
    const detail = (problem && (problem.detail || problem.title)) || `HTTP ${status}`;
    const more = params.map((p) => `${p.name} ${p.reason}`).join('; ');
    super(more ? `${detail}: ${more}` : detail);
    this.status = status;
    this.problem = problem;
    this.title = (problem && problem.title) || `HTTP ${status}`;
  }
}

async function parse(resp) {
  const text = await resp.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { detail: text };
  }
}

function fromLogin(body, email) {
  return {
    email,
    access_token: body.access_token,
    refresh_token: body.refresh_token,
    expires_at: Date.now() + body.expires_in * 1000,
    user_id: body.user_id,
    organization_id: body.organization_id,
    role: body.role,
    must_change_password: body.must_change_password,
  };
}

/** Signs in; the session it opens (maybe one that must change its password). */
export async function login(email, password) {
  const resp = await fetch('/api/v1/auth/login', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password }),
  });
  const body = await parse(resp);
  if (!resp.ok) throw new ApiError(resp.status, body);
  store(fromLogin(body, email));
  return session;
}

/** Replaces a temporary password, then signs in again with the new one
 * (a password change ends every earlier session). */
export async function changePassword(currentPassword, newPassword) {
  const s = session;
  await call(`/api/v1/admin/users/${encodeURIComponent(s.user_id)}/password`, {
    method: 'PATCH',
    body: { password: newPassword, current_password: currentPassword },
    retry: false,
  });
  return login(s.email, newPassword);
}

async function refresh() {
  if (!session || !session.refresh_token) throw new ApiError(401, { detail: 'signed out' });
  if (!refreshing) {
    const token = session.refresh_token;
    refreshing = (async () => {
      try {
        const resp = await fetch('/api/v1/auth/refresh', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ refresh_token: token }),
        });
        const body = await parse(resp);
        if (!resp.ok) {
          store(null);
          throw new ApiError(resp.status, body);
        }
        store(fromLogin(body, session.email));
      } finally {
        refreshing = null;
      }
    })();
  }
  return refreshing;
}

/** A bearer token that is valid for at least another 30 s. */
async function token() {
  if (!session) throw new ApiError(401, { detail: 'signed out' });
  if (session.expires_at - Date.now() < 30000 && !session.must_change_password) await refresh();
  return session.access_token;
}

/** Calls the API; resolves with the JSON body, rejects with an ApiError.
 * A 401 is answered once by refreshing the token and calling again. */
export async function call(path, { method = 'GET', body, retry = true, signal } = {}) {
  const headers = { authorization: `Bearer ${await token()}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  if (resp.status === 401 && retry && session && session.refresh_token) {
    await refresh();
    return call(path, { method, body, retry: false, signal });
  }
  const parsed = await parse(resp);
  if (resp.status === 401) store(null);
  if (!resp.ok) throw new ApiError(resp.status, parsed);
  return parsed;
}

/** Fetches a file with the bearer token and saves it through a blob link
 * (a plain link cannot carry the token); the file name the server gave, or
 * `fallback`. */
export async function download(path, fallback, { retry = true } = {}) {
  const resp = await fetch(path, { headers: { authorization: `Bearer ${await token()}` } });
  if (resp.status === 401 && retry && session && session.refresh_token) {
    await refresh();
    return download(path, fallback, { retry: false });
  }
  if (!resp.ok) throw new ApiError(resp.status, await parse(resp));
  const disposition = resp.headers.get('content-disposition') || '';
  const named = disposition.match(/filename\*?=(?:UTF-8'')?"?([^";]+)"?/i);
  const name = named ? decodeURIComponent(named[1]) : fallback;
  const url = URL.createObjectURL(await resp.blob());
  const link = document.createElement('a');
  link.href = url;
  link.download = name;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  return name;
}

/** Ends the session on the server (best effort) and here. */
export async function logout() {
  const s = session;
  store(null);
  if (!s) return;
  try {
    await fetch('/api/v1/auth/logout', {
      method: 'POST',
      headers: { authorization: `Bearer ${s.access_token}` },
    });
  } catch {
    // Signed out here either way.
  }
}

/** Reads a server-sent event stream with fetch (EventSource cannot send a
 * bearer token) and calls `onEvent(name, data)` for each event until the
 * stream ends or `signal` aborts. Rejects when the stream cannot be opened. */
export async function stream(path, onEvent, signal) {
  const resp = await fetch(path, {
    headers: { authorization: `Bearer ${await token()}`, accept: 'text/event-stream' },
    signal,
  });
  if (!resp.ok || !resp.body) throw new ApiError(resp.status, await parse(resp));
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, '');
      let name = 'message';
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith('event:')) name = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (data.length) {
        try {
          onEvent(name, JSON.parse(data.join('\n')));
        } catch {
          // A malformed event is skipped; the next one replaces it.
        }
      }
    }
  }
}

/** Query string from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, v);
  }
  const text = q.toString();
  return text ? `?${text}` : '';
}
