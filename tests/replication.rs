//! Two grids in one process, as two members of a cluster would run them,
//! their segments placed by one owner table and their primaries reaching
//! the other's backups through a sink that calls the other grid directly
//! (the cluster's link does the same over TCP). A write is acknowledged
//! once the other owner has it, and survives the loss of its primary.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix::{Actor, Arbiter, Context, Handler};
use pushgrid::cluster::membership::{Member, Membership};
use pushgrid::grid::forward::{ForwardFuture, Forwarded, ForwardedReply, Forwarder};
use pushgrid::grid::owners::{MemberId, OwnerTable, OwnerTables, SegmentOwners};
use pushgrid::grid::replication::{ReplicaFuture, ReplicaMessage, ReplicaReply, ReplicaSink};
use pushgrid::grid::segment::PutRequest;
use pushgrid::grid::{
    CacheConfig, CacheDeleted, CacheName, CacheStartedAgain, Grid, GridError, GridLimits, GridSetup,
    Incarnation, JsonValue, OpId, Precondition, Published, SegmentId,
};
use pushgrid::metrics::Metrics;

/// Hands each message to the grid of the member it is for.
#[derive(Default)]
struct Direct(Mutex<HashMap<MemberId, Grid>>);

impl ReplicaSink for Direct {
    fn send(&self, to: &MemberId, message: ReplicaMessage) -> ReplicaFuture {
        let grid = self.0.lock().unwrap().get(to).cloned();
        Box::pin(async move {
            match grid {
                Some(grid) => Ok(grid.replicate(message).await),
                None => Err("member gone".to_string()),
            }
        })
    }
}

impl Forwarder for Direct {
    fn forward(&self, to: &MemberId, request: Forwarded) -> ForwardFuture {
        let grid = self.0.lock().unwrap().get(to).cloned();
        Box::pin(async move {
            match grid {
                Some(grid) => Ok(grid.serve_forwarded(request).await),
                None => Err(GridError::Unavailable("member gone".into())),
            }
        })
    }
}

struct Discard;

impl Actor for Discard {
    type Context = Context<Self>;
}

impl Handler<Published> for Discard {
    type Result = ();
    fn handle(&mut self, _: Published, _: &mut Context<Self>) {}
}

impl Handler<CacheDeleted> for Discard {
    type Result = ();
    fn handle(&mut self, _: CacheDeleted, _: &mut Context<Self>) {}
}

impl Handler<CacheStartedAgain> for Discard {
    type Result = ();
    fn handle(&mut self, _: CacheStartedAgain, _: &mut Context<Self>) {}
}

fn member(name: &str) -> MemberId {
    MemberId(Arc::from(name))
}

fn grid(name: &str, sink: Arc<Direct>) -> Grid {
    let membership = Membership::new(Member {
        id: member(name),
        address: format!("{name}:8080"),
    })
    .start();
    let discard = Discard.start();
    let grid = Grid::new(GridSetup {
        arbiters: vec![Arbiter::new().handle()],
        owner_tables: OwnerTables::kept_by(&membership),
        local_member: member(name),
        events: discard.clone().recipient(),
        deletions: discard.clone().recipient(),
        restarts: discard.recipient(),
        metrics: Metrics::new().grid.clone(),
        limits: GridLimits {
            max_caches: 10,
            max_segments: 1000,
        },
        replicas: Some(sink.clone()),
        forwarder: Some(sink.clone()),
        leased: None,
    });
    sink.0.lock().unwrap().insert(member(name), grid.clone());
    grid
}

/// The owner table of cache `c` at `epoch`: `rows[s]` owns segment `s`,
/// primary first.
fn table(rows: &[&[&str]], epoch: u64) -> OwnerTable {
    let owners = SegmentOwners::from_rows(
        rows.iter()
            .map(|row| row.iter().map(|n| member(n)).collect())
            .collect(),
    );
    OwnerTable {
        epoch,
        ..OwnerTable::alone(owners)
    }
}

async fn position(grid: &Grid, segment: u32) -> Option<u64> {
    let message = ReplicaMessage::Position {
        cache: CacheName::parse("c").unwrap(),
        segment: SegmentId(segment),
        epoch: 0, // asks without fencing anything
    };
    match grid.replicate(message).await {
        ReplicaReply::Position { sequence } => Some(sequence),
        _ => None,
    }
}

