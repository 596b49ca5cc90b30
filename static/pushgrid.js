// pushgrid client: speaks the pushgrid wire contract (docs/protocol.md)
// over a WebSocket, or, where a WebSocket cannot connect, over Server-Sent
// Events and then long polling, with the same guarantees. It subscribes
// with a snapshot, applies events by version, and when the connection
// drops it reconnects with exponential backoff and resumes from the
// position it holds, applying a reset snapshot when the server can no
// longer resume.
//
//   import { PushgridClient } from "/static/pushgrid.js";
//   const client = new PushgridClient({ onStatus: (s, transport) => console.log(s, transport) });
//   client.subscribe("scores", { prefix: "match/" }, {
//     onSnapshot(entries, { reset }) { /* replace state with entries */ },
//     onEvent(event) { /* apply one change */ },
//     onError(error) { /* refused (error.code: "unauthorized", "unknown_cache", ...) or its cache deleted */ },
//   });
//
// A subscription or connection refused for want of a valid token turns the
// status to "unauthorized"; `client.setToken(token)` tries again with one.
//   await client.put("scores", "match/1", { home_score: 1 }, { if_version: 7 });
//
// Over SSE and long polling, reads and writes go through the REST API.
//
// In a cluster the client learns the members from the page's node
// (`GET /api/v1/cluster`, again after every connection) and, when its
// connection drops (WebSocket, SSE or long poll), reconnects to the next
// member in turn and resumes there (members share SSE and long-poll
// answers with each other's pages: CORS). A node cut off from the
// cluster's majority says so: the status turns "degraded" until it is
// back ("live" again, with what was missed).

const PROTOCOL = "pushgrid.v1.json";
const BACKOFF_START_MS = 250;
const BACKOFF_MAX_MS = 5000;
/// Failed attempts in a row after which the status says "offline".
const OFFLINE_AFTER = 6;
const POLL_TIMEOUT_MS = 25000;
/// How long a subscribe the node could not serve yet waits to be sent again.
const RESUBSCRIBE_AFTER_MS = 500;
/// How long `auto` stays on SSE or long polling before it tries a WebSocket again.
const UPGRADE_AFTER_MS = 30000;

/** The transports in the order `auto` tries them. */
export const TRANSPORTS = ["websocket", "sse", "poll"];
export const TRANSPORT_NAMES = { websocket: "WebSocket", sse: "SSE", poll: "Long polling" };

export class PushgridError extends Error {
  constructor(reply) {
    super(reply.message || reply.code);
    this.code = reply.code;
    this.currentVersion = reply.current_version;
  }
}

export class PushgridClient {
  /**
   * @param {object} options
   * @param {string} [options.origin] the node's HTTP origin; defaults to this page's.
   * @param {string} [options.token] access token, when the node requires one.
   * @param {"auto"|"websocket"|"sse"|"poll"} [options.transport] "auto" (the default)
   *   tries WebSocket, then SSE, then long polling, moving on when one cannot connect.
   * @param {number} [options.upgradeAfterMs] with "auto", live on SSE or long polling, how often to
   *   try a WebSocket again (default 30 s); once one opens, the client moves back to it.
   * @param {(status: "connecting"|"live"|"degraded"|"reconnecting"|"offline"|"unauthorized", transport: string) => void} [options.onStatus]
   *   "unauthorized": the node refused the token (or its lack); nothing is retried until setToken.
   *   "degraded": connected to a node cut off from its cluster's majority; nothing arrives until it is back.
   */
  constructor(options = {}) {
    this.origin = options.origin || location.origin;
    // The origins pushes come from: this node's first, then the other
    // members of its cluster once learnt. REST calls go where pushes come
    // from, so a page whose node died still reads and writes.
    this.pushOrigins = [this.origin];
    this.pushOrigin = 0;
    this.token = options.token;
    const forced = options.transport && options.transport !== "auto";
    this.candidates = forced ? [options.transport] : TRANSPORTS;
    this.candidate = 0;
    this.onStatus = options.onStatus || (() => {});
    this.upgradeAfterMs = options.upgradeAfterMs || UPGRADE_AFTER_MS;
    this.status = "connecting";
    this.nextId = 1;
    this.pending = new Map(); // WebSocket request id -> {resolve, reject}
    this.subscriptions = []; // what to (re)subscribe to on every connection
    this.bySub = new Map(); // WebSocket sub id -> subscription
    this.failures = 0;
    this.eventTimes = [];
    this.closed = false;
    this.attempt = null; // the current connection attempt, see connect()
    this.connect();
  }

