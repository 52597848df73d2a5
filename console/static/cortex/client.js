// Cortex client library: a thin client of the public contract (CONTRACT.md), as plain ES modules.
//
//   import { CortexClient } from '/static/cortex/client.js';
//   const cortex = new CortexClient();
//   cortex.on('state', (state) => ...);            // 'signed_out' | 'connecting' | 'live' | 'reconnecting'
//   cortex.on('event', (event, meta) => ...);      // every event once, in order; meta.missed: from before this page
//   if (!(await cortex.resume())) await cortex.login(email, password);
//   cortex.connect();
//
// Where the tokens live, and why: only in this page's memory. Nothing is written to localStorage,
// sessionStorage, IndexedDB or a readable cookie, so a script that got into the page cannot read a
// token from storage after the page is gone, and no token outlives the last open tab. Tabs of one
// origin share the session over a BroadcastChannel, and exactly one of them (the holder of a Web
// Lock) ever refreshes: refresh tokens rotate and reusing a rotated one revokes the whole family, so
// two tabs refreshing the same token would sign the user out everywhere. Without Web Locks (an
// insecure context) a tab keeps its session to itself instead. The cost: closing the last tab signs
// out. Only the last event id is stored (localStorage, not a secret), so a reopened page resumes the
// stream where it stopped and shows what was missed.

export const STATES = Object.freeze({
  SIGNED_OUT: 'signed_out',
  CONNECTING: 'connecting',
  LIVE: 'live',
  RECONNECTING: 'reconnecting',
});

const CHANNEL_NAME = 'cortex-session';
const LEADER_LOCK = 'cortex-session-leader';
const TERMINAL_TURN_EVENTS = new Set(['assistant.completed', 'assistant.failed', 'assistant.cancelled']);

/** Every refusal of the API, typed by the envelope's stable `code` (CONTRACT.md "Errors"). */
export class CortexError extends Error {
  constructor({ status = 0, code = 'network_error', message = 'The server could not be reached.', fields = null, retryAfter = null } = {}) {
    super(message);
    this.name = 'CortexError';
    this.status = status;
    this.code = code;
    this.fields = fields;
    this.retryAfter = retryAfter;
  }

  /** Whether the same request may succeed later unchanged (network, 429, 5xx except 501). */
  get retryable() {
    return this.status === 0 || this.status === 429 || (this.status >= 500 && this.status !== 501);
  }

