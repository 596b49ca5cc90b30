//! The per-session WebSocket actor: it owns one socket. It decodes the
//! client's frames, runs their grid operations, holds the connection's
//! subscriptions, receives their events from the listener as actor messages
//! ([`Push`]), and writes everything through its bounded [`Outbox`].
//!
//! The transport under the actor is not actix-web-actors, which queues
//! outgoing frames in a private buffer with no way to see how much is
//! waiting, so a session could not tell a slow client from a fast one.
//! [`ws_transport`](super::ws_transport) (actix-ws for the handshake and
//! reading, batched frame writing of its own) hands frames to the socket
//! through a bounded channel; a write that does not complete means the
//! client is not reading, and the outbox then conflates and, past its limit,
//! closes with 1013. The rest of the crate sees only this actor, so the
//! transport can change without touching it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, StreamHandler, WrapFuture,
};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, ProtocolError};

use super::error::ApiError;
use super::handshake::{negotiate_format, origin_allowed};
use super::rate_limit::RateLimiter;
use super::ws_transport::{self, FrameBatch, FrameWriter, Written};
use super::{AppState, ConnectionSlot};
use crate::auth::{Access, Authenticator};
use crate::config::LimitsConfig;
use crate::grid::{parse_key, EntryView, Grid, GridError, JsonValue, Precondition};
use crate::metrics::PushMetrics;
use crate::protocol::ws::{
    decode_request, wire_positions, ClientOp, ClientRequest, EncodedEvent, Format, RequestId, ServerMessage,
    WireFrame,
};
use crate::protocol::{ErrorCode, ErrorDetail};
use crate::push::filter::Filter;
use crate::push::listener::{Listener, Push, Register, Unregister};
use crate::push::outbox::{Admission, Outbox, OutboxLimits, Outgoing};
use crate::push::subscription::{read_start, Start, Subscription};
use crate::push::{SessionId, SubId};

/// Entries per snapshot frame, as the contract sets.
const SNAPSHOT_FRAME_ENTRIES: usize = 1000;
/// Frames encoded into one buffer for the socket.
const WRITE_BATCH: usize = 64;
/// How long a close frame may wait for a socket that is not draining. A
/// stopped session holds only its socket and the transport's few batches
/// meanwhile; a stalled client that resumes reading within this gets its
/// close code (1013) instead of a bare disconnect.
const CLOSE_GRACE: Duration = Duration::from_secs(30);

/// Refusing more than this many seconds' worth of operations within one
/// second is persistent abuse: the connection is closed with 1008.
const ABUSE_FACTOR: u64 = 10;

/// The WebSocket settings every session shares.
#[derive(Clone, Debug)]
pub struct WsSettings {
    pub heartbeat_interval: Duration,
    pub client_timeout: Duration,
    pub max_message_bytes: usize,
    pub allowed_origins: Vec<String>,
    pub outbox: OutboxLimits,
}

/// `GET /ws`: checks the origin and subprotocol, upgrades, and starts the
/// connection's session actor.
pub async fn websocket(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let settings = state.websocket.clone();
    if !origin_allowed(req.headers(), &settings.allowed_origins) {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "this Origin may not open a WebSocket",
        ));
    }
    let format = negotiate_format(req.headers())?;
    let token = web::Query::<AccessQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?
        .into_inner()
        .access_token;
    let access = state.auth.authenticate(token.as_deref())?;
    let slot = ConnectionSlot::take(&state)?;
    let upgraded = ws_transport::upgrade(&req, body, format.subprotocol(), settings.max_message_bytes)
        .map_err(|err| ApiError::bad_request(format!("not a WebSocket handshake: {err}")))?;
    let session = Session {
        id: crate::push::new_session_id(),
        format,
        socket: upgraded.writer,
        grid: state.grid.clone(),
        listener: state.listener.clone(),
        outbox: Outbox::new(format, settings.outbox),
        settings,
        metrics: state.metrics.push.clone(),
        subscriptions: HashMap::new(),
        next_sub: 1,
        writing: false,
        last_heard: Instant::now(),
        closing: false,
        limiter: (state.limits.ops_per_second > 0)
            .then(|| RateLimiter::new(state.limits.ops_per_second, Instant::now())),
        refused_since: Instant::now(),
        refused: 0,
        limits: state.limits.clone(),
        _slot: slot,
        access,
        auth: state.auth.clone(),
    };
    let mut shutdown = state.shutdown.clone();
    Session::create(|ctx| {
        ctx.add_stream(upgraded.incoming);
        // Close with 1001 when the node shuts down.
        let shutting_down = async move { shutdown.wait_for(|down| *down).await.is_ok() };
        ctx.spawn(shutting_down.into_actor(&session).map(|down, session, ctx| {
            if down {
                session.close(CloseCode::Away, "server shutting down", ctx);
            }
        }));
        session
    });
    Ok(upgraded.response)
}

