//! The listener's sequencing against a real grid: events reach it through
//! a lossy, repeating link (as a member's events arrive from several owners,
//! one of which missed some), and each subscription still gets every
//! version of a segment once and in order, the missing ones read from the
//! grid's history.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Arbiter, Context, Handler};
use pushgrid::cluster::membership::{Member, Membership};
use pushgrid::config::ListenerConfig;
use pushgrid::grid::owners::{MemberId, OwnerTables};
use pushgrid::grid::{
    CacheConfig, CacheDeleted, CacheName, CacheStartedAgain, Grid, GridLimits, GridSetup, JsonValue,
    Precondition, Published,
};
use pushgrid::metrics::Metrics;
use pushgrid::push::filter::Filter;
use pushgrid::push::listener::{FillGapsFrom, Listener, Positioned, Push, PushSink, Register};
use tokio::sync::mpsc;

/// Passes the grid's events on to the listener twice each, except the
/// versions it was told to lose.
struct LossyLink {
    listener: Addr<Listener>,
    lose: HashSet<u64>,
}

impl Actor for LossyLink {
    type Context = Context<Self>;
}

impl Handler<Published> for LossyLink {
    type Result = ();
    fn handle(&mut self, published: Published, _: &mut Context<Self>) {
        if !self.lose.contains(&published.0.version.0) {
            self.listener.do_send(published.clone());
            self.listener.do_send(published);
        }
    }
}

impl Handler<CacheDeleted> for LossyLink {
    type Result = ();
    fn handle(&mut self, deleted: CacheDeleted, _: &mut Context<Self>) {
        self.listener.do_send(deleted);
    }
}

impl Handler<CacheStartedAgain> for LossyLink {
    type Result = ();
    fn handle(&mut self, started: CacheStartedAgain, _: &mut Context<Self>) {
        self.listener.do_send(started);
    }
}

#[actix::test]
async fn versions_missed_on_the_way_are_read_from_history_and_delivered_once_in_order() {
    let metrics = Metrics::new();
    let config = ListenerConfig {
        gap_fill_after_ms: 50,
        ..ListenerConfig::default()
    };
    let listener = Listener::new(&config, metrics.push.clone()).start();
    let link = LossyLink {
        listener: listener.clone(),
        lose: HashSet::from([3, 4, 7]),
    }
    .start();
    let local = MemberId(Arc::from("n1"));
    let membership = Membership::new(Member {
        id: local.clone(),
        address: "127.0.0.1:1".into(),
    })
    .start();
    let grid = Grid::new(GridSetup {
        arbiters: vec![Arbiter::new().handle()],
        owner_tables: OwnerTables::kept_by(&membership),
        local_member: local,
        events: link.clone().recipient(),
        deletions: link.clone().recipient(),
        restarts: link.recipient(),
        metrics: metrics.grid.clone(),
        limits: GridLimits {
            max_caches: 10,
            max_segments: 1000,
        },
        replicas: None,
        forwarder: None,
        leased: None,
    });
    listener.do_send(FillGapsFrom(grid.clone()));
    let cache = CacheName::parse("c").unwrap();
    let one_segment = CacheConfig {
        segments: 1,
        ..CacheConfig::default()
    };
    grid.create_cache(cache.clone(), one_segment).await.unwrap();

    let (pushes, mut pushed) = mpsc::unbounded_channel::<Push>();
    listener
        .send(Register {
            session: 1,
            sub: 1,
            cache: cache.clone(),
            filter: Filter::All,
            pushes: PushSink::Channel(pushes),
        })
        .await
        .unwrap();
    let snapshot = grid.snapshot("c", None).await.unwrap();
    listener.do_send(Positioned {
        session: 1,
        sub: 1,
        positions: snapshot.iter().map(|s| (s.segment, s.position.version)).collect(),
    });

    for n in 0..8 {
        let value = JsonValue::parse(&n.to_string()).unwrap();
        grid.put(
            "c",
            Arc::from(format!("k{}", n % 3)),
            value,
            Precondition::None,
            None,
        )
        .await
        .unwrap();
    }

    let mut versions = Vec::new();
    let received = tokio::time::timeout(Duration::from_secs(10), async {
        while versions.len() < 8 {
            let push = pushed.recv().await.expect("the listener is running");
            versions.extend(push.events.iter().map(|(_, e)| e.event.version.0));
        }
    })
    .await;
    assert!(
        received.is_ok(),
        "versions 3, 4 and 7 never arrived: got {versions:?}"
    );
    assert_eq!(versions, (1..=8).collect::<Vec<_>>());
    // Nothing more comes: each version was delivered once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(pushed.try_recv().is_err(), "a version was delivered twice");
    assert!(
        metrics.push.gaps_filled.get() >= 1,
        "the gaps were read from history"
    );
    assert!(
        metrics.push.duplicates_dropped.get() >= 5,
        "the second copy of each version was dropped"
    );
}