/// A key of cache `c` (2 segments) that hashes to `segment`.
fn key_in(grid: &Grid, segment: u32, n: usize) -> Arc<str> {
    let cache = grid.cache("c").unwrap();
    (0..)
        .map(|i| format!("k{i}"))
        .filter(|k| cache.segment_of(k) == SegmentId(segment))
        .nth(n)
        .map(Arc::from)
        .unwrap()
}

/// Members a and b with cache `c` of two segments and two owners: segment
/// 0 led by a with b as backup, segment 1 the other way round.
async fn two_owners() -> (Arc<Direct>, Grid, Grid) {
    let sink = Arc::new(Direct::default());
    let (a, b) = (grid("a", sink.clone()), grid("b", sink.clone()));
    let config = CacheConfig {
        segments: 2,
        num_owners: Some(2),
        ..CacheConfig::default()
    };
    for grid in [&a, &b] {
        grid.create_cache(CacheName::parse("c").unwrap(), config.clone())
            .await
            .unwrap();
    }
    let owners = table(&[&["a", "b"], &["b", "a"]], 1);
    // Each member learns of the epoch on its own; b first here.
    b.set_owners("c", &owners, true).await.unwrap();
    a.set_owners("c", &owners, true).await.unwrap();
    (sink, a, b)
}

#[actix::test]
async fn a_write_is_on_both_owners_when_acknowledged_and_outlives_its_primary() {
    let (sink, a, b) = two_owners().await;

    let value = JsonValue::parse("0.22941408906430394").unwrap();
    for n in 0..5 {
        let key = key_in(&a, 0, n);
        a.put("c", key, value.clone(), Precondition::None, None)
            .await
            .unwrap();
        assert_eq!(
            position(&b, 0).await,
            Some(n as u64 + 1),
            "b had write {n} when a acknowledged it"
        );
    }
    let key = key_in(&b, 1, 0);
    b.put("c", key.clone(), value.clone(), Precondition::None, None)
        .await
        .unwrap();
    assert_eq!(position(&a, 1).await, Some(1));
    // a forwards what b leads, and b serves it.
    let forwarded = a
        .put("c", key.clone(), value.clone(), Precondition::None, None)
        .await
        .unwrap();
    assert_eq!(forwarded.version.0, 2);
    assert_eq!(
        position(&a, 1).await,
        Some(2),
        "a's backup copy has its own forwarded write"
    );
    assert_eq!(a.get("c", key.clone()).await.unwrap().version.0, 2);
    let page = a.list("c", "", None, 100).await.unwrap();
    assert_eq!(page.entries.len(), 6, "a listing gathers both members' segments");
    // Never twice: b refuses what a forwarded for a segment b does not lead.
    let twice = b
        .serve_forwarded(Forwarded::Get {
            cache: CacheName::parse("c").unwrap(),
            key: key_in(&b, 0, 0),
        })
        .await;
    assert!(
        matches!(twice, ForwardedReply::Entry(Err(GridError::Unavailable(_)))),
        "{twice:?}"
    );

    // a is gone: b owns everything alone at epoch 2 and serves a's writes.
    sink.0.lock().unwrap().remove(&member("a"));
    b.set_owners("c", &table(&[&["b"], &["b"]], 2), true)
        .await
        .unwrap();
    for n in 0..5 {
        let entry = b.get("c", key_in(&b, 0, n)).await.unwrap();
        assert_eq!(entry.value.get(), "0.22941408906430394");
        assert_eq!(entry.version.0, n as u64 + 1);
    }
    let next = b
        .put("c", key_in(&b, 0, 9), value, Precondition::None, None)
        .await
        .unwrap();
    assert_eq!(next.version.0, 6, "versions go on where a left them");
    assert_eq!(b.list("c", "", None, 100).await.unwrap().entries.len(), 7);
}