  static async fromResponse(response) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    const error = body && typeof body === 'object' && body.error ? body.error : {};
    const retry = Number(response.headers.get('Retry-After'));
    return new CortexError({
      status: response.status,
      code: typeof error.code === 'string' ? error.code : `http_${response.status}`,
      message: typeof error.message === 'string' ? error.message : response.statusText || `HTTP ${response.status}`,
      fields: error.fields && typeof error.fields === 'object' ? error.fields : null,
      retryAfter: Number.isFinite(retry) && retry >= 0 ? retry : null,
    });
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function newId() {
  if (globalThis.crypto && typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** A tiny event emitter: `on` returns the function that removes the listener. */
class Emitter {
  constructor() {
    this._listeners = new Map();
  }

  on(name, listener) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(listener);
    return () => this._listeners.get(name)?.delete(listener);
  }

  emit(name, ...args) {
    for (const listener of [...(this._listeners.get(name) || [])]) {
      try {
        listener(...args);
      } catch (error) {
        console.error(`cortex: a '${name}' listener failed`, error);
      }
    }
  }
}

/**
 * The client: a session (login, refresh shared by tabs), typed requests, one event stream, turns,
 * and the resources of the contract. Events: 'session' (session | null), 'state' (a STATES value),
 * 'event' (event, {missed}), 'reset' (), 'turn' (turn), 'error' (CortexError).
 */
export class CortexClient extends Emitter {
  constructor({ baseUrl = '', storage = globalThis.localStorage, refreshMarginSeconds = 60, cookieRenewSeconds = 240 } = {}) {
    super();
    this.baseUrl = baseUrl.replace(/\/$/, '');
    this.storage = storage;
    this.refreshMarginSeconds = refreshMarginSeconds;
    this.cookieRenewSeconds = cookieRenewSeconds;
    this.session = null; // {accessToken, accessExpiresAt, refreshToken, issuedAt, lifetimeMs, claims}
    this.state = STATES.SIGNED_OUT;
    this.turns = new Map();
    this._tabId = newId();
    this._leader = false;
    this._refreshing = null;
    this._refreshTimer = null;
    this._sessionWaiters = [];
    this._stream = null; // {source, id}
    this._wantStream = false;
    this._lastId = null;
    this._seen = new Set();
    this._seenOrder = [];
    this._pageStartedAt = Date.now();
    this._reopenTimer = null;
    this._cookieTimer = null;
    this._backoffMs = 500;
    this._shared = Boolean(globalThis.BroadcastChannel && globalThis.navigator?.locks);
    if (this._shared) {
      this._channel = new BroadcastChannel(CHANNEL_NAME);
      this._channel.onmessage = (message) => this._onTabMessage(message.data);
      navigator.locks.request(LEADER_LOCK, () => new Promise((release) => {
        this._leader = true;
        this._releaseLeader = release;
        this._scheduleRefresh();
      }));
    } else {
      this._leader = true; // alone: this tab refreshes its own session
    }
  }

  // ----- session --------------------------------------------------------------------------------

  /** The signed-in user's claims ({oid, name, email}), or null. */
  get user() {
    return this.session ? this.session.claims : null;
  }

  /** Adopt the session of another open tab of this origin, if there is one (waits `timeoutMs`). */
  async resume({ timeoutMs = 400 } = {}) {
    if (this.session) return true;
    if (!this._shared) return false;
    const adopted = new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this._sessionWaiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    this._post({ type: 'hello' });
    return adopted;
  }

  /** Password sign-in (JSON `{email, password}`): 200 is a session; 401 is `invalid_credentials`. */
  async login(email, password) {
    const body = await this._fetchJson('POST', '/auth/login', { body: { email, password }, auth: false });
    this._adopt(this._sessionFrom(body), { broadcast: true });
    return this.user;
  }

  /** Identity providers (OIDC), each `{name, login_url}`; [] where the server offers none. */
  async providers() {
    try {
      const body = await this._fetchJson('GET', '/auth/providers', { auth: false });
      return Array.isArray(body.providers) ? body.providers : [];
    } catch (error) {
      if (error.status === 404) return [];
      throw error;
    }
  }

  /** Where to send the browser to sign in with `provider`; it comes back to `returnTo?login_code=`. */
  providerLoginUrl(provider, returnTo = location.pathname) {
    const url = new URL(provider.login_url, location.origin);
    url.searchParams.set('return_to', returnTo);
    return url.pathname + url.search;
  }

  /**
   * Take `login_code` from the URL, removing it from the address bar and history (so a reload or
   * a shared link never spends it again). Returns the code, or null when the URL holds none.
   */
  takeLoginCode(url = location.href) {
    const parsed = new URL(url);
    const code = parsed.searchParams.get('login_code');
    if (!code) return null;
    parsed.searchParams.delete('login_code');
    history.replaceState(history.state, '', parsed.pathname + parsed.search + parsed.hash);
    return code;
  }

  /**
   * Redeem a provider sign-in's `login_code` once and adopt its session on every tab. The server
   * only accepts it from the browser that started that sign-in (its HttpOnly sign-in cookie).
   * A page that already has a session must ask the person before calling this (a code from a link
   * someone sent would otherwise replace it).
   */
  async redeemLoginCode(code) {
    const body = await this._fetchJson('POST', '/auth/login-code', { body: { login_code: code }, auth: false });
    this._adopt(this._sessionFrom(body), { broadcast: true });
    return this.user;
  }

  /** Finish a provider sign-in in a page with no session: take the code from the URL and redeem it. */
  async completeProviderLogin(url = location.href) {
    const code = this.takeLoginCode(url);
    return code ? this.redeemLoginCode(code) : null;
  }

  /** Sign out on every tab of this origin; the refresh token dies server side. */
  async logout() {
    const session = this.session;
    this._post({ type: 'signout' });
    this._dropSession();
    if (session) {
      try {
        await fetch(this.baseUrl + '/auth/logout', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ refresh_token: session.refreshToken }),
          credentials: 'same-origin',
        });
      } catch {
        // Offline: the refresh token expires by itself; this device has forgotten it already.
      }
    }
  }

  /** A valid access token, refreshed first when it is about to expire (shared by tabs). */
  async accessToken({ minValiditySeconds = 5 } = {}) {
    if (!this.session) throw new CortexError({ status: 401, code: 'not_authenticated', message: 'Signed out.' });
    if (this.session.accessExpiresAt - Date.now() > minValiditySeconds * 1000) return this.session.accessToken;
    await this._refreshShared(this.session.accessToken);
    return this.session.accessToken;
  }

  _sessionFrom(body) {
    const lifetimeMs = Math.max(1, Number(body.expires_in) || 900) * 1000;
    const now = Date.now();
    return {
      accessToken: body.access_token,
      refreshToken: body.refresh_token,
      accessExpiresAt: now + lifetimeMs,
      lifetimeMs,
      issuedAt: now,
      claims: body.claims || {},
    };
  }

  _adopt(session, { broadcast }) {
    const before = this.session;
    const changedUser = !before || before.claims.oid !== session.claims.oid;
    this.session = session;
    if (changedUser) {
      this._resetStreamPosition();
      this.turns.clear();
    }
    if (broadcast) this._post({ type: 'session', session });
    this._scheduleRefresh();
    for (const waiter of this._sessionWaiters.splice(0)) waiter();
    this.emit('session', this.user);
    if (this._wantStream && (changedUser || before?.accessToken !== session.accessToken)) {
      // A stream ends with the token that opened it: open its successor now, while it still runs.
      this._openStream();
    }
  }

  _dropSession() {
    this.session = null;
    clearTimeout(this._refreshTimer);
    this._closeStream();
    this._wantStream = false;
    this.turns.clear();
    this._setState(STATES.SIGNED_OUT);
    this.emit('session', null);
  }

  _post(message) {
    if (this._channel) this._channel.postMessage({ ...message, from: this._tabId });
  }

  _onTabMessage(message) {
    if (!message || message.from === this._tabId) return;
    if (message.type === 'hello' && this.session) {
      this._post({ type: 'session', session: this.session });
    } else if (message.type === 'session' && message.session) {
      const mine = this.session;
      if (!mine || message.session.issuedAt > mine.issuedAt || mine.claims.oid !== message.session.claims.oid) {
        this._adopt(message.session, { broadcast: false });
      }
    } else if (message.type === 'refresh' && this._leader && this.session) {
      if (this.session.accessToken === message.stale) this._refreshNow().catch(() => {});
      else this._post({ type: 'session', session: this.session });
    } else if (message.type === 'signout' && this.session) {
      this._dropSession();
    }
  }

  _scheduleRefresh() {
    clearTimeout(this._refreshTimer);
    if (!this._leader || !this.session) return;
    const { accessExpiresAt, lifetimeMs } = this.session;
    const margin = Math.min(this.refreshMarginSeconds * 1000, lifetimeMs / 4);
    const delay = Math.max(0, accessExpiresAt - margin - Date.now());
    this._refreshTimer = setTimeout(() => this._refreshNow().catch(() => {}), delay);
  }

  /** Refresh from whichever tab leads; a follower asks the leader and waits for the new session. */
  async _refreshShared(staleAccessToken) {
    if (this._leader) return this._refreshNow();
    const renewed = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new CortexError({ code: 'refresh_timeout', message: 'No tab could refresh the session.' })), 15000);
      this._sessionWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    this._post({ type: 'refresh', stale: staleAccessToken });
    return renewed;
  }

  /** The single flight of this (leading) tab: one POST /auth/refresh at a time. */
  _refreshNow() {
    if (!this._refreshing) {
      this._refreshing = (async () => {
        const session = this.session;
        if (!session) return;
        try {
          const body = await this._fetchJson('POST', '/auth/refresh', { body: { refresh_token: session.refreshToken }, auth: false });
          if (this.session === session) this._adopt(this._sessionFrom(body), { broadcast: true });
        } catch (error) {
          if (error.status === 401) {
            this._post({ type: 'signout' });
            this._dropSession();
          } else {
            // Offline or the server is busy: try again soon, the access token may still be valid.
            clearTimeout(this._refreshTimer);
            this._refreshTimer = setTimeout(() => this._refreshNow().catch(() => {}), 5000);
          }
          throw error;
        } finally {
          this._refreshing = null;
        }
      })();
    }
    return this._refreshing;
  }

  // ----- requests ---------------------------------------------------------------------------------

  /**
   * One API call: JSON in and out, the access token attached (refreshed first if needed, and once
   * more after a 401), every refusal thrown as a CortexError. 204 answers null.
   */
  async request(method, path, { body, query, headers = {}, auth = true } = {}) {
    return this._fetchJson(method, path, { body, query, headers, auth });
  }

  async _fetchJson(method, path, { body, query, headers = {}, auth = true, raw = false } = {}) {
    const url = new URL(this.baseUrl + path, location.origin);
    for (const [key, value] of Object.entries(query || {})) {
      if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, value);
    }
    for (let attempt = 0; ; attempt += 1) {
      const sent = { ...headers };
      if (body !== undefined) sent['Content-Type'] = 'application/json';
      let token = null;
      if (auth) {
        token = await this.accessToken();
        sent.Authorization = `Bearer ${token}`;
      }
      let response;
      try {
        response = await fetch(url, {
          method,
          headers: sent,
          body: body === undefined ? undefined : JSON.stringify(body),
          credentials: 'same-origin',
        });
      } catch {
        throw new CortexError();
      }
      if (response.status === 401 && auth && attempt === 0 && this.session) {
        await this._refreshShared(token); // revoked or expired early: one fresh token, then once more
        continue;
      }
      if (!response.ok) throw await CortexError.fromResponse(response);
      if (raw) return response;
      if (response.status === 204) return null;
      return response.json();
    }
  }

  /**
   * `POST /input` with an Idempotency-Key: retried with the same key and body on network errors,
   * 429 and 5xx, so a retry never stores the input twice. Answers `{status, data, turn_id?}`.
   */
  async send({ content, conversationId = null, metadata = {} }, { attempts = 5, idempotencyKey = newId() } = {}) {
    const body = { content, conversation_id: conversationId, metadata };
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await this._fetchJson('POST', '/input', { body, headers: { 'Idempotency-Key': idempotencyKey } });
      } catch (error) {
        if (!(error instanceof CortexError) || !error.retryable || attempt >= attempts) throw error;
        const wait = error.retryAfter !== null ? error.retryAfter * 1000 : Math.min(8000, 250 * 2 ** attempt);
        await sleep(wait);
      }
    }
  }

  // ----- the event stream -------------------------------------------------------------------------

  /**
   * Open the user's event stream (`GET /output/stream` by EventSource, with a single-use ticket).
   * The ticket also sets the stream cookie, so EventSource's own reconnect after a network drop
   * resumes with `Last-Event-ID`; the client opens a successor when the token changes or the stream
   * ends, and renews the cookie before it expires. Events are delivered once each, in order.
   */
  connect() {
    this._wantStream = true;
    if (!this._stream) this._openStream();
  }

  disconnect() {
    this._wantStream = false;
    this._closeStream();
    if (this.session) this._setState(STATES.SIGNED_OUT === this.state ? this.state : STATES.RECONNECTING);
  }

  /** The id of the last event delivered (a string), or null. */
  get lastEventId() {
    return this._lastId;
  }

  _positionKey() {
    return this.session ? `cortex:last-event-id:${this.session.claims.oid}` : null;
  }

  _resetStreamPosition() {
    this._seen.clear();
    this._seenOrder = [];
    this._lastId = null;
    const key = this._positionKey();
    if (key && this.storage) {
      try {
        this._lastId = this.storage.getItem(key);
      } catch {
        this._lastId = null;
      }
    }
  }

  _setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.emit('state', state);
  }

  async _openStream() {
    clearTimeout(this._reopenTimer);
    if (!this.session || !this._wantStream) return;
    const generation = (this._generation = (this._generation || 0) + 1);
    if (this.state !== STATES.LIVE) this._setState(this._lastId ? STATES.RECONNECTING : STATES.CONNECTING);
    let ticket;
    try {
      ticket = await this._fetchJson('POST', '/output/ticket');
    } catch (error) {
      if (generation === this._generation) this._retryStreamLater(error);
      return;
    }
    if (generation !== this._generation || !this._wantStream || !this.session) return;
    const url = new URL(this.baseUrl + '/output/stream', location.origin);
    url.searchParams.set('ticket', ticket.ticket);
    if (this._lastId) url.searchParams.set('last_event_id', this._lastId);
    const source = new EventSource(url);
    const previous = this._stream;
    const current = { source };
    this._stream = current;
    source.onopen = () => {
      if (this._stream !== current) return;
      this._backoffMs = 500;
      if (previous) previous.source.close(); // the successor is up: overlap is de-duplicated by id
      this._setState(STATES.LIVE);
    };
    source.onmessage = (message) => this._onStreamMessage(message, current);
    source.onerror = () => {
      if (this._stream !== current) return;
      if (source.readyState === EventSource.CLOSED) {
        // Refused (the cookie expired with its token, or too many streams): a new ticket.
        this._retryStreamLater(null);
      } else {
        this._setState(STATES.RECONNECTING); // EventSource reconnects by itself, with the cookie
      }
    };
    this._scheduleCookieRenewal();
  }

  _retryStreamLater(error) {
    if (error && error.status === 401 && !this.session) return;
    this._setState(this.session ? STATES.RECONNECTING : STATES.SIGNED_OUT);
    const wait = error && error.retryAfter !== null && error.retryAfter !== undefined ? error.retryAfter * 1000 : this._backoffMs;
    this._backoffMs = Math.min(30000, this._backoffMs * 2);
    clearTimeout(this._reopenTimer);
    this._reopenTimer = setTimeout(() => this._openStream(), wait);
  }

  _scheduleCookieRenewal() {
    clearTimeout(this._cookieTimer);
    this._cookieTimer = setTimeout(async () => {
      if (!this._stream || !this.session) return;
      try {
        await this._fetchJson('POST', '/output/ticket'); // the ticket goes unused; the cookie is new
      } catch {
        // The next reconnect asks for a ticket anyway.
      }
      this._scheduleCookieRenewal();
    }, this.cookieRenewSeconds * 1000);
  }

  _closeStream() {
    clearTimeout(this._reopenTimer);
    clearTimeout(this._cookieTimer);
    this._generation = (this._generation || 0) + 1;
    if (this._stream) this._stream.source.close();
    this._stream = null;
  }

  _onStreamMessage(message, stream) {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    if (event.type === 'end') {
      // No id: the stream's credential ended. Revoked: signed out; otherwise a successor resumes.
      if (this._stream !== stream) return;
      stream.source.close();
      this._stream = null;
      if (event.reason === 'revoked') {
        this._post({ type: 'signout' });
        this._dropSession();
      } else {
        this._setState(STATES.RECONNECTING);
        this.accessToken({ minValiditySeconds: 30 }).then(() => this._openStream(), (error) => this._retryStreamLater(error));
      }
      return;
    }
    const id = message.lastEventId || (event.id !== undefined ? String(event.id) : '');
    if (id && this._isDuplicate(id)) return;
    if (id) this._remember(id);
    if (event.type === 'reset') {
      this.emit('reset');
      return;
    }
    this._trackTurn(event);
    const timestamp = Date.parse(event.timestamp || '');
    this.emit('event', event, { missed: Number.isFinite(timestamp) && timestamp < this._pageStartedAt });
  }

  _isDuplicate(id) {
    if (this._seen.has(id)) return true;
    const number = Number(id);
    const last = Number(this._lastId);
    return Number.isInteger(number) && Number.isInteger(last) && this._lastId !== null && number <= last;
  }

  _remember(id) {
    this._seen.add(id);
    this._seenOrder.push(id);
    if (this._seenOrder.length > 5000) this._seen.delete(this._seenOrder.shift());
    this._lastId = id;
    const key = this._positionKey();
    if (key && this.storage) {
      try {
        this.storage.setItem(key, id);
      } catch {
        // Storage full or refused: resuming after a reload replays more, nothing is lost.
      }
    }
  }

  // ----- turns ------------------------------------------------------------------------------------

  _trackTurn(event) {
    const turnId = event.data && event.data.turn_id;
    if (!turnId || !(event.type.startsWith('assistant.') || event.type.startsWith('tool.') || event.type.startsWith('approval.') || event.type.startsWith('question.'))) return;
    let turn = this.turns.get(turnId);
    if (!turn) {
      turn = { id: turnId, conversationId: event.conversation_id, requesterId: event.user_id, status: 'running', text: '', tools: [], inputId: null, messageId: null, error: null, reason: null };
      this.turns.set(turnId, turn);
    }
    const data = event.data;
    if (event.type === 'assistant.started') turn.inputId = data.input_id || null;
    else if (event.type === 'assistant.delta') turn.text += typeof data.text === 'string' ? data.text : '';
    else if (event.type === 'tool.call') turn.tools.push({ callId: data.call_id, expert: data.expert, tool: data.tool, arguments: data.arguments, result: undefined, error: undefined, progress: null, task: null });
    else if (event.type === 'tool.result') {
      const call = turn.tools.find((entry) => entry.callId === data.call_id);
      if (call) Object.assign(call, { result: data.result, error: data.error });
    } else if (event.type === 'tool.progress') {
      const call = turn.tools.find((entry) => entry.callId === data.call_id);
      if (call) call.progress = { progress: data.progress, total: data.total ?? null, message: data.message ?? null };
    } else if (event.type === 'tool.task') {
      const call = turn.tools.find((entry) => entry.callId === data.call_id);
      if (call) call.task = { id: data.task_id, status: data.status };
    } else if (event.type === 'approval.requested' || event.type === 'question.asked') turn.status = 'waiting';
    else if (event.type === 'approval.resolved' || event.type === 'question.answered') turn.status = 'running';
    else if (event.type === 'assistant.completed') Object.assign(turn, { status: 'completed', messageId: data.message_id, text: typeof data.content === 'string' ? data.content : turn.text });
    else if (event.type === 'assistant.failed') Object.assign(turn, { status: 'failed', error: data.error || null });
    else if (event.type === 'assistant.cancelled') Object.assign(turn, { status: 'cancelled', reason: data.reason || null });
    this.emit('turn', turn, event);
    if (TERMINAL_TURN_EVENTS.has(event.type) && this.turns.size > 200) {
      for (const [id, old] of this.turns) if (old.status !== 'running' && old.status !== 'waiting') { this.turns.delete(id); break; }
    }
  }

  /** Stop a turn (any participant): 202; a finished turn is a 409 `conflict`. */
  cancelTurn(turnId) {
    return this.request('POST', `/turns/${encodeURIComponent(turnId)}/cancel`);
  }

  getTurn(turnId) {
    return this.request('GET', `/turns/${encodeURIComponent(turnId)}`);
  }

  // ----- workspaces, conversations, messages ------------------------------------------------------

  async workspaces() {
    return (await this.request('GET', '/config/workspace')).workspaces;
  }

  async createWorkspace({ name, description = '', metadata = {} }) {
    return (await this.request('POST', '/config/workspace', { body: { name, description, metadata } })).workspace;
  }

  async updateWorkspace(id, changes) {
    return (await this.request('PATCH', `/config/workspace/${encodeURIComponent(id)}`, { body: changes })).workspace;
  }

  deleteWorkspace(id) {
    return this.request('DELETE', `/config/workspace/${encodeURIComponent(id)}`);
  }

  /** Conversations of one workspace (owner), or every conversation the caller takes part in. */
  async conversations(workspaceId) {
    return (await this.request('GET', '/config/conversation', { query: { workspace_id: workspaceId } })).conversations;
  }

  /** `{workspace_id, topic, participant_ids?, responder?, context_scope?, turn_policy?, metadata?}` */
  async createConversation(fields) {
    return (await this.request('POST', '/config/conversation', { body: fields })).conversation;
  }

  async getConversation(id) {
    return (await this.request('GET', `/config/conversation/${encodeURIComponent(id)}`)).conversation;
  }

  /** Owner only: topic, participant_ids, responder, context_scope, turn_policy, metadata. */
  async updateConversation(id, changes) {
    return (await this.request('PATCH', `/config/conversation/${encodeURIComponent(id)}`, { body: changes })).conversation;
  }

  deleteConversation(id) {
    return this.request('DELETE', `/config/conversation/${encodeURIComponent(id)}`);
  }

  /** One page of history, newest first: `{messages, next_before}`. */
  messages(conversationId, { before, limit } = {}) {
    return this.request('GET', '/messages', { query: { conversation_id: conversationId, before, limit } });
  }

  // ----- the inbox --------------------------------------------------------------------------------

  /** Open approvals and questions, oldest first; null where the server has no inbox. */
  async inbox() {
    try {
      return (await this.request('GET', '/inbox')).items;
    } catch (error) {
      if (error.status === 404) return null;
      throw error;
    }
  }

  /** `{decision: 'approve'|'deny'}` or `{action: 'accept'|'decline'|'cancel', content?}`. */
  async answer(itemId, answer) {
    return (await this.request('POST', `/inbox/${encodeURIComponent(itemId)}/answer`, { body: answer })).item;
  }

  // ----- schedules and webhooks --------------------------------------------------------------------

  /** The caller's schedules; null where the server has none. */
  async schedules() {
    try {
      return (await this.request('GET', '/schedules')).schedules;
    } catch (error) {
      if (error.status === 404) return null;
      throw error;
    }
  }

  /** `{conversation_id, content, cron: '0 8 * * 1-5', timezone: 'Europe/Berlin', active?}` */
  async createSchedule(fields) {
    return (await this.request('POST', '/schedules', { body: fields })).schedule;
  }

  async updateSchedule(scheduleId, changes) {
    return (await this.request('PATCH', `/schedules/${encodeURIComponent(scheduleId)}`, { body: changes })).schedule;
  }

  deleteSchedule(scheduleId) {
    return this.request('DELETE', `/schedules/${encodeURIComponent(scheduleId)}`);
  }

  /** Once, now: `{status, input_id, turn_id?}`. */
  runSchedule(scheduleId) {
    return this.request('POST', `/schedules/${encodeURIComponent(scheduleId)}/run`);
  }

  /** The caller's webhooks; null where the server has none. */
  async webhooks() {
    try {
      return (await this.request('GET', '/webhooks')).webhooks;
    } catch (error) {
      if (error.status === 404) return null;
      throw error;
    }
  }

  /** `{url, events: ['assistant.completed', ...] | ['*'], description?}` → `{webhook, secret}` (the secret only here). */
  createWebhook(fields) {
    return this.request('POST', '/webhooks', { body: fields });
  }

  async updateWebhook(webhookId, changes) {
    return (await this.request('PATCH', `/webhooks/${encodeURIComponent(webhookId)}`, { body: changes })).webhook;
  }

  deleteWebhook(webhookId) {
    return this.request('DELETE', `/webhooks/${encodeURIComponent(webhookId)}`);
  }

  /** `{webhook, secret}`: a new secret, shown only here. */
  rotateWebhookSecret(webhookId) {
    return this.request('POST', `/webhooks/${encodeURIComponent(webhookId)}/rotate-secret`);
  }

  /** `{items, next_cursor}`: the delivery log, newest first. */
  deliveries(webhookId, { cursor, limit } = {}) {
    return this.request('GET', `/webhooks/${encodeURIComponent(webhookId)}/deliveries`, { query: { cursor, limit } });
  }

  async retryDelivery(webhookId, deliveryId) {
    const path = `/webhooks/${encodeURIComponent(webhookId)}/deliveries/${encodeURIComponent(deliveryId)}/retry`;
    return (await this.request('POST', path)).item;
  }

  // ----- memory and account -----------------------------------------------------------------------

  /** `{items, next_cursor}`: newest first, or ranked with `query`; null where the server has none. */
  async memory({ query, conversationId, limit, cursor } = {}) {
    try {
      return await this.request('GET', '/memory', { query: { query, conversation_id: conversationId, limit, cursor } });
    } catch (error) {
      if (error.status === 404 && !query && !cursor) return null;
      throw error;
    }
  }

  async remember(content, metadata) {
    return (await this.request('POST', '/memory', { body: metadata ? { content, metadata } : { content } })).item;
  }

  async correctMemory(itemId, content) {
    const body = await this.request('PATCH', `/memory/${encodeURIComponent(itemId)}`, { body: { content } });
    return body && body.item ? body.item : body;
  }

  forgetMemory(itemId) {
    return this.request('DELETE', `/memory/${encodeURIComponent(itemId)}`);
  }

  /** `GET /account/export` as a Blob (a download of everything the account holds). */
  async exportAccount() {
    const response = await this._fetchJson('GET', '/account/export', { raw: true });
    return response.blob();
  }

  // ----- connected accounts (experts behind each person's own OAuth account) ----------------------

  /** The caller's account status for each `oauth` expert they may use. */
  async connections() {
    return (await this.request('GET', '/connections')).connections;
  }

  /** Start connecting: the browser goes to the returned URL (the flow's cookie is set on this
   * origin) and comes back to `returnTo?connected=<id>` or `?connect_error=<code>`. */
  async startConnection(expertId, returnTo = '/console/#/connections') {
    return (await this.request('POST', `/connections/${encodeURIComponent(expertId)}`, { body: { return_to: returnTo } })).authorization_url;
  }

  /** Disconnect: revoked at the server and forgotten. */
  async disconnect(expertId) {
    return this.request('DELETE', `/connections/${encodeURIComponent(expertId)}`);
  }

  // ----- usage and budgets ------------------------------------------------------------------------

  /** `GET /usage`: the caller's own model usage, grouped (`day` | `workspace` | `conversation` |
   * `model`), and their monthly budget `{period, tokens, used}` (tokens 0: none). */
  async usage({ groupBy = 'day', from = null, to = null } = {}) {
    const query = new URLSearchParams({ group_by: groupBy });
    if (from) query.set('from', from);
    if (to) query.set('to', to);
    return this.request('GET', `/usage?${query}`);
  }

  // ----- experts (workspace owners) ---------------------------------------------------------------

  async experts(workspaceId) {
    return (await this.request('GET', `/config/workspace/${encodeURIComponent(workspaceId)}/experts`)).experts;
  }

  /** `{name, url, auth: 'core_token'|'none', tools?: [allowlist]}` */
  async registerExpert(workspaceId, fields) {
    return (await this.request('POST', `/config/workspace/${encodeURIComponent(workspaceId)}/experts`, { body: fields })).expert;
  }

  /** e.g. `{tool_policy: {add_note: 'ask'}}` or `{tools: [...]}` */
  async updateExpert(workspaceId, expertId, changes) {
    return (await this.request('PATCH', `/config/workspace/${encodeURIComponent(workspaceId)}/experts/${encodeURIComponent(expertId)}`, { body: changes })).expert;
  }

  async refreshExpert(workspaceId, expertId) {
    return (await this.request('POST', `/config/workspace/${encodeURIComponent(workspaceId)}/experts/${encodeURIComponent(expertId)}/refresh`)).expert;
  }

  deleteExpert(workspaceId, expertId) {
    return this.request('DELETE', `/config/workspace/${encodeURIComponent(workspaceId)}/experts/${encodeURIComponent(expertId)}`);
  }
}