pub struct Session {
    id: SessionId,
    format: Format,
    socket: FrameWriter,
    grid: Grid,
    listener: Addr<Listener>,
    settings: Arc<WsSettings>,
    metrics: PushMetrics,
    subscriptions: HashMap<SubId, Subscription>,
    next_sub: SubId,
    outbox: Outbox,
    /// A write task is handing frames to the socket.
    writing: bool,
    last_heard: Instant,
    closing: bool,
    /// `None` when operations are not limited.
    limiter: Option<RateLimiter>,
    /// Operations refused since `refused_since` (a one-second window).
    refused_since: Instant,
    refused: u64,
    limits: Arc<LimitsConfig>,
    _slot: ConnectionSlot,
    /// What this connection's token allows.
    access: Access,
    auth: Arc<Authenticator>,
}

/// `GET /ws?access_token=...`
#[derive(serde::Deserialize)]
struct AccessQuery {
    access_token: Option<String>,
}

impl Session {
    fn on_payload(&mut self, payload: &[u8], ctx: &mut Context<Self>) {
        let decoded = decode_request(self.format, payload, self.limits.max_depth);
        if !self.admit_operation(ctx) {
            let id = match &decoded {
                Ok(request) => request.id.clone(),
                Err(err) => err.id.clone(),
            };
            let message = format!("more than {} operations per second", self.limits.ops_per_second);
            let detail = ErrorDetail {
                code: ErrorCode::RateLimited,
                message,
                current_version: None,
            };
            return self.reply_detail(id.as_ref(), detail, ctx);
        }
        match decoded {
            Ok(request) => self.on_request(request, ctx),
            Err(err) => self.reply_error(err.id.as_ref(), GridError::BadRequest(err.message), ctx),
        }
    }

    /// Whether the rate limit lets one more operation through. A client
    /// that keeps sending far past its limit (more than
    /// `ABUSE_FACTOR` seconds' worth refused within one second) is closed
    /// with 1008.
    fn admit_operation(&mut self, ctx: &mut Context<Self>) -> bool {
        let Some(limiter) = self.limiter.as_mut() else {
            return true;
        };
        let now = Instant::now();
        if limiter.try_acquire(now) {
            return true;
        }
        if now.duration_since(self.refused_since) > Duration::from_secs(1) {
            (self.refused_since, self.refused) = (now, 0);
        }
        self.refused += 1;
        if self.refused > ABUSE_FACTOR * u64::from(self.limits.ops_per_second) {
            self.close(CloseCode::Policy, "rate limit persistently exceeded", ctx);
        }
        false
    }