  /** The transport in use, or being tried. */
  get transport() {
    return this.candidates[this.candidate];
  }

  /** Follows `cache` (filter `{}`, `{key}` or `{prefix}`) across reconnections. */
  subscribe(cache, filter, handlers) {
    // `positions` resumes a WebSocket, `token` an SSE stream or a poll.
    // `incarnation` names the run of the cache's history `positions` belong
    // to; `epochs` (in a cluster) the epoch each position was written under.
    const subscription = {
      cache, filter, handlers, positions: null, incarnation: null, epochs: {}, token: null, versions: new Map(),
      incoming: [],
    };
    this.subscriptions.push(subscription);
    if (this.attempt?.opened) this.follow(this.attempt, subscription);
    return subscription;
  }

  get(cache, key) {
    return this.request({ op: "get", cache, key });
  }

  /** Writes a value; options: `if_version`, `if_absent`, `lifespan_ms`. */
  put(cache, key, value, options = {}) {
    return this.request({ op: "put", cache, key, value, ...options });
  }

  remove(cache, key, options = {}) {
    return this.request({ op: "remove", cache, key, ...options });
  }

  /** Events received per second over the last five seconds. */
  eventRate() {
    const now = performance.now();
    while (this.eventTimes.length && now - this.eventTimes[0] > 5000) this.eventTimes.shift();
    return this.eventTimes.length / 5;
  }

  close() {
    this.closed = true;
    this.attempt?.stop();
  }

  /** Uses `token` from now on: reconnects with it and subscribes again. */
  setToken(token) {
    this.token = token || undefined;
    this.attempt?.stop();
    this.failures = 0;
    this.candidate = 0;
    this.connect();
  }

  request(message) {
    if (this.transport !== "websocket") return this.rest(message);
    return new Promise((resolve, reject) => {
      const ws = this.attempt?.ws;
      if (!ws || ws.readyState !== WebSocket.OPEN) {
        reject(new PushgridError({ code: "unavailable", message: "not connected" }));
        return;
      }
      const id = this.nextId++;
      this.pending.set(id, { resolve, reject });
      ws.send(JSON.stringify({ ...message, id }));
    });
  }

  /**
   * One operation through the REST API of the member pushes come from,
   * answered like its WebSocket reply. A write that fails is not retried
   * elsewhere: the caller learns the error and decides.
   */
  async rest({ op, cache, key, value, if_version, if_absent, lifespan_ms }) {
    const headers = {};
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (if_version !== undefined) headers["If-Match"] = `"${if_version}"`;
    if (if_absent) headers["If-None-Match"] = "*";
    const method = { get: "GET", put: "PUT", remove: "DELETE" }[op];
    let url = `${this.pushOrigins[this.pushOrigin]}/api/v1/caches/${encodeURIComponent(cache)}/entries/${encodeURIComponent(key)}`;
    if (lifespan_ms !== undefined) url += `?lifespan_ms=${lifespan_ms}`;
    let response;
    try {
      response = await fetch(url, { method, headers, body: op === "put" ? JSON.stringify(value) : undefined });
    } catch (error) {
      throw new PushgridError({ code: "unavailable", message: String(error) });
    }
    const text = await response.text();
    if (!response.ok) {
      const error = text ? JSON.parse(text).error : { code: "internal", message: response.statusText };
      throw new PushgridError(error);
    }
    const version = Number((response.headers.get("ETag") || "").replaceAll('"', "")) || undefined;
    if (op === "get") return { type: "entry", key, value: JSON.parse(text), version };
    return { type: "ok", version, created: response.status === 201 };
  }

  /**
   * Starts one connection attempt over the current transport. An attempt
   * that fails before it ever opened moves `auto` on to the next transport
   * (after the last, back to the first, with backoff); one that drops after
   * opening is retried on the same transport.
   */
  connect({ quiet = false } = {}) {
    const attempt = { transport: this.transport, opened: false, stopped: false, streams: [], aborts: [] };
    attempt.stop = () => {
      attempt.stopped = true;
      attempt.ws?.close(1000);
      for (const stream of attempt.streams) stream.close();
      for (const abort of attempt.aborts) abort.abort();
    };
    this.attempt = attempt;
    if (!quiet) this.setStatus(this.failures === 0 ? "connecting" : this.failures >= OFFLINE_AFTER ? "offline" : "reconnecting");
    if (attempt.transport === "websocket") this.openWebSocket(attempt);
    else for (const subscription of this.subscriptions) this.follow(attempt, subscription);
    if (attempt.transport !== "websocket" && this.subscriptions.length === 0) this.opened(attempt);
  }

