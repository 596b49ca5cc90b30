//! The demo feed: a handful of simulated football matches played into the
//! `scores` cache through the grid's own write path, so that a new user sees
//! the scoreboard move. Each match is written with compare-and-set on the
//! version of its last write: when a person changes a score on the page, the
//! feed's next write fails, and it adopts that score instead of overwriting
//! it. In a cluster every member runs the feed, but only one plays it at a
//! time (the one its `plays_here` says: the member with the lowest id), so
//! the cluster's pages show one set of matches, which another member goes
//! on with if that one leaves.

mod clubs;
pub mod fixture;

use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, WrapFuture};

use crate::grid::{CacheConfig, CacheName, Creation, Grid, GridError, JsonValue, Key, Precondition, Version};
use fixture::{Fixture, Tick};

pub const DEMO_CACHE: &str = "scores";
/// Matches on the board at once; each club plays one at a time.
pub const MATCHES: usize = 6;
const _: () = assert!(2 * MATCHES <= clubs::CLUB_COUNT);

struct Slot {
    key: Key,
    fixture: Fixture,
    /// The version of the feed's last write; `None` before the first.
    version: Option<Version>,
    /// A write or read of this match is under way.
    busy: bool,
}

pub struct DemoFeed {
    grid: Grid,
    rng: fastrand::Rng,
    slots: Vec<Slot>,
    next_match: u64,
    cursor: usize,
    /// Time between two writes: each match advances a game minute every
    /// second at rate 1.
    interval: Duration,
    /// Whether this node plays the matches now (in a cluster, one member).
    plays_here: Box<dyn Fn() -> bool>,
}

impl DemoFeed {
    /// Creates the `scores` cache if needed and starts the feed; `rate` is
    /// game minutes per second. It writes only while `plays_here` says so.
    pub async fn start(
        grid: Grid,
        rate: f64,
        plays_here: Box<dyn Fn() -> bool>,
    ) -> Result<actix::Addr<DemoFeed>, GridError> {
        let name = CacheName::parse(DEMO_CACHE)?;
        match grid.create_cache(name, CacheConfig::default()).await {
            Ok(Creation::Created | Creation::AlreadyExists) | Err(GridError::Conflict(_)) => {}
            Err(err) => return Err(err),
        }
        let mut feed = DemoFeed {
            grid,
            slots: Vec::new(),
            next_match: 1,
            cursor: 0,
            interval: Duration::from_secs_f64(1.0 / (rate.max(0.01) * MATCHES as f64)),
            rng: fastrand::Rng::new(),
            plays_here,
        };
        for _ in 0..MATCHES {
            let slot = feed.new_slot(true);
            feed.slots.push(slot);
        }
        Ok(feed.start())
    }

    /// A new fixture; at start-up, already some way into its match so the
    /// board does not open with every game at kick-off.
    fn new_slot(&mut self, started_mid_match: bool) -> Slot {
        let playing: Vec<&str> = self.slots.iter().flat_map(|slot| slot.fixture.clubs()).collect();
        let mut fixture = Fixture::new(&mut self.rng, &playing);
        if started_mid_match {
            for _ in 0..self.rng.u32(0..80) {
                if fixture.tick(&mut self.rng) == Tick::Done {
                    fixture = Fixture::new(&mut self.rng, &playing);
                }
            }
        }
        let key: Key = format!("match/{}", self.next_match).into();
        self.next_match += 1;
        Slot {
            key,
            fixture,
            version: None,
            busy: false,
        }
    }

    /// Starts a new match in the place of one that is over; its clubs are
    /// free again.
    fn replace_slot(&mut self, index: usize) {
        self.slots.remove(index);
        let fresh = self.new_slot(false);
        self.slots.insert(index, fresh);
    }

    fn step(&mut self, ctx: &mut Context<Self>) {
        if !(self.plays_here)() {
            return;
        }
        let index = self.cursor;
        self.cursor = (self.cursor + 1) % self.slots.len();
        if self.slots[index].busy {
            return;
        }
        let slot = &mut self.slots[index];
        if slot.version.is_some() && slot.fixture.tick(&mut self.rng) == Tick::Done {
            let precondition = slot.version.map_or(Precondition::None, Precondition::IfVersion);
            let remove = self.grid.remove(DEMO_CACHE, slot.key.clone(), precondition);
            ctx.spawn(remove.into_actor(self).map(|_, _, _| ()));
            self.replace_slot(index);
        }
        self.write(index, ctx);
    }

    fn write(&mut self, index: usize, ctx: &mut Context<Self>) {
        let slot = &mut self.slots[index];
        let value = serde_json::to_value(&slot.fixture).expect("a fixture always encodes");
        let precondition = slot
            .version
            .map_or(Precondition::IfAbsent, Precondition::IfVersion);
        let put = self.grid.put(
            DEMO_CACHE,
            slot.key.clone(),
            JsonValue::from_value(&value),
            precondition,
            None,
        );
        slot.busy = true;
        ctx.spawn(put.into_actor(self).map(move |result, feed, ctx| {
            let slot = &mut feed.slots[index];
            slot.busy = false;
            match result {
                Ok(outcome) => slot.version = Some(outcome.version),
                Err(GridError::VersionMismatch { current: Some(_) }) => feed.adopt(index, ctx),
                // Removed by someone: this match is over; start another.
                Err(GridError::VersionMismatch { current: None }) => feed.replace_slot(index),
                Err(err) => log::warn!("demo feed write failed: {err}"),
            }
        }));
    }

    /// Someone else wrote this match: take their score and version.
    fn adopt(&mut self, index: usize, ctx: &mut Context<Self>) {
        let slot = &mut self.slots[index];
        slot.busy = true;
        let get = self.grid.get(DEMO_CACHE, slot.key.clone());
        ctx.spawn(get.into_actor(self).map(move |result, feed, _| {
            let slot = &mut feed.slots[index];
            slot.busy = false;
            match result {
                Ok(entry) => {
                    if let Ok(written) = serde_json::from_str::<Fixture>(entry.value.get()) {
                        slot.fixture.adopt_score(&written);
                    }
                    slot.version = Some(entry.version);
                }
                Err(_) => slot.version = None,
            }
        }));
    }
}

impl Actor for DemoFeed {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if (self.plays_here)() {
            for index in 0..self.slots.len() {
                self.write(index, ctx);
            }
        }
        ctx.run_interval(self.interval, |feed, ctx| feed.step(ctx));
    }
}