    fn on_request(&mut self, ClientRequest { id, op }: ClientRequest, ctx: &mut Context<Self>) {
        match op {
            ClientOp::Ping => self.reply(&ServerMessage::Pong { id: id.as_ref() }, ctx),
            ClientOp::Auth { token } => match self.auth.authenticate(Some(&token)) {
                Ok(access) => {
                    self.access = access;
                    self.reply(&ServerMessage::Authenticated { id: id.as_ref() }, ctx)
                }
                Err(err) => self.reply_error(id.as_ref(), err, ctx),
            },
            ClientOp::Get { cache, key } => {
                let checked = self.access.check_read(&cache).and_then(|()| parse_key(&key));
                let Some(key) = self.valid(checked, id.as_ref(), ctx) else {
                    return;
                };
                // Called here, not inside the spawned future: the request is
                // queued at its partition now, in the order the client sent it.
                let get = self.grid.get(&cache, key);
                self.run(ctx, id, get, |s, id, entry: EntryView, ctx| {
                    let message = ServerMessage::Entry {
                        id,
                        key: &entry.key,
                        value: &entry.value,
                        version: entry.version,
                    };
                    s.reply(&message, ctx)
                });
            }
            ClientOp::Put {
                cache,
                key,
                value,
                if_version,
                if_absent,
                lifespan_ms,
            } => {
                let precondition = match (if_version, if_absent) {
                    (Some(_), true) => Err(GridError::BadRequest(
                        "use if_version or if_absent, not both".into(),
                    )),
                    (Some(v), false) => Ok(Precondition::IfVersion(crate::grid::Version(v))),
                    (None, true) => Ok(Precondition::IfAbsent),
                    (None, false) => Ok(Precondition::None),
                };
                let checked = self.access.check_write(&cache).and(precondition);
                let Some(precondition) = self.valid(checked, id.as_ref(), ctx) else {
                    return;
                };
                let Some(key) = self.valid(parse_key(&key), id.as_ref(), ctx) else {
                    return;
                };
                let value = JsonValue::from_value(&value);
                let put = self.grid.put(&cache, key, value, precondition, lifespan_ms);
                self.run(ctx, id, put, |s, id, outcome, ctx| {
                    let message = ServerMessage::Ok {
                        id,
                        version: outcome.version,
                        created: Some(outcome.created),
                    };
                    s.reply(&message, ctx)
                });
            }
            ClientOp::Remove {
                cache,
                key,
                if_version,
            } => {
                let checked = self.access.check_write(&cache).and_then(|()| parse_key(&key));
                let Some(key) = self.valid(checked, id.as_ref(), ctx) else {
                    return;
                };
                let precondition = if_version.map_or(Precondition::None, |v| {
                    Precondition::IfVersion(crate::grid::Version(v))
                });
                let remove = self.grid.remove(&cache, key, precondition);
                self.run(ctx, id, remove, |s, id, version, ctx| {
                    s.reply(
                        &ServerMessage::Ok {
                            id,
                            version,
                            created: None,
                        },
                        ctx,
                    )
                });
            }
            ClientOp::Subscribe {
                cache,
                filter,
                snapshot,
                resume,
            } => {
                let parsed = (|| {
                    self.access.check_read(&cache)?;
                    let cache = self.grid.cache(&cache)?;
                    let filter = Filter::from_spec(&filter)?;
                    let resume = resume
                        .map(|r| r.parse_positions().map_err(GridError::BadRequest))
                        .transpose()?;
                    Ok((cache, filter, resume))
                })();
                let Some((cache, filter, resume)) = self.valid(parsed, id.as_ref(), ctx) else {
                    return;
                };
                if self.subscriptions.len() >= self.limits.max_subscriptions {
                    let detail = ErrorDetail {
                        code: ErrorCode::RateLimited,
                        message: format!(
                            "at most {} subscriptions per connection",
                            self.limits.max_subscriptions
                        ),
                        current_version: None,
                    };
                    return self.reply_detail(id.as_ref(), detail, ctx);
                }
                self.subscribe(id, cache.name().clone(), filter, snapshot, resume, ctx);
            }
            ClientOp::Unsubscribe { sub: name } => {
                let found = name
                    .strip_prefix('s')
                    .and_then(|n| n.parse::<SubId>().ok())
                    .and_then(|n| self.subscriptions.remove(&n).map(|s| (n, s)));
                match found {
                    Some((sub, subscription)) => {
                        self.unregister(sub, subscription);
                        self.reply(
                            &ServerMessage::Unsubscribed {
                                id: id.as_ref(),
                                sub: &name,
                            },
                            ctx,
                        );
                    }
                    None => self.reply_error(
                        id.as_ref(),
                        GridError::BadRequest(format!("no subscription {name:?} on this connection")),
                        ctx,
                    ),
                }
            }
        }
    }

