//! The per-session WebSocket actor: it owns one socket. It reads the
//! client's frames, rate-limits them, runs their commands
//! ([`super::command`]), receives its subscriptions' events as a stream of
//! pushes from the listener, keeps the connection alive with pings, and
//! writes everything its [`Feed`] holds through the socket's write pump.
//!
//! The transport under the actor is not actix-web-actors, which queues
//! outgoing frames in a private buffer with no way to see how much is
//! waiting, so a session could not tell a slow client from a fast one.
//! [`ws_transport`](super::ws_transport) (actix-ws for the handshake and
//! reading, batched frame writing of its own) hands frames to the socket
//! through a bounded channel; a write that does not complete means the
//! client is not reading, and the feed's outbox then conflates and, past
//! its limit, the session closes with 1013.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, StreamHandler, WrapFuture};
use actix_ws::{AggregatedMessage, CloseCode, ProtocolError};

use super::command::Command;
use super::rate_limit::{RateLimiter, Verdict};
use super::ws_transport::{self, FrameBatch, FrameWriter, Written};
use super::ConnectionSlot;
use crate::auth::{Access, Authenticator};
use crate::config::LimitsConfig;
use crate::grid::{CacheName, Grid, GridError};
use crate::metrics::PushMetrics;
use crate::protocol::codec::{Format, WireFrame};
use crate::protocol::ws::{decode_request, wire_positions, ClientRequest, RequestId, ServerMessage};
use crate::protocol::{ErrorCode, ErrorDetail};
use crate::push::feed::{Feed, Item, Overloaded};
use crate::push::filter::Filter;
use crate::push::listener::Push;
use crate::push::outbox::Outgoing;
use crate::push::subscription::{Start, StartFrom};
use crate::push::{PushSettings, SubId};

/// Frames encoded into one buffer for the socket.
const WRITE_BATCH: usize = 64;
/// How long a close frame may wait for a socket that is not draining. A
/// stopped session holds only its socket and the transport's few batches
/// meanwhile; a stalled client that resumes reading within this gets its
/// close code (1013) instead of a bare disconnect.
const CLOSE_GRACE: Duration = Duration::from_secs(30);

pub struct Session {
    pub(super) format: Format,
    pub(super) socket: FrameWriter,
    pub(super) grid: Grid,
    pub(super) feed: Feed,
    pub(super) settings: Arc<PushSettings>,
    pub(super) metrics: PushMetrics,
    /// A write task is handing frames to the socket.
    pub(super) writing: bool,
    pub(super) last_heard: Instant,
    pub(super) closing: bool,
    /// `None` when operations are not limited.
    pub(super) limiter: Option<RateLimiter>,
    pub(super) limits: Arc<LimitsConfig>,
    pub(super) _slot: ConnectionSlot,
    /// What this connection's token allows.
    pub(super) access: Access,
    pub(super) auth: Arc<Authenticator>,
}

impl Session {
    fn on_payload(&mut self, payload: &[u8], ctx: &mut Context<Self>) {
        let decoded = decode_request(self.format, payload, self.limits.max_depth);
        let verdict = match self.limiter.as_mut() {
            Some(limiter) => limiter.admit(Instant::now()),
            None => Verdict::Admitted,
        };
        if verdict != Verdict::Admitted {
            let id = match &decoded {
                Ok(request) => request.id.clone(),
                Err(err) => err.id.clone(),
            };
            let message = format!("more than {} operations per second", self.limits.ops_per_second);
            self.reply_error(
                id.as_ref(),
                ErrorDetail::new(ErrorCode::RateLimited, message),
                ctx,
            );
            if verdict == Verdict::Abusive {
                self.close(CloseCode::Policy, "rate limit persistently exceeded", ctx);
            }
            return;
        }
        match decoded {
            Ok(request) => self.on_request(request, ctx),
            Err(err) => self.reply_error(err.id.as_ref(), GridError::BadRequest(err.message).into(), ctx),
        }
    }

    fn on_request(&mut self, ClientRequest { id, op }: ClientRequest, ctx: &mut Context<Self>) {
        let command = match Command::from_op(op, &self.access) {
            Ok(command) => command,
            Err(detail) => return self.reply_error(id.as_ref(), detail, ctx),
        };
        match command {
            Command::Ping => self.reply(&ServerMessage::Pong { id: id.as_ref() }, ctx),
            Command::Auth { token } => match self.auth.authenticate(Some(&token)) {
                Ok(access) => {
                    self.access = access;
                    self.reply(&ServerMessage::Authenticated { id: id.as_ref() }, ctx)
                }
                Err(err) => self.reply_error(id.as_ref(), err.into(), ctx),
            },
            Command::Grid(command) => {
                // Sent here, not inside the spawned future: the request is
                // queued at its partition now, in the order the client sent it.
                let reply = command.send(&self.grid);
                ctx.spawn(
                    reply
                        .into_actor(self)
                        .map(move |outcome, session, ctx| match outcome {
                            Ok(outcome) => session.reply(&outcome.message(id.as_ref()), ctx),
                            Err(err) => session.reply_error(id.as_ref(), err.into(), ctx),
                        }),
                );
            }
            Command::Subscribe { cache, filter, from } => match self.grid.cache(&cache) {
                Ok(cache) => self.subscribe(id, cache.name().clone(), filter, from, ctx),
                Err(err) => self.reply_error(id.as_ref(), err.into(), ctx),
            },
            Command::Unsubscribe { sub: name } => match self.feed.find(&name) {
                Some(sub) => {
                    self.feed.close(sub);
                    let message = ServerMessage::Unsubscribed {
                        id: id.as_ref(),
                        sub: &name,
                    };
                    self.reply(&message, ctx);
                }
                None => {
                    let message = format!("no subscription {name:?} on this connection");
                    self.reply_error(id.as_ref(), GridError::BadRequest(message).into(), ctx);
                }
            },
        }
    }