  opened(attempt) {
    if (attempt !== this.attempt || attempt.opened) return;
    attempt.opened = true;
    this.failures = 0;
    this.setStatus("live");
    this.planUpgrade(attempt);
    this.learnMembers();
  }

  /**
   * Asks the page's node for the members of its cluster: the origins to
   * fail over to. A single node, or a node that does not
   * answer (it died: the list learnt before stays), changes nothing.
   */
  async learnMembers() {
    const scheme = this.origin.startsWith("https:") ? "https" : "http";
    try {
      const response = await fetch(`${this.origin}/api/v1/cluster`, { cache: "no-store" });
      if (!response.ok) return;
      const view = await response.json();
      // The page's node is reached as `this.origin` (perhaps through a
      // proxy): only the others are added.
      const others = view.members.filter((m) => m.id !== view.node.id).map((m) => `${scheme}://${m.address}`);
      const current = this.pushOrigins[this.pushOrigin];
      this.pushOrigins = [this.origin, ...others];
      this.pushOrigin = Math.max(0, this.pushOrigins.indexOf(current));
    } catch {
      // Not reachable: keep what was learnt.
    }
  }

  /** Live on a fallback that `auto` chose: try a WebSocket again in a while. */
  planUpgrade(attempt) {
    if (attempt.transport === "websocket" || this.candidates[0] !== "websocket" || this.candidates.length === 1) return;
    setTimeout(() => this.tryUpgrade(attempt), this.upgradeAfterMs);
  }

  /**
   * Opens a WebSocket beside the fallback in use; if it opens, the client
   * moves to a WebSocket and subscribes afresh (a snapshot replaces what it
   * holds), otherwise it tries again later.
   */
  tryUpgrade(attempt) {
    const current = () => attempt === this.attempt && !attempt.stopped && !this.closed;
    if (!current()) return;
    const probe = new WebSocket(this.webSocketUrl(), PROTOCOL);
    let opened = false;
    probe.onopen = () => {
      opened = true;
      probe.close(1000);
      if (!current()) return;
      attempt.stop();
      for (const subscription of this.subscriptions) {
        subscription.positions = null;
        subscription.incarnation = null;
        subscription.epochs = {};
      }
      this.candidate = 0;
      this.connect({ quiet: true });
    };
    probe.onclose = () => {
      if (!opened) this.planUpgrade(attempt);
    };
  }

  /** The attempt ended: reconnect, on this transport or the next. */
  async failed(attempt) {
    if (attempt !== this.attempt || attempt.stopped) return;
    attempt.stop();
    for (const { reject } of this.pending.values()) {
      reject(new PushgridError({ code: "unavailable", message: "connection lost" }));
    }
    this.pending.clear();
    if (this.closed) return;
    // A browser does not say why a WebSocket or an event stream was
    // refused: once every transport has failed to open, ask the node, the
    // way a poll would, before backing off to retry.
    const everyTransportFailed = !attempt.opened && this.candidate + 1 >= this.candidates.length;
    if (everyTransportFailed && (await this.refusedAccess(attempt))) return;
    // setToken or close may have moved on while the node was asked.
    if (attempt !== this.attempt || this.closed) return;
    let backoff = 0;
    if (!attempt.opened && this.candidate + 1 < this.candidates.length) {
      this.candidate += 1; // try the next transport at once
    } else {
      if (!attempt.opened) this.candidate = 0;
      this.failures += 1;
      backoff = Math.min(BACKOFF_START_MS * 2 ** (this.failures - 1), BACKOFF_MAX_MS);
      // The node dropped the connection, or no transport opened on it:
      // the next member may be alive.
      this.pushOrigin = (this.pushOrigin + 1) % this.pushOrigins.length;
    }
    this.setStatus(this.failures >= OFFLINE_AFTER ? "offline" : "reconnecting");
    setTimeout(() => this.connect(), backoff * (0.75 + Math.random() / 2));
  }

  /**
   * Whether the node refuses this client's token (or its lack): asked with
   * a first poll of the first subscription. Then the status turns to
   * "unauthorized" and nothing is retried until setToken.
   */
  async refusedAccess(attempt) {
    const subscription = this.subscriptions[0];
    if (!subscription) return false;
    const url = `${this.origin}/api/v1/caches/${encodeURIComponent(subscription.cache)}/poll?${this.filterQuery(subscription)}`;
    try {
      const response = await fetch(url, { cache: "no-store" });
      if (response.status !== 401 && response.status !== 403) return false;
      const error = (await response.json()).error;
      if (attempt === this.attempt) this.refuse(subscription, new PushgridError(error));
      return true;
    } catch {
      return false;
    }
  }