    fn subscribe(
        &mut self,
        id: Option<RequestId>,
        cache: crate::grid::CacheName,
        filter: Filter,
        snapshot: bool,
        resume: Option<HashMap<crate::grid::SegmentId, crate::grid::Version>>,
        ctx: &mut Context<Self>,
    ) {
        let sub = self.next_sub;
        self.next_sub += 1;
        let name: Arc<str> = Arc::from(format!("s{sub}"));
        self.subscriptions.insert(
            sub,
            Subscription::new(name.clone(), cache.clone(), filter.clone()),
        );
        self.reply(
            &ServerMessage::Subscribed {
                id: id.as_ref(),
                sub: &name,
            },
            ctx,
        );

        // Registered before the snapshot is read, so no write falls between.
        let register = self.listener.send(Register {
            session: self.id,
            sub,
            cache: cache.clone(),
            filter: filter.clone(),
            recipient: ctx.address().recipient(),
        });
        let grid = self.grid.clone();
        let start = async move {
            register
                .await
                .map_err(|e| GridError::Unavailable(format!("listener unavailable: {e}")))?;
            read_start(&grid, cache.as_str(), &filter, snapshot, resume).await
        };
        ctx.spawn(
            start
                .into_actor(self)
                .map(move |result, session, ctx| session.begin_delivery(sub, id, result, ctx)),
        );
    }

    /// Sends what the subscription starts with, then its held events.
    fn begin_delivery(
        &mut self,
        sub: SubId,
        id: Option<RequestId>,
        start: Result<Start, GridError>,
        ctx: &mut Context<Self>,
    ) {
        let Some(name) = self.subscriptions.get(&sub).map(|s| s.name.clone()) else {
            return; // unsubscribed meanwhile
        };
        let (positions, first) = match start {
            Err(err) => {
                if let Some(subscription) = self.subscriptions.remove(&sub) {
                    self.unregister(sub, subscription);
                }
                return self.reply_error(id.as_ref(), err, ctx);
            }
            Ok(Start::Live) => (HashMap::new(), Vec::new()),
            Ok(Start::Replay { events, positions }) => {
                (positions, events.into_iter().map(EncodedEvent::new).collect())
            }
            Ok(Start::Snapshot {
                entries,
                positions,
                reset,
            }) => {
                self.push_snapshot(&name, &entries, &positions, reset);
                (positions, Vec::new())
            }
        };
        let held = match self.subscriptions.get_mut(&sub) {
            Some(subscription) => subscription.go_live(positions),
            None => Vec::new(),
        };
        self.enqueue_events(sub, first.into_iter().chain(held), ctx);
    }

    fn push_snapshot(
        &mut self,
        name: &str,
        entries: &[EntryView],
        positions: &HashMap<crate::grid::SegmentId, crate::grid::Version>,
        reset: bool,
    ) {
        let wire = wire_positions(positions);
        let frames = entries.len().div_ceil(SNAPSHOT_FRAME_ENTRIES).max(1);
        for (i, chunk) in (0..frames).map(|i| {
            let end = ((i + 1) * SNAPSHOT_FRAME_ENTRIES).min(entries.len());
            (i, &entries[i * SNAPSHOT_FRAME_ENTRIES..end])
        }) {
            let done = i + 1 == frames;
            let message = ServerMessage::Snapshot {
                sub: name,
                entries: chunk,
                done,
                positions: done.then_some(&wire),
                reset,
            };
            self.outbox.push(Outgoing::Message(self.format.frame(&message)));
        }
    }

