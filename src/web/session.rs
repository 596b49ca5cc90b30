//! The per-session WebSocket actor: it owns one socket. It reads the
//! client's frames, rate-limits them, runs their commands
//! ([`super::command`]), receives its subscriptions' events from the
//! listener as [`Push`] messages, keeps the connection alive with pings, and
//! writes everything its [`Feed`] holds through the socket's write pump. A
//! write that does not complete means the client is not reading (see
//! [`ws_transport`](super::ws_transport) for why the transport is our own):
//! the feed's outbox then conflates and, past its limit, the session closes
//! with 1013.

use std::sync::Arc;
use std::time::Instant;

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, StreamHandler, WrapFuture};
use actix_ws::{AggregatedMessage, CloseCode, ProtocolError};

use super::command::Command;
use super::rate_limit::{RateLimiter, Verdict};
use super::ws_transport::{self, FrameWriter, Written};
use super::ConnectionSlot;
use crate::auth::{Access, Authenticator};
use crate::config::LimitsConfig;
use crate::grid::{Grid, GridError};
use crate::metrics::PushMetrics;
use crate::protocol::codec::Format;
use crate::protocol::decode::decode_request;
use crate::protocol::ws::{snapshot_frame, ClientRequest, RequestId, ServerMessage};
use crate::protocol::{ErrorCode, ErrorDetail};
use crate::push::feed::{Feed, Overloaded};
use crate::push::filter::Filter;
use crate::push::listener::Push;
use crate::push::outbox::Outgoing;
use crate::push::subscription::{Start, StartFrom};
use crate::push::{PushSettings, SubId};

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
    /// The depth and rate limits (subscriptions are the feed's).
    pub(super) limits: Arc<LimitsConfig>,
    pub(super) _slot: ConnectionSlot,
    /// What this connection's token allows.
    pub(super) access: Access,
    pub(super) auth: Arc<Authenticator>,
}

impl Session {
    fn on_payload(&mut self, payload: &[u8], ctx: &mut Context<Self>) {
        let decoded = decode_request(self.format, payload, self.limits.max_depth);
        let verdict = (self.limiter.as_mut()).map_or(Verdict::Admitted, |l| l.admit(Instant::now()));
        let id = match &decoded {
            Ok(request) => request.id.clone(),
            Err(err) => err.id.clone(),
        };
        if verdict != Verdict::Admitted {
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
        match decoded.map_err(|err| GridError::BadRequest(err.message).into()) {
            Ok(ClientRequest { op, .. }) => match Command::from_op(op, &self.access) {
                Ok(command) => self.run(id, command, ctx),
                Err(detail) => self.reply_error(id.as_ref(), detail, ctx),
            },
            Err(detail) => self.reply_error(id.as_ref(), detail, ctx),
        }
    }

    fn run(&mut self, id: Option<RequestId>, command: Command, ctx: &mut Context<Self>) {
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
                let outcome = command.send(&self.grid).into_actor(self);
                ctx.spawn(outcome.map(move |outcome, session, ctx| match outcome {
                    Ok(outcome) => session.reply(&outcome.message(id.as_ref()), ctx),
                    Err(err) => session.reply_error(id.as_ref(), err.into(), ctx),
                }));
            }
            Command::Subscribe { cache, filter, from } => self.subscribe(id, &cache, filter, from, ctx),
            Command::Unsubscribe { sub } => match self.feed.find(&sub) {
                Some(found) => {
                    self.feed.close(found);
                    self.reply(
                        &ServerMessage::Unsubscribed {
                            id: id.as_ref(),
                            sub: &sub,
                        },
                        ctx,
                    );
                }
                None => {
                    let message = format!("no subscription {sub:?} on this connection");
                    self.reply_error(id.as_ref(), GridError::BadRequest(message).into(), ctx);
                }
            },
        }
    }

    fn subscribe(
        &mut self,
        id: Option<RequestId>,
        cache: &str,
        filter: Filter,
        from: StartFrom,
        ctx: &mut Context<Self>,
    ) {
        let opened = (self.grid.cache(cache).map_err(ErrorDetail::from)).and_then(|cache| {
            self.feed
                .open(cache.name().clone(), filter, from)
                .map_err(ErrorDetail::from)
        });
        let (sub, name, start) = match opened {
            Ok(opened) => opened,
            Err(detail) => return self.reply_error(id.as_ref(), detail, ctx),
        };
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
        let begun = self
            .feed
            .begin(sub, start, |chunk| Some(snapshot_frame(format, &chunk)));
        self.delivered(begun, ctx);
        self.start_again(ctx);
    }

    /// Reads the reset snapshots of the subscriptions whose cache started
    /// again (segments declared lost), and sends each once read.
    fn start_again(&mut self, ctx: &mut Context<Self>) {
        for (sub, read) in self.feed.restarts() {
            ctx.spawn(read.into_actor(self).map(move |start, session, ctx| {
                session.begin_again(sub, start, ctx);
            }));
        }
    }

    /// Sends the reset snapshot of a subscription whose cache started
    /// again (segments declared lost). A snapshot that cannot be read
    /// closes the session (1011): its client resumes elsewhere or later,
    /// and a resume from positions of the cache's last life is a reset.
    fn begin_again(&mut self, sub: SubId, start: Result<Start, GridError>, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        match start {
            Ok(start) => self.begin(sub, None, Ok(start), ctx),
            Err(err) => {
                log::warn!(
                    "session {}: no reset snapshot to start again from: {err}",
                    self.feed.id()
                );
                self.close(CloseCode::Error, "the subscription could not start again", ctx);
            }
        }
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
        self.reply(&detail.message(id), ctx);
    }

    /// Writes what the feed holds until it is drained or the socket is
    /// full; then a write task waits for room, and its completion calls this
    /// again.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.writing || self.closing {
            return;
        }
        match self.socket.write_from(&mut self.feed, self.format) {
            Ok(Written::Done) => {}
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
            }
            Err(ws_transport::Closed) => ctx.stop(),
        }
    }

    /// Sends a close frame and stops the session.
    pub(super) fn close(&mut self, code: CloseCode, description: &str, ctx: &mut Context<Self>) {
        if !self.closing {
            self.closing = true;
            self.socket.close(code, description);
            ctx.stop();
        }
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
            Err(err) => {
                let (code, reason) = ws_transport::close_for(&err);
                self.close(code, &reason, ctx)
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// The listener's pushes for this session's subscriptions.
impl Handler<Push> for Session {
    type Result = ();

    fn handle(&mut self, push: Push, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        let queued = self.feed.deliver(push);
        self.delivered(queued, ctx);
        self.start_again(ctx);
    }
}