#[actix::test]
async fn a_lost_segment_is_unavailable_until_declared_lost_then_starts_again_empty() {
    let sink = Arc::new(Direct::default());
    let b = grid("b", sink.clone());
    let config = CacheConfig {
        segments: 2,
        num_owners: Some(1),
        ..CacheConfig::default()
    };
    b.create_cache(CacheName::parse("c").unwrap(), config)
        .await
        .unwrap();
    b.set_owners("c", &table(&[&["b"], &["b"]], 1), true)
        .await
        .unwrap();
    let value = JsonValue::parse("1").unwrap();
    let (kept, lost_key) = (key_in(&b, 0, 0), key_in(&b, 1, 0));
    for key in [&kept, &lost_key] {
        b.put("c", key.clone(), value.clone(), Precondition::None, None)
            .await
            .unwrap();
    }
    let incarnation = b.cache("c").unwrap().incarnation();

    // Segment 1's owners all went without handing it over.
    let lost = OwnerTable {
        lost: Arc::new([1].into()),
        ..table(&[&["b"], &["b"]], 2)
    };
    b.set_owners("c", &lost, true).await.unwrap();
    assert!(
        b.get("c", kept.clone()).await.is_ok(),
        "segment 0 is still served"
    );
    let unavailable = |result: Result<(), GridError>| matches!(result, Err(GridError::Unavailable(_)));
    assert!(
        unavailable(b.get("c", lost_key.clone()).await.map(|_| ())),
        "never served empty"
    );
    assert!(unavailable(
        b.put("c", lost_key.clone(), value.clone(), Precondition::None, None)
            .await
            .map(|_| ())
    ));
    assert!(
        unavailable(b.list("c", "", None, 10).await.map(|_| ())),
        "a listing is never read in part"
    );
    assert_eq!(b.cache("c").unwrap().segments_lost(), (1, 0));

    // An operator declares it lost: it starts again, empty, in a new
    // incarnation, and segment 0 keeps its data.
    let declared = OwnerTable {
        declared_lost: 1,
        incarnation: Some(Incarnation(0x5eed)),
        ..table(&[&["b"], &["b"]], 3)
    };
    b.set_owners("c", &declared, true).await.unwrap();
    assert_eq!(
        b.get("c", lost_key.clone()).await.unwrap_err(),
        GridError::NotFound
    );
    let rewritten = b
        .put("c", lost_key, value, Precondition::None, None)
        .await
        .unwrap();
    assert_eq!(rewritten.version.0, 1, "the segment starts again");
    assert_eq!(b.get("c", kept).await.unwrap().version.0, 1);
    let cache = b.cache("c").unwrap();
    assert_eq!(cache.segments_lost(), (0, 1));
    assert_ne!(
        cache.incarnation(),
        incarnation,
        "positions of the old data are reset"
    );
}

#[actix::test]
async fn what_a_backup_may_lack_is_not_shown_and_a_retried_write_is_applied_once() {
    let (sink, a, b) = two_owners().await;
    let key = key_in(&a, 0, 0);
    let named = |value: &str| PutRequest {
        key: key.clone(),
        value: JsonValue::parse(value).unwrap(),
        precondition: Precondition::None,
        lifespan_ms: None,
        op: Some(OpId::parse("w1").unwrap()),
    };
    let unavailable = |result: Result<(), GridError>| matches!(result, Err(GridError::Unavailable(_)));

    // b cannot be reached: the write's outcome is unknown, and a read on a
    // does not show it, as a failover to b would lose it.
    let b_grid = sink.0.lock().unwrap().remove(&member("b")).unwrap();
    assert!(unavailable(a.put_request("c", named("1")).await.map(|_| ())));
    assert!(unavailable(a.get("c", key.clone()).await.map(|_| ())));
    assert_eq!(position(&b, 0).await, Some(0));

    // b is back: the read brings it level first.
    sink.0.lock().unwrap().insert(member("b"), b_grid);
    assert_eq!(a.get("c", key.clone()).await.unwrap().version.0, 1);
    assert_eq!(position(&b, 0).await, Some(1), "b has the write");

    // The client sends the write again: answered as the first time.
    let retried = a.put_request("c", named("2")).await.unwrap();
    assert_eq!((retried.version.0, retried.created), (1, true));
    assert_eq!(a.get("c", key.clone()).await.unwrap().value.get(), "1");

    // So does b, once it leads the segment alone.
    sink.0.lock().unwrap().remove(&member("a"));
    b.set_owners("c", &table(&[&["b"], &["b"]], 2), true)
        .await
        .unwrap();
    let on_b = b.put_request("c", named("3")).await.unwrap();
    assert_eq!(on_b.version.0, 1, "b remembers the write's op id");
    assert_eq!(b.get("c", key).await.unwrap().value.get(), "1");
}