    fn enqueue_events(
        &mut self,
        sub: SubId,
        events: impl IntoIterator<Item = Arc<EncodedEvent>>,
        ctx: &mut Context<Self>,
    ) {
        for event in events {
            if !self.admit(sub, event, ctx) {
                return;
            }
        }
        self.pump(ctx);
    }

    /// Queues one event; false when the session had to close instead.
    fn admit(&mut self, sub: SubId, event: Arc<EncodedEvent>, ctx: &mut Context<Self>) -> bool {
        match self.outbox.push_event(sub, event) {
            Admission::Queued => true,
            Admission::Conflated => {
                self.metrics.events_conflated.inc();
                true
            }
            Admission::Overloaded => {
                self.metrics.slow_consumer_closes.inc();
                log::warn!(
                    "session {} closed: {} bytes waiting even with conflation",
                    self.id,
                    self.outbox.pending_bytes()
                );
                self.close(CloseCode::Again, "cannot keep up", ctx);
                false
            }
        }
    }

    fn unregister(&self, sub: SubId, subscription: Subscription) {
        self.listener.do_send(Unregister {
            session: self.id,
            sub,
            cache: subscription.cache,
            filter: subscription.filter,
        });
    }

    /// Runs a grid operation off the actor and replies with its outcome.
    fn run<T: 'static>(
        &mut self,
        ctx: &mut Context<Self>,
        id: Option<RequestId>,
        op: impl std::future::Future<Output = Result<T, GridError>> + 'static,
        reply: impl FnOnce(&mut Session, Option<&RequestId>, T, &mut Context<Self>) + 'static,
    ) {
        ctx.spawn(op.into_actor(self).map(move |result, session, ctx| match result {
            Ok(value) => reply(session, id.as_ref(), value, ctx),
            Err(err) => session.reply_error(id.as_ref(), err, ctx),
        }));
    }

    /// The value, or `None` after replying with the error.
    fn valid<T>(
        &mut self,
        result: Result<T, GridError>,
        id: Option<&RequestId>,
        ctx: &mut Context<Self>,
    ) -> Option<T> {
        result.map_err(|err| self.reply_error(id, err, ctx)).ok()
    }

    fn reply(&mut self, message: &ServerMessage, ctx: &mut Context<Self>) {
        self.outbox.push(Outgoing::Message(self.format.frame(message)));
        self.pump(ctx);
    }

    fn reply_error(&mut self, id: Option<&RequestId>, err: GridError, ctx: &mut Context<Self>) {
        self.reply_detail(id, ErrorDetail::from(err), ctx);
    }

    fn reply_detail(&mut self, id: Option<&RequestId>, detail: ErrorDetail, ctx: &mut Context<Self>) {
        let message = ServerMessage::Error {
            id,
            code: detail.code,
            message: &detail.message,
            current_version: detail.current_version,
        };
        self.reply(&message, ctx);
    }

    /// Encodes the next frames into one batch and hands it to the socket,
    /// until the outbox is empty or the socket is full; then a write task
    /// waits for room, and its completion calls this again.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.closing {
            return;
        }
        let mut batch = FrameBatch::default();
        loop {
            let mut delivered = 0;
            while batch.frames() < WRITE_BATCH {
                let Some(item) = self.outbox.pop() else {
                    break;
                };
                match item {
                    Outgoing::Message(frame) => push_frame(&mut batch, &frame),
                    Outgoing::Event {
                        sub,
                        event,
                        conflated,
                    } => {
                        // Events of a subscription dropped since are not sent.
                        if let Some(subscription) = self.subscriptions.get(&sub) {
                            let payload = event.frame(self.format, &subscription.name, conflated);
                            match self.format {
                                Format::Json => batch.text(&payload),
                                Format::MsgPack => batch.binary(&payload),
                            }
                            delivered += 1;
                        }
                    }
                    Outgoing::Ping => batch.ping(b""),
                    Outgoing::Pong(bytes) => batch.pong(&bytes),
                }
            }
            // One update of the shared counter per batch, not per event.
            self.metrics.events_delivered.inc_by(delivered);
            if batch.frames() == 0 {
                return;
            }
            match self.socket.try_write(batch.take()) {
                Ok(Written::Done) => continue,
                Ok(Written::Full(frames)) => {
                    self.writing = true;
                    let socket = self.socket.clone();
                    let write = async move { socket.write(frames).await };
                    ctx.spawn(write.into_actor(self).map(|written, session, ctx| {
                        session.writing = false;
                        match written {
                            Ok(()) => session.pump(ctx),
                            Err(ws_transport::Closed) => ctx.stop(),
                        }
                    }));
                    return;
                }
                Err(ws_transport::Closed) => return ctx.stop(),
            }
        }
    }

    /// Sends a close frame (as soon as the socket takes it, for a while) and
    /// stops the session; the socket closes once the frame is written.
    fn close(&mut self, code: CloseCode, description: &str, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        self.closing = true;
        let mut frame = FrameBatch::default();
        frame.close(code, description);
        let socket = self.socket.clone();
        let frame = frame.take();
        actix_web::rt::spawn(async move {
            let _ = actix_web::rt::time::timeout(CLOSE_GRACE, socket.write(frame)).await;
        });
        ctx.stop();
    }

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        if self.last_heard.elapsed() > self.settings.client_timeout {
            return self.close(CloseCode::Normal, "no answer to heartbeat", ctx);
        }
        self.outbox.push(Outgoing::Ping);
        self.pump(ctx);
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.metrics.sessions.inc();
        ctx.run_interval(self.settings.heartbeat_interval, |session, ctx| {
            session.heartbeat(ctx)
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.metrics.sessions.dec();
        for (sub, subscription) in std::mem::take(&mut self.subscriptions) {
            self.unregister(sub, subscription);
        }
    }
}

