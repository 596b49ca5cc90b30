// pushgrid client: speaks the pushgrid wire contract (docs/protocol.md) over
// a WebSocket. It subscribes with a snapshot, applies events by version,
// and when the connection drops it reconnects with exponential backoff and
// resumes from the positions it holds, applying a reset snapshot when the
// server can no longer resume.
//
//   import { PushgridClient } from "/static/pushgrid.js";
//   const client = new PushgridClient({ onStatus: (s) => console.log(s) });
//   client.subscribe("scores", { prefix: "match/" }, {
//     onSnapshot(entries, { reset }) { /* replace state with entries */ },
//     onEvent(event) { /* apply one change */ },
//   });
//   await client.put("scores", "match/1", { home_score: 1 }, { if_version: 7 });

const PROTOCOL = "pushgrid.v1.json";
const BACKOFF_START_MS = 250;
const BACKOFF_MAX_MS = 5000;
/// Failed attempts in a row after which the status says "offline".
const OFFLINE_AFTER = 6;

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
   * @param {string} [options.url] WebSocket URL; defaults to this page's host at /ws.
   * @param {string} [options.token] access token, when the node requires one.
   * @param {(status: "connecting"|"live"|"reconnecting"|"offline") => void} [options.onStatus]
   */
  constructor(options = {}) {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = options.url || `${scheme}://${location.host}/ws`;
    this.url = options.token ? `${url}?access_token=${encodeURIComponent(options.token)}` : url;
    this.onStatus = options.onStatus || (() => {});
    this.status = "connecting";
    this.nextId = 1;
    this.pending = new Map(); // request id -> {resolve, reject}
    this.subscriptions = []; // what to (re)subscribe to on every connection
    this.bySub = new Map(); // server sub id -> subscription
    this.failures = 0;
    this.eventTimes = [];
    this.closed = false;
    this.connect();
  }

  /** Follows `cache` (filter `{}`, `{key}` or `{prefix}`) across reconnections. */
  subscribe(cache, filter, handlers) {
    const subscription = { cache, filter, handlers, positions: null, versions: new Map(), incoming: [] };
    this.subscriptions.push(subscription);
    if (this.status === "live") this.sendSubscribe(subscription);
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
    if (this.ws) this.ws.close(1000);
  }

  request(message) {
    return new Promise((resolve, reject) => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
        reject(new PushgridError({ code: "unavailable", message: "not connected" }));
        return;
      }
      const id = this.nextId++;
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ ...message, id }));
    });
  }

  connect() {
    this.setStatus(this.failures === 0 ? "connecting" : this.failures >= OFFLINE_AFTER ? "offline" : "reconnecting");
    const ws = new WebSocket(this.url, PROTOCOL);
    this.ws = ws;
    ws.onopen = () => {
      this.failures = 0;
      this.bySub.clear();
      this.setStatus("live");
      for (const subscription of this.subscriptions) this.sendSubscribe(subscription);
    };
    ws.onmessage = (frame) => this.dispatch(JSON.parse(frame.data));
    ws.onclose = () => {
      if (this.ws !== ws) return;
      for (const { reject } of this.pending.values()) {
        reject(new PushgridError({ code: "unavailable", message: "connection lost" }));
      }
      this.pending.clear();
      if (this.closed) return;
      this.failures += 1;
      this.setStatus(this.failures >= OFFLINE_AFTER ? "offline" : "reconnecting");
      const backoff = Math.min(BACKOFF_START_MS * 2 ** (this.failures - 1), BACKOFF_MAX_MS);
      setTimeout(() => this.connect(), backoff * (0.75 + Math.random() / 2));
    };
  }

  sendSubscribe(subscription) {
    const id = this.nextId++;
    const message = { op: "subscribe", id, cache: subscription.cache, filter: subscription.filter };
    // Resume from what we hold; the server replays what we missed, or
    // answers with a reset snapshot.
    if (subscription.positions) message.resume = { positions: subscription.positions };
    subscription.incoming = [];
    this.pending.set(id, {
      resolve: (reply) => this.bySub.set(reply.sub, subscription),
      reject: (error) => console.error("pushgrid: subscribe failed", error),
    });
    this.ws.send(JSON.stringify(message));
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
        subscription.versions = new Map(entries.map((e) => [e.key, e.version]));
        subscription.handlers.onSnapshot?.(entries, { reset: Boolean(message.reset) });
        return;
      }
      case "event": {
        const subscription = this.bySub.get(message.sub);
        if (!subscription) return;
        const event = message.event;
        this.eventTimes.push(performance.now());
        const positions = subscription.positions || (subscription.positions = {});
        const segment = String(event.segment);
        positions[segment] = Math.max(positions[segment] || 0, event.version);
        // Apply by version: a write the client already holds is skipped.
        if ((subscription.versions.get(event.key) || 0) >= event.version) return;
        if (event.kind === "removed" || event.kind === "expired") subscription.versions.delete(event.key);
        else subscription.versions.set(event.key, event.version);
        subscription.handlers.onEvent?.(event);
        return;
      }
      default: {
        const waiting = message.id !== undefined && this.pending.get(message.id);
        if (!waiting) return;
        this.pending.delete(message.id);
        if (message.type === "error") waiting.reject(new PushgridError(message));
        else waiting.resolve(message);
      }
    }
  }

  setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.onStatus(status);
  }
}