  /** A subscription was refused or ended: its handler is told, and the status says so. */
  refuse(subscription, error) {
    subscription.handlers.onError?.(error);
    if (error.code === "unauthorized") this.setStatus("unauthorized");
  }

  follow(attempt, subscription) {
    if (attempt.transport === "websocket") this.sendSubscribe(subscription);
    else if (attempt.transport === "sse") this.openEventStream(attempt, subscription);
    else this.pollLoop(attempt, subscription);
  }

  filterQuery(subscription) {
    const query = new URLSearchParams();
    if (subscription.filter.key !== undefined) query.set("key", subscription.filter.key);
    if (subscription.filter.prefix !== undefined) query.set("prefix", subscription.filter.prefix);
    if (this.token) query.set("access_token", this.token);
    return query;
  }

  // --- WebSocket ---

  webSocketUrl() {
    const origin = this.pushOrigins[this.pushOrigin];
    const scheme = origin.startsWith("https:") ? "wss" : "ws";
    const url = `${scheme}://${origin.replace(/^https?:\/\//, "")}/ws`;
    return this.token ? `${url}?access_token=${encodeURIComponent(this.token)}` : url;
  }

  openWebSocket(attempt) {
    const ws = new WebSocket(this.webSocketUrl(), PROTOCOL);
    attempt.ws = ws;
    ws.onopen = () => {
      this.bySub.clear();
      this.opened(attempt);
      for (const subscription of this.subscriptions) this.sendSubscribe(subscription);
    };
    ws.onmessage = (frame) => this.dispatch(JSON.parse(frame.data));
    ws.onclose = () => this.failed(attempt);
  }

  sendSubscribe(subscription) {
    const id = this.nextId++;
    const message = { op: "subscribe", id, cache: subscription.cache, filter: subscription.filter };
    // Resume from what we hold; the server replays what we missed, or
    // answers with a reset snapshot.
    if (subscription.positions) {
      message.resume = { positions: subscription.positions };
      if (subscription.incarnation) message.resume.incarnation = subscription.incarnation;
      if (Object.keys(subscription.epochs).length) message.resume.epochs = subscription.epochs;
    }
    subscription.incoming = [];
    subscription.requestId = id;
    this.pending.set(id, {
      resolve: (reply) => this.bySub.set(reply.sub, subscription),
      reject: (error) => this.subscribeFailed(subscription, error),
    });
    this.attempt.ws.send(JSON.stringify(message));
  }

  /**
   * A subscribe was refused, at once or (its start could not be read)
   * after `subscribed`. A node that cannot serve it yet (`unavailable`:
   * taking over a dead member's segments, or cut off) is asked again.
   */
  subscribeFailed(subscription, error) {
    if (error.code !== "unavailable") {
      this.refuse(subscription, error);
      return;
    }
    const attempt = this.attempt;
    setTimeout(() => {
      if (attempt === this.attempt && !attempt.stopped && attempt.ws?.readyState === WebSocket.OPEN) {
        this.sendSubscribe(subscription);
      }
    }, RESUBSCRIBE_AFTER_MS);
  }

  dispatch(message) {
    switch (message.type) {
      case "snapshot": {
        const subscription = this.bySub.get(message.sub);
        if (!subscription) return;
        subscription.incoming.push(...message.entries);
        if (!message.done) return;
        const entries = subscription.incoming;
        subscription.incoming = [];
        subscription.positions = { ...message.positions };
        subscription.incarnation = message.incarnation || null;
        subscription.epochs = { ...message.epochs };
        this.applySnapshot(subscription, entries, Boolean(message.reset));
        return;
      }
      case "event": {
        const subscription = this.bySub.get(message.sub);
        if (!subscription) return;
        const event = message.event;
        const positions = subscription.positions || (subscription.positions = {});
        const segment = String(event.segment);
        if (event.version > (positions[segment] || 0)) {
          positions[segment] = event.version;
          if (event.epoch) subscription.epochs[segment] = event.epoch;
        }
        this.applyEvent(subscription, event);
        return;
      }
      case "degraded":
      case "recovered":
        this.health(message.type === "degraded");
        return;
      case "cache_deleted": {
        const subscription = this.bySub.get(message.sub);
        this.bySub.delete(message.sub);
        if (subscription) this.refuse(subscription, new PushgridError({ code: "unknown_cache", message: `cache ${message.cache} was deleted` }));
        return;
      }
      default: {
        const waiting = message.id !== undefined && this.pending.get(message.id);
        if (!waiting) {
          // A subscription's start failed after `subscribed`: it is over.
          const failed = message.type === "error" && this.subscriptions.find((s) => s.requestId === message.id);
          if (failed) {
            for (const [sub, subscription] of this.bySub) if (subscription === failed) this.bySub.delete(sub);
            this.subscribeFailed(failed, new PushgridError(message));
          }
          return;
        }
        this.pending.delete(message.id);
        if (message.type === "error") waiting.reject(new PushgridError(message));
        else waiting.resolve(message);
      }
    }
  }