impl StreamHandler<Result<AggregatedMessage, ProtocolError>> for Session {
    fn handle(&mut self, message: Result<AggregatedMessage, ProtocolError>, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        self.last_heard = Instant::now();
        match message {
            Ok(AggregatedMessage::Text(text)) => self.on_payload(text.as_bytes(), ctx),
            Ok(AggregatedMessage::Binary(bytes)) => self.on_payload(&bytes, ctx),
            Ok(AggregatedMessage::Ping(bytes)) => {
                self.outbox.push(Outgoing::Pong(bytes));
                self.pump(ctx);
            }
            Ok(AggregatedMessage::Pong(_)) => {}
            Ok(AggregatedMessage::Close(reason)) => {
                let code = reason.map_or(CloseCode::Normal, |r| r.code);
                self.close(code, "", ctx);
            }
            Err(ProtocolError::Overflow) => self.close(CloseCode::Size, "message too large", ctx),
            Err(ProtocolError::Io(err)) if err.kind() == std::io::ErrorKind::InvalidData => {
                self.close(CloseCode::Invalid, "text frame is not valid UTF-8", ctx)
            }
            Err(err) => self.close(CloseCode::Protocol, &err.to_string(), ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Push> for Session {
    type Result = ();

    fn handle(&mut self, Push { events }: Push, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        for (sub, event) in events {
            let Some(subscription) = self.subscriptions.get_mut(&sub) else {
                continue;
            };
            if let Some(event) = subscription.offer(event) {
                if !self.admit(sub, event, ctx) {
                    return;
                }
            }
        }
        self.pump(ctx);
    }
}

fn push_frame(batch: &mut FrameBatch, frame: &WireFrame) {
    match frame {
        WireFrame::Text(text) => batch.text(text.as_bytes()),
        WireFrame::Binary(bytes) => batch.binary(bytes),
    }
}
