//! What the listener reads from segments' histories: a gap in a segment's
//! versions that lasted `listener.gap_fill_after_ms` ([`CheckGaps`]), and
//! every watched segment past what was passed on after a new topology or
//! the node's recovery ([`CatchUp`]). The events read go through the same
//! path as any other; a gap no history holds any longer is skipped.

use std::sync::Arc;
use std::time::Instant;

use actix::{ActorFutureExt, AsyncContext, Context, Handler, Message, WrapFuture};

use super::Listener;
use crate::grid::{Event, Grid, GridError, Position};
use crate::push::sequencer::{Fill, HistoryRead};

impl Listener {
    /// Looks at the gaps again once they may have lasted long enough.
    pub(super) fn check_gaps_later(&mut self, ctx: &mut Context<Self>) {
        if !self.gap_check_scheduled {
            self.gap_check_scheduled = true;
            ctx.notify_later(CheckGaps, self.gap_wait);
        }
    }

    /// Reads each fill from history; each answer is taken by `filled`.
    fn read_history(&mut self, fills: Vec<Fill>, ctx: &mut Context<Self>) {
        let Some(grid) = &self.history else {
            return;
        };
        for fill in fills {
            let grid = grid.clone();
            let read = async move {
                let events = grid
                    .history(fill.cache.as_str(), fill.segment, Position::at(fill.after))
                    .await;
                (fill, events)
            };
            ctx.spawn(read.into_actor(self).map(|(fill, events), listener, ctx| {
                listener.filled(fill, events, ctx);
            }));
        }
    }

    fn filled(
        &mut self,
        fill: Fill,
        events: Result<Option<Vec<Arc<Event>>>, GridError>,
        ctx: &mut Context<Self>,
    ) {
        let now = Instant::now();
        match events {
            Ok(Some(events)) => {
                self.sequencer.filled(&fill, HistoryRead::Read, now);
                let mut filled = false;
                for event in events.into_iter().filter(|e| e.version > fill.after) {
                    filled = true;
                    self.take(event, ctx);
                }
                if filled {
                    self.metrics.gaps_filled.inc();
                }
            }
            Ok(None) => {
                log::warn!(
                    "cache {} segment {}: events after version {} are no longer in any history; \
                     subscribers here skip them",
                    fill.cache,
                    fill.segment.0,
                    fill.after.0
                );
                self.metrics.gaps_skipped.inc();
                let released = self.sequencer.filled(&fill, HistoryRead::NoLongerHeld, now);
                self.route_all(released, ctx);
            }
            Err(err) => {
                log::debug!(
                    "cache {} segment {}: gap not filled yet: {err}",
                    fill.cache,
                    fill.segment.0
                );
                self.sequencer.filled(&fill, HistoryRead::Failed, now);
                self.check_gaps_later(ctx);
            }
        }
    }
}

/// Reads from history the gaps that lasted long enough; the listener
/// sends it to itself.
#[derive(Message)]
#[rtype(result = "()")]
struct CheckGaps;

impl Handler<CheckGaps> for Listener {
    type Result = ();

    fn handle(&mut self, _: CheckGaps, ctx: &mut Context<Self>) {
        self.gap_check_scheduled = false;
        let fills = self.sequencer.gaps_older_than(self.gap_wait, Instant::now());
        self.read_history(fills, ctx);
        if self.sequencer.has_gaps() {
            self.check_gaps_later(ctx);
        }
    }
}

/// Where to read history to fill gaps from: given once the grid exists
/// (the grid publishes to the listener, so the listener comes first).
#[derive(Message)]
#[rtype(result = "()")]
pub struct FillGapsFrom(pub Grid);

impl Handler<FillGapsFrom> for Listener {
    type Result = ();

    fn handle(&mut self, FillGapsFrom(grid): FillGapsFrom, _: &mut Context<Self>) {
        self.history = Some(grid);
    }
}

/// Reads every watched segment's history past what was passed on, from
/// its current owners: sent after each new topology, so what a member
/// missed while the others counted it out reaches its subscribers even
/// if no later write to the segment shows the gap.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CatchUp;

impl Handler<CatchUp> for Listener {
    type Result = ();

    fn handle(&mut self, _: CatchUp, ctx: &mut Context<Self>) {
        let fills = self.sequencer.catch_up();
        self.read_history(fills, ctx);
    }
}