  // --- Server-Sent Events ---

  openEventStream(attempt, subscription) {
    const query = this.filterQuery(subscription);
    // A new EventSource cannot send Last-Event-ID itself: the parameter does.
    if (subscription.token) query.set("last_event_id", subscription.token);
    const origin = this.pushOrigins[this.pushOrigin];
    const stream = new EventSource(`${origin}/api/v1/caches/${encodeURIComponent(subscription.cache)}/events?${query}`);
    attempt.streams.push(stream);
    subscription.incoming = [];
    stream.onopen = () => this.opened(attempt);
    stream.addEventListener("snapshot", (message) => {
      const data = JSON.parse(message.data);
      subscription.incoming.push(...data.entries);
      if (!data.done) return;
      const entries = subscription.incoming;
      subscription.incoming = [];
      subscription.token = message.lastEventId;
      this.applySnapshot(subscription, entries, Boolean(data.reset));
    });
    stream.addEventListener("event", (message) => {
      subscription.token = message.lastEventId;
      this.applyEvent(subscription, JSON.parse(message.data));
    });
    stream.addEventListener("degraded", () => this.health(true));
    stream.addEventListener("recovered", () => this.health(false));
    stream.addEventListener("cache_deleted", (message) => {
      stream.close();
      const { cache } = JSON.parse(message.data);
      this.refuse(subscription, new PushgridError({ code: "unknown_cache", message: `cache ${cache} was deleted` }));
    });
    // The browser would retry by itself; this client retries with its own
    // backoff and transport choice instead.
    stream.onerror = () => this.failed(attempt);
  }

  // --- Long polling ---

  async pollLoop(attempt, subscription) {
    const path = `${this.pushOrigins[this.pushOrigin]}/api/v1/caches/${encodeURIComponent(subscription.cache)}/poll`;
    while (!attempt.stopped) {
      const query = this.filterQuery(subscription);
      if (subscription.token) {
        query.set("after", subscription.token);
        query.set("timeout_ms", String(POLL_TIMEOUT_MS));
      }
      const abort = new AbortController();
      attempt.aborts.push(abort);
      let answer;
      try {
        const response = await fetch(`${path}?${query}`, { signal: abort.signal, cache: "no-store" });
        if (response.status >= 400 && response.status < 500) {
          // Refused (a token, a deleted cache): retrying would not help.
          this.refuse(subscription, new PushgridError((await response.json()).error));
          return;
        }
        if (!response.ok) throw new Error(`poll answered ${response.status}`);
        answer = await response.json();
      } catch (error) {
        if (!attempt.stopped) console.warn("pushgrid: poll failed", error);
        this.failed(attempt);
        return;
      } finally {
        attempt.aborts = attempt.aborts.filter((a) => a !== abort);
      }
      if (attempt.stopped) return;
      this.opened(attempt);
      if (answer.snapshot) this.applySnapshot(subscription, answer.snapshot, Boolean(answer.reset));
      for (const event of answer.events) this.applyEvent(subscription, event);
      subscription.token = answer.position;
    }
  }

  // --- Shared by every transport ---

  applySnapshot(subscription, entries, reset) {
    subscription.versions = new Map(entries.map((e) => [e.key, e.version]));
    subscription.handlers.onSnapshot?.(entries, { reset });
  }

  applyEvent(subscription, event) {
    this.eventTimes.push(performance.now());
    // Apply by version: a write the client already holds is skipped.
    if ((subscription.versions.get(event.key) || 0) >= event.version) return;
    if (event.kind === "removed" || event.kind === "expired") subscription.versions.delete(event.key);
    else subscription.versions.set(event.key, event.version);
    subscription.handlers.onEvent?.(event);
  }

  /** The node said it is cut off from its cluster (or back). */
  health(degraded) {
    if (this.attempt?.opened) this.setStatus(degraded ? "degraded" : "live");
  }

  setStatus(status) {
    if (this.status === status && this.reportedTransport === this.transport) return;
    this.status = status;
    this.reportedTransport = this.transport;
    this.onStatus(status, this.transport);
  }
}