    fn subscribe(
        &mut self,
        id: Option<RequestId>,
        cache: CacheName,
        filter: Filter,
        from: StartFrom,
        ctx: &mut Context<Self>,
    ) {
        if self.feed.len() >= self.limits.max_subscriptions {
            let message = format!(
                "at most {} subscriptions per connection",
                self.limits.max_subscriptions
            );
            return self.reply_error(
                id.as_ref(),
                ErrorDetail::new(ErrorCode::RateLimited, message),
                ctx,
            );
        }
        let (sub, name, start) = self.feed.open(cache, filter, from);
        self.reply(
            &ServerMessage::Subscribed {
                id: id.as_ref(),
                sub: &name,
            },
            ctx,
        );
        ctx.spawn(start.into_actor(self).map(move |start, session, ctx| {
            session.begin(sub, id, start, ctx);
        }));
    }

    /// Sends what the subscription starts with, then its held events.
    fn begin(
        &mut self,
        sub: SubId,
        id: Option<RequestId>,
        start: Result<Start, GridError>,
        ctx: &mut Context<Self>,
    ) {
        let start = match start {
            Ok(start) => start,
            Err(err) => {
                // Closed unless the client unsubscribed meanwhile.
                if self.feed.close(sub) {
                    self.reply_error(id.as_ref(), err.into(), ctx);
                }
                return;
            }
        };
        let format = self.format;
        let begun = self.feed.begin(sub, start, |chunk| {
            let positions = chunk.done.then(|| wire_positions(chunk.positions));
            let message = ServerMessage::Snapshot {
                sub: chunk.sub,
                entries: chunk.entries,
                done: chunk.done,
                positions: positions.as_ref(),
                reset: chunk.reset,
            };
            Some(format.frame(&message))
        });
        self.delivered(begun, ctx);
    }

    /// Writes what was queued, or closes a session that cannot keep up.
    fn delivered(&mut self, queued: Result<(), Overloaded>, ctx: &mut Context<Self>) {
        match queued {
            Ok(()) => self.pump(ctx),
            Err(Overloaded { pending_bytes }) => {
                log::warn!(
                    "session {} closed: {pending_bytes} bytes waiting even with conflation",
                    self.feed.id()
                );
                self.close(CloseCode::Again, "cannot keep up", ctx);
            }
        }
    }

    fn reply(&mut self, message: &ServerMessage, ctx: &mut Context<Self>) {
        self.feed.push(Outgoing::Message(self.format.frame(message)));
        self.pump(ctx);
    }

    fn reply_error(&mut self, id: Option<&RequestId>, detail: ErrorDetail, ctx: &mut Context<Self>) {
        let message = ServerMessage::Error {
            id,
            code: detail.code,
            message: &detail.message,
            current_version: detail.current_version,
        };
        self.reply(&message, ctx);
    }

    /// Encodes the next frames into one batch and hands it to the socket,
    /// until the feed is drained or the socket is full; then a write task
    /// waits for room, and its completion calls this again.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.closing {
            return;
        }
        let format = self.format;
        let mut batch = FrameBatch::default();
        loop {
            // Items that write nothing (events of a closed subscription)
            // take no room in the batch.
            while batch.frames() < WRITE_BATCH {
                let room = WRITE_BATCH - batch.frames();
                let handed = self.feed.drain(room, |item| match item {
                    Item::Message(WireFrame::Text(text)) => batch.text(text.as_bytes()),
                    Item::Message(WireFrame::Binary(bytes)) => batch.binary(&bytes),
                    Item::Event {
                        sub,
                        event,
                        conflated,
                        ..
                    } => {
                        let payload = event.frame(format, sub, conflated);
                        match format {
                            Format::Json => batch.text(&payload),
                            Format::MsgPack => batch.binary(&payload),
                        }
                    }
                    Item::Heartbeat => batch.ping(b""),
                    Item::Pong(bytes) => batch.pong(&bytes),
                });
                if handed == 0 {
                    break;
                }
            }
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
    pub(super) fn close(&mut self, code: CloseCode, description: &str, ctx: &mut Context<Self>) {
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
        self.feed.push(Outgoing::Heartbeat);
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
        // Dropping the feed (with the session) unregisters its subscriptions.
        self.metrics.sessions.dec();
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
                self.feed.push(Outgoing::Pong(bytes));
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

/// The listener's pushes for this session's subscriptions.
impl StreamHandler<Push> for Session {
    fn handle(&mut self, push: Push, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        let queued = self.feed.deliver(push);
        self.delivered(queued, ctx);
    }

    /// The listener is gone only when the node is; the socket's stream
    /// decides when the session ends.
    fn finished(&mut self, _: &mut Context<Self>) {}
}
