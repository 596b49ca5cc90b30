//! [`Inbox`]: one subscription's events for async code that is not an
//! actor (an SSE stream, a held long poll). A small forwarding actor is
//! registered with the listener like a WebSocket session and hands each
//! [`Push`] to a channel the inbox reads; dropping the inbox unregisters it.

use std::sync::Arc;

use actix::{Actor, Addr, Context, Handler};
use tokio::sync::mpsc;

use super::filter::Filter;
use super::listener::{Listener, Push, Register, Unregister};
use super::{new_session_id, SessionId};
use crate::grid::{CacheName, GridError};
use crate::protocol::ws::EncodedEvent;

/// The only subscription of an inbox's session.
const SUB: super::SubId = 1;

pub struct Inbox {
    events: mpsc::UnboundedReceiver<Vec<Arc<EncodedEvent>>>,
    listener: Addr<Listener>,
    session: SessionId,
    cache: CacheName,
    filter: Filter,
}

impl Inbox {
    /// Registers `filter` on `cache`; every event the listener handles
    /// after this returns reaches the inbox.
    pub async fn register(
        listener: &Addr<Listener>,
        cache: CacheName,
        filter: Filter,
    ) -> Result<Inbox, GridError> {
        let (tx, events) = mpsc::unbounded_channel();
        let forwarder = Forwarder(tx).start();
        let session = new_session_id();
        listener
            .send(Register {
                session,
                sub: SUB,
                cache: cache.clone(),
                filter: filter.clone(),
                recipient: forwarder.recipient(),
            })
            .await
            .map_err(|e| GridError::Unavailable(format!("listener unavailable: {e}")))?;
        Ok(Inbox {
            events,
            listener: listener.clone(),
            session,
            cache,
            filter,
        })
    }

    /// The next batch of events, in the order the listener routed them.
    pub async fn recv(&mut self) -> Option<Vec<Arc<EncodedEvent>>> {
        self.events.recv().await
    }

    /// A batch already waiting, without waiting for one.
    pub fn try_recv(&mut self) -> Option<Vec<Arc<EncodedEvent>>> {
        self.events.try_recv().ok()
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        // The listener drops its handle on the forwarder, which then stops.
        self.listener.do_send(Unregister {
            session: self.session,
            sub: SUB,
            cache: self.cache.clone(),
            filter: self.filter.clone(),
        });
    }
}

struct Forwarder(mpsc::UnboundedSender<Vec<Arc<EncodedEvent>>>);

impl Actor for Forwarder {
    type Context = Context<Self>;
}

impl Handler<Push> for Forwarder {
    type Result = ();

    fn handle(&mut self, push: Push, _: &mut Context<Self>) {
        let events = push.events.into_iter().map(|(_, event)| event).collect();
        // A dropped inbox is about to be unregistered; nothing to deliver.
        let _ = self.0.send(events);
    }
}
