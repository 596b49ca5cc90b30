//! Clusters of three node processes, each on its own loopback address,
//! under write load through several members while a fault strikes:
//! a primary killed with SIGKILL, a member paused with SIGSTOP for longer
//! than the failure timeout, a minority cut off by nftables, and a primary
//! cut off from its backup. After each, the history checker
//! (`common::cluster::History::check`) verifies the final state of every
//! node against every acknowledged write.
//!
//! The tests run one at a time (nine node processes on two cores would
//! make the failure detector see faults that are not there).

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::{until, Cluster, Firewall, History, Outcome, COUNTER};
use common::followers::{subscribed, Follower, Transport};
use serde_json::json;

const FAILURE_TIMEOUT_MS: u64 = 1000;
const CACHE: &str = "c";
const SEGMENTS: u32 = 16;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Three members with a cache of two owners per segment, created on n2.
async fn three_members(base: u8) -> Cluster {
    let cluster = Cluster::start(base, 3, FAILURE_TIMEOUT_MS).await;
    let created = cluster
        .rest(1)
        .create_cache(CACHE, &format!(r#"{{"segments":{SEGMENTS}}}"#))
        .await;
    assert!(created.status.is_success(), "{}", created.text);
    assert_eq!(
        created.body["config"]["num_owners"], 2,
        "two owners by default: {}",
        created.text
    );
    // Created means created on every member: no member answers 404 next
    // (a member may not hold its lease yet, and not count the entries:
    // 503).
    for i in 0..3 {
        let found = cluster.rest(i).get("/api/v1/caches/c").await;
        assert_ne!(found.status, 404, "n{} has the cache: {}", i + 1, found.text);
    }
    cluster
}

/// Writes through each node in `writers` at once until `duration` has
/// passed, calling `fault` with the time since the start as it goes.
async fn under_load(
    cluster: &Cluster,
    writers: &[usize],
    duration: Duration,
    fault: impl FnMut(Duration),
) -> History {
    under_more_load(cluster, writers, History::default(), 0, duration, fault).await
}

/// [`under_load`], adding to `history`; the client writing through node
/// `i` is client `first_client + i` (clients of a history write keys of
/// their own).
async fn under_more_load(
    cluster: &Cluster,
    writers: &[usize],
    history: History,
    first_client: usize,
    duration: Duration,
    mut fault: impl FnMut(Duration),
) -> History {
    let history = RefCell::new(history);
    let started = Instant::now();
    let stop = started + duration;
    let rests: Vec<_> = writers.iter().map(|&i| cluster.rest(i)).collect();
    let load = futures_util::future::join_all(
        rests
            .iter()
            .zip(writers)
            .map(|(rest, &i)| History::write_until(&history, rest, first_client + i, CACHE, stop)),
    );
    let faults = async {
        while Instant::now() < stop {
            fault(started.elapsed());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    futures_util::future::join(load, faults).await;
    let history = history.into_inner();
    let acknowledged = history.acknowledged().count();
    eprintln!("{acknowledged} of {} writes acknowledged", history.writes.len());
    assert!(acknowledged > 50, "too few writes acknowledged to tell anything");
    history
}

/// Followers of the whole cache on each member of `on`: a WebSocket on
/// each, SSE on the first, long polling on the last.
async fn followers_on(cluster: &Cluster, on: &[usize]) -> Vec<Follower> {
    let mut followers = Vec::new();
    for &i in on {
        followers.push(Follower::start(cluster, i, CACHE, Transport::WebSocket).await);
    }
    followers.push(Follower::start(cluster, on[0], CACHE, Transport::Sse).await);
    followers.push(Follower::start(cluster, on[on.len() - 1], CACHE, Transport::Poll).await);
    followers
}

/// Runs `load` while every follower reads, each at its own pace, and a
/// while after it.
async fn followed(load: impl std::future::Future<Output = History>, followers: &mut [Follower]) -> History {
    let done = std::cell::Cell::new(false);
    let load = async {
        let history = load.await;
        done.set(true);
        history
    };
    let reads = futures_util::future::join_all(followers.iter_mut().map(|follower| {
        let done = &done;
        async move {
            while !done.get() {
                follower.read_a_while().await;
            }
            follower.read_a_while().await;
        }
    }));
    let (history, _) = futures_util::future::join(load, reads).await;
    history
}

/// Every segment takes writes through node `through` again; returns how long that took.
async fn writable_again(cluster: &Cluster, through: usize) -> Duration {
    let started = Instant::now();
    let rest = cluster.rest(through);
    for n in 0..64 {
        let key = format!("after{n}");
        until(&format!("{key} written"), Duration::from_secs(30), async || {
            rest.put_entry(CACHE, &key, "1").await.status.is_success()
        })
        .await;
    }
    started.elapsed()
}

#[actix::test]
async fn a_primary_killed_under_writes_loses_no_acknowledged_write() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut cluster = three_members(20).await;
    // The victim leads the counter's segment; the writers are the others.
    let victim = cluster.primary_of(CACHE, COUNTER).await;
    let writers: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    let mut killed_at = None;
    let history = under_load(&cluster, &writers, Duration::from_secs(6), |elapsed| {
        if killed_at.is_none() && elapsed > Duration::from_secs(1) {
            cluster.signal(victim, libc::SIGKILL);
            killed_at = Some(Instant::now());
        }
    })
    .await;
    let killed_at = killed_at.expect("the victim was killed");
    cluster.until_members(&writers, 2).await;
    writable_again(&cluster, writers[0]).await;
    eprintln!(
        "writes acknowledged for every segment again {:?} after the kill",
        killed_at.elapsed()
    );
    cluster.nodes[victim] = None;
    let survivors = [cluster.rest(writers[0]), cluster.rest(writers[1])];
    history.check(CACHE, SEGMENTS, &survivors).await;

    // What an operator sees in /metrics on a survivor.
    let r1 = &survivors[0];
    let metric = async |rest: &common::Rest<'_>, sample: &str| rest.metric(sample).await.unwrap_or(-1.0);
    assert_eq!(metric(r1, "pushgrid_cluster_members").await, 2.0);
    assert!(metric(r1, "pushgrid_cluster_epoch").await >= 3.0);
    assert_eq!(metric(r1, "pushgrid_cluster_leased").await, 1.0);
    assert!(metric(r1, "pushgrid_cluster_link_sent_bytes_total").await > 0.0);
    assert!(metric(r1, "pushgrid_cluster_link_received_bytes_total").await > 0.0);
    assert!(metric(r1, "pushgrid_forwarded_requests_total").await > 0.0);
    assert!(metric(r1, "pushgrid_replication_seconds_count").await > 0.0);
    let mut held = 0.0;
    let mut transferred = 0.0;
    for rest in &survivors {
        transferred += metric(rest, "pushgrid_cluster_transfer_sent_bytes_total").await;
        for role in ["primary", "backup"] {
            held += metric(
                rest,
                &format!("pushgrid_cache_segments{{cache=\"c\",role=\"{role}\"}}"),
            )
            .await;
        }
    }
    assert_eq!(held, 32.0, "16 segments, two copies each, on the two survivors");
    assert!(transferred > 0.0, "n3's copies were made again on the survivors");
}

#[actix::test]
async fn a_member_paused_longer_than_the_failure_timeout_comes_back_without_harm() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = three_members(30).await;
    // The paused member leads the counter's segment: once it runs again,
    // a read it served from its old copy would be stale.
    let paused = cluster.primary_of(CACHE, COUNTER).await;
    let others: Vec<usize> = (0..3).filter(|&i| i != paused).collect();
    let mut followers = followers_on(&cluster, &others).await;
    let (mut stopped, mut continued) = (false, false);
    // Clients on all three, the paused one included: its requests wait in
    // its sockets and are answered (or refused) once it runs again.
    let load = under_load(&cluster, &[0, 1, 2], Duration::from_secs(9), |elapsed| {
        if !stopped && elapsed > Duration::from_secs(1) {
            cluster.signal(paused, libc::SIGSTOP);
            stopped = true;
        }
        if !continued && elapsed > Duration::from_secs(6) {
            cluster.signal(paused, libc::SIGCONT);
            continued = true;
        }
    });
    let history = followed(load, &mut followers).await;
    // It was given up on while paused, and rejoins.
    cluster.until_members(&[0, 1, 2], 3).await;
    writable_again(&cluster, paused).await;
    let nodes = [cluster.rest(0), cluster.rest(1), cluster.rest(2)];
    history.check(CACHE, SEGMENTS, &nodes).await;
    let finally = common::cluster::final_state(&nodes[0], CACHE).await;
    for follower in &mut followers {
        follower.check(&history, &finally).await;
    }
}

#[actix::test]
async fn a_minority_cut_off_acknowledges_nothing_and_catches_up_after_the_heal() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = three_members(40).await;
    // The member cut off leads the counter's segment; a client writes
    // through it and through one on the majority's side.
    let cut_off = cluster.primary_of(CACHE, COUNTER).await;
    let majority: Vec<usize> = (0..3).filter(|&i| i != cut_off).collect();
    let firewall = Firewall::new("minority");
    let (mut cut_at, mut healed_at) = (None, None);
    let history = under_load(
        &cluster,
        &[majority[0], cut_off],
        Duration::from_secs(9),
        |elapsed| {
            if cut_at.is_none() && elapsed > Duration::from_secs(1) {
                for &i in &majority {
                    firewall.cut(&cluster.ips[cut_off], &cluster.ips[i]);
                }
                cut_at = Some(Instant::now());
            }
            if healed_at.is_none() && elapsed > Duration::from_secs(6) {
                firewall.heal();
                healed_at = Some(Instant::now());
            }
        },
    )
    .await;
    let (cut_at, healed_at) = (cut_at.unwrap(), healed_at.unwrap());

    // Alone it can acknowledge nothing: every write needs another owner.
    // (A write begun during the cut may be acknowledged after the heal.)
    let acknowledged_cut_off: Vec<_> = history
        .acknowledged()
        .filter(|w| {
            let Outcome::Acknowledged { at, .. } = w.outcome else {
                return false;
            };
            w.writer == cut_off && w.invoked > cut_at && at < healed_at
        })
        .map(|w| &w.key)
        .collect();
    assert!(
        acknowledged_cut_off.is_empty(),
        "n{} acknowledged while cut off: {acknowledged_cut_off:?}",
        cut_off + 1
    );
    let majority_acked = history
        .acknowledged()
        .filter(|w| {
            w.writer == majority[0] && w.invoked > cut_at + Duration::from_secs(3) && w.invoked < healed_at
        })
        .count();
    assert!(majority_acked > 0, "the majority went on writing during the cut");

    cluster.until_members(&[0, 1, 2], 3).await;
    writable_again(&cluster, cut_off).await;
    let nodes = [cluster.rest(0), cluster.rest(1), cluster.rest(2)];
    history.check(CACHE, SEGMENTS, &nodes).await;
}

#[actix::test]
async fn a_primary_cut_off_from_its_backup_loses_nothing_with_clients_on_both_sides() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = three_members(50).await;
    let firewall = Firewall::new("owners");
    let (mut cut, mut healed) = (false, false);
    // n1 and n2 cannot reach each other; both still reach n3, so neither
    // is given up on. Segments owned by n1 and n2 together cannot
    // replicate; the link's own timeouts turn their writes down.
    let history = under_load(&cluster, &[0, 1], Duration::from_secs(9), |elapsed| {
        if !cut && elapsed > Duration::from_secs(1) {
            firewall.cut(&cluster.ips[0], &cluster.ips[1]);
            cut = true;
        }
        if !healed && elapsed > Duration::from_secs(6) {
            firewall.heal();
            healed = true;
        }
    })
    .await;
    let unknown = history
        .writes
        .iter()
        .filter(|w| w.outcome == Outcome::Unknown)
        .count();
    eprintln!("{unknown} writes refused or timed out during the cut");

    cluster.until_members(&[0, 1, 2], 3).await;
    writable_again(&cluster, 0).await;
    writable_again(&cluster, 1).await;
    let nodes = [cluster.rest(0), cluster.rest(1), cluster.rest(2)];
    history.check(CACHE, SEGMENTS, &nodes).await;
}

#[actix::test]
async fn a_member_joins_and_another_leaves_gracefully_under_writes() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start_some(60, 4, 3, FAILURE_TIMEOUT_MS).await;
    let created = cluster.rest(1).create_cache(CACHE, r#"{"segments":16}"#).await;
    assert!(created.status.is_success(), "{}", created.text);
    // A cache with one copy of each segment: the leaving member's copies
    // exist nowhere else, so only a handover keeps them.
    let solo = cluster
        .rest(1)
        .create_cache("solo", r#"{"segments":16,"num_owners":1}"#)
        .await;
    assert!(solo.status.is_success(), "{}", solo.text);
    let solo_written = write_keys(&cluster.rest(0), "solo", 200).await;
    until("the cache on n1 and n2", Duration::from_secs(10), async || {
        cluster.rest(0).get("/api/v1/caches/c").await.status.is_success()
    })
    .await;
    let mut followers = followers_on(&cluster, &[0, 1]).await;

    let launcher = cluster.launcher(3);
    let (mut joining, mut left_at) = (None, None);
    let load = under_load(&cluster, &[0, 1, 2], Duration::from_secs(10), |elapsed| {
        if joining.is_none() && elapsed > Duration::from_secs(1) {
            let launcher = launcher.clone();
            joining = Some(std::thread::spawn(move || launcher.start()));
        }
        if left_at.is_none() && elapsed > Duration::from_secs(5) {
            cluster.node(2).terminate();
            left_at = Some(Instant::now());
        }
    });
    let history = followed(load, &mut followers).await;
    cluster.nodes[3] = Some(joining.unwrap().join().expect("n4 started"));
    let exited = cluster.nodes[2]
        .as_mut()
        .unwrap()
        .wait_exit(Duration::from_secs(30));
    assert!(
        exited.is_some_and(|status| status.success()),
        "n3 left and exited cleanly: {exited:?}"
    );
    eprintln!(
        "n3 handed over and exited {:?} after SIGTERM",
        left_at.unwrap().elapsed()
    );
    cluster.nodes[2] = None;

    cluster.until_members(&[0, 1, 3], 3).await;
    writable_again(&cluster, 3).await;
    let nodes = [cluster.rest(0), cluster.rest(1), cluster.rest(3)];
    history.check(CACHE, SEGMENTS, &nodes).await;
    all_there(&nodes, "solo", &solo_written, "handed over").await;
    let finally = common::cluster::final_state(&nodes[0], CACHE).await;
    for follower in &mut followers {
        follower.check(&history, &finally).await;
    }
}

#[actix::test]
async fn members_joining_and_leaving_are_filled_before_they_switch_so_no_segment_pauses_to_move() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start_some(240, 4, 3, FAILURE_TIMEOUT_MS).await;
    for cache in [CACHE, "bulk"] {
        let created = cluster.rest(1).create_cache(cache, r#"{"segments":16}"#).await;
        assert!(created.status.is_success(), "{}", created.text);
    }
    // Enough data that moving a segment whole takes a while: 8 MB, in a
    // cache of its own (the checker reads numbers in `c`).
    let bulk = json!("x".repeat(4000)).to_string();
    let rests: Vec<_> = (0..3).map(|i| cluster.rest(i)).collect();
    futures_util::future::join_all((0..8).map(|writer| {
        let (rest, bulk) = (&rests[writer % 3], &bulk);
        async move {
            for n in 0..250 {
                let key = format!("{writer}-{n}");
                until(
                    &format!("bulk {key} written"),
                    Duration::from_secs(10),
                    async || rest.put_entry("bulk", &key, bulk).await.status.is_success(),
                )
                .await;
            }
        }
    }))
    .await;
    let mut followers = followers_on(&cluster, &[0, 2]).await;
    let transfers_before = take_over_transfers(&cluster, &[0, 1, 2], "bulk").await;

    let launcher = cluster.launcher(3);
    let mut joining = None;
    let load = under_load(&cluster, &[0, 1, 2], Duration::from_secs(8), |elapsed| {
        if joining.is_none() && elapsed > Duration::from_secs(1) {
            let launcher = launcher.clone();
            joining = Some(std::thread::spawn(move || launcher.start()));
        }
    });
    let history = followed(load, &mut followers).await;
    cluster.nodes[3] = Some(joining.unwrap().join().expect("n4 started"));
    cluster.until_members(&[0, 1, 2, 3], 4).await;
    until(
        "n4 leads segments, the rebalance done",
        Duration::from_secs(30),
        async || {
            let view = cluster.rest(0).get("/api/v1/cluster").await.body;
            copies_of(&view, CACHE, "n4").0 > 0 && view["rebalance"] == "stable"
        },
    )
    .await;

    // The members the copies moved from filled n4's while they served: at
    // the switch, no take-over of a `bulk` segment (n4's as primary, or
    // another's with n4 as backup) held it for a transfer. (One of `c`,
    // written at that moment, may be taken whole when its last writes are
    // still on the way: counted, not asserted.)
    let view = cluster.rest(0).get("/api/v1/cluster").await.body;
    let (led, copies) = copies_of(&view, "bulk", "n4");
    let transfers = take_over_transfers(&cluster, &[0, 1, 2, 3], "bulk").await - transfers_before;
    let written = take_over_transfers(&cluster, &[0, 1, 2, 3], CACHE).await;
    eprintln!(
        "n4 leads {led} bulk segments and holds {copies} copies; {transfers} bulk take-overs transferred \
         ({written} under writes)"
    );
    assert!(
        led >= 3 && copies >= 6,
        "n4 holds its share of bulk: {led} led, {copies} copies"
    );
    assert_eq!(
        transfers, 0,
        "n4's {copies} bulk copies were level before the switch"
    );
    let nodes: Vec<_> = (0..4).map(|i| cluster.rest(i)).collect();
    history.check(CACHE, SEGMENTS, &nodes).await;
    let finally = common::cluster::final_state(&nodes[0], CACHE).await;
    for follower in &mut followers {
        follower.check(&history, &finally).await;
    }
    drop((nodes, followers));

    // n2 leaves gracefully under writes: it serves on until the members
    // taking its copies have them, and takes part in no transfer after.
    let (_, copies) = copies_of(&cluster.rest(0).get("/api/v1/cluster").await.body, "bulk", "n2");
    let survivors = [0, 2, 3];
    let transfers_before = take_over_transfers(&cluster, &survivors, "bulk").await;
    let mut left_at = None;
    let history = under_more_load(
        &cluster,
        &survivors,
        history,
        10,
        Duration::from_secs(6),
        |elapsed| {
            if left_at.is_none() && elapsed > Duration::from_secs(1) {
                cluster.node(1).terminate();
                left_at = Some(Instant::now());
            }
        },
    )
    .await;
    let exited = cluster.nodes[1]
        .as_mut()
        .unwrap()
        .wait_exit(Duration::from_secs(30));
    assert!(
        exited.is_some_and(|status| status.success()),
        "n2 left and exited cleanly: {exited:?}"
    );
    eprintln!(
        "n2 handed over and exited {:?} after SIGTERM",
        left_at.unwrap().elapsed()
    );
    cluster.nodes[1] = None;
    cluster.until_members(&survivors, 3).await;
    let transfers = take_over_transfers(&cluster, &survivors, "bulk").await - transfers_before;
    eprintln!("n2 held {copies} bulk copies; {transfers} bulk take-overs transferred as it left");
    assert!(copies >= 6, "n2 held its share of bulk: {copies}");
    assert_eq!(
        transfers, 0,
        "n2's {copies} bulk copies were filled elsewhere before it left"
    );
    let nodes: Vec<_> = survivors.iter().map(|&i| cluster.rest(i)).collect();
    history.check(CACHE, SEGMENTS, &nodes).await;
}

/// How many segments of `cache` `member` leads, and how many copies it
/// holds, in a cluster view.
fn copies_of(view: &serde_json::Value, cache: &str, member: &str) -> (u64, u64) {
    let (mut led, mut held) = (0, 0);
    for range in view["caches"][cache]["owners"].as_array().expect("owner ranges") {
        let count = range["last"].as_u64().unwrap() - range["first"].as_u64().unwrap() + 1;
        let owners = range["owners"].as_array().unwrap();
        led += count * u64::from(owners[0] == member);
        held += count * u64::from(owners.iter().any(|o| o == member));
    }
    (led, held)
}

/// Take-overs of `cache` that held their segment for a whole copy, on
/// the members `on` that run.
async fn take_over_transfers(cluster: &Cluster, on: &[usize], cache: &str) -> u64 {
    let sample = format!("pushgrid_take_over_transfers_total{{cache=\"{cache}\"}}");
    let mut sum = 0.0;
    for &i in on.iter().filter(|&&i| cluster.nodes[i].is_some()) {
        sum += cluster.rest(i).metric(&sample).await.unwrap_or(0.0);
    }
    sum as u64
}

/// Writes keys `s0..s{count}` of `cache` through `rest`, retrying each
/// until acknowledged; returns each key with its version.
async fn write_keys(rest: &common::Rest<'_>, cache: &str, count: u64) -> Vec<(String, u64)> {
    let mut written = Vec::new();
    for n in 0..count {
        let key = format!("s{n}");
        let mut version = None;
        until(&format!("{key} written"), Duration::from_secs(10), async || {
            let reply = rest.put_entry(cache, &key, &n.to_string()).await;
            version = reply.body["version"].as_u64();
            if !reply.status.is_success() {
                eprintln!("{key}: {} {}", reply.status, reply.text);
            }
            reply.status.is_success()
        })
        .await;
        written.push((key, version.unwrap()));
    }
    written
}

/// Every key of `written` is in `cache` on every node of `nodes`, as written.
async fn all_there(nodes: &[common::Rest<'_>], cache: &str, written: &[(String, u64)], when: &str) {
    for rest in nodes {
        let state = common::cluster::final_state(rest, cache).await;
        for (key, version) in written {
            let n: u64 = key[1..].parse().unwrap();
            assert_eq!(state.get(key), Some(&(n, *version)), "{key} {when}");
        }
    }
}

#[actix::test]
async fn one_copy_segments_move_with_their_data_on_a_join_and_a_graceful_leave() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start_some(70, 4, 3, FAILURE_TIMEOUT_MS).await;
    let created = cluster
        .rest(0)
        .create_cache("solo", r#"{"segments":16,"num_owners":1}"#)
        .await;
    assert!(created.status.is_success(), "{}", created.text);
    let written = write_keys(&cluster.rest(0), "solo", 200).await;

    cluster.nodes[3] = Some(cluster.launcher(3).start());
    cluster.until_members(&[0, 1, 2, 3], 4).await;
    let all = [cluster.rest(0), cluster.rest(1), cluster.rest(2), cluster.rest(3)];
    all_there(&all, "solo", &written, "moved to the new member").await;
    // Once every copy is where it belongs, no member says it is moving.
    for rest in &all {
        until("a stable cluster", Duration::from_secs(20), async || {
            rest.get("/api/v1/cluster").await.body["rebalance"] == "stable"
        })
        .await;
        assert_eq!(rest.metric("pushgrid_segments_moving").await, Some(0.0));
    }
    drop(all);

    cluster.node(2).terminate();
    let exited = cluster.nodes[2]
        .as_mut()
        .unwrap()
        .wait_exit(Duration::from_secs(30));
    assert!(
        exited.is_some_and(|s| s.success()),
        "n3 exited cleanly: {exited:?}"
    );
    cluster.nodes[2] = None;
    cluster.until_members(&[0, 1, 3], 3).await;
    let rest = [cluster.rest(0), cluster.rest(1), cluster.rest(3)];
    all_there(&rest, "solo", &written, "handed over by the member that left").await;
}

/// The segments of `cache` that `member` owns, as node `i` sees it.
async fn segments_owned_by(cluster: &Cluster, i: usize, cache: &str, member: &str) -> Vec<u64> {
    let view = cluster.rest(i).get("/api/v1/cluster").await.body;
    let ranges = view["caches"][cache]["owners"]
        .as_array()
        .expect("owner ranges")
        .clone();
    ranges
        .iter()
        .filter(|r| r["owners"].as_array().unwrap().iter().any(|o| o == member))
        .flat_map(|r| r["first"].as_u64().unwrap()..=r["last"].as_u64().unwrap())
        .collect()
}

#[actix::test]
async fn a_segment_whose_only_owner_crashed_is_unavailable_until_declared_lost_and_its_subscribers_reset() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::start(90, 3, FAILURE_TIMEOUT_MS).await;
    let created = cluster
        .rest(0)
        .create_cache("solo", r#"{"segments":16,"num_owners":1}"#)
        .await;
    assert!(created.status.is_success(), "{}", created.text);
    let written = write_keys(&cluster.rest(0), "solo", 100).await;
    let incarnation = cluster.rest(0).get("/api/v1/caches/solo").await.body["incarnation"].clone();
    let lost = segments_owned_by(&cluster, 0, "solo", "n3").await;
    assert!(!lost.is_empty(), "n3 owns some of the segments");
    let in_lost = |key: &str| lost.contains(&u64::from(pushgrid::grid::hash::segment_of(key, 16).0));
    // Subscribers on the members that survive follow the cache throughout.
    let mut followers = Vec::new();
    for (i, transport) in [
        (0, Transport::WebSocket),
        (1, Transport::WebSocket),
        (0, Transport::Sse),
        (1, Transport::Poll),
    ] {
        followers.push(Follower::start(&cluster, i, "solo", transport).await);
    }

    cluster.signal(2, libc::SIGKILL);
    cluster.until_members(&[0, 1], 2).await;
    let survivors = [cluster.rest(0), cluster.rest(1)];
    for rest in &survivors {
        let view = rest.get("/api/v1/cluster").await.body;
        assert_eq!(view["caches"]["solo"]["lost"], serde_json::json!(lost), "{view}");
        let awaiting = r#"pushgrid_segments_lost{cache="solo",state="awaiting_declaration"}"#;
        assert_eq!(rest.metric(awaiting).await, Some(lost.len() as f64));
        // Never served empty: the lost keys are unavailable, not missing.
        for (key, version) in &written {
            let reply = rest.get_entry("solo", key).await;
            if in_lost(key) {
                assert_eq!(reply.status, 503, "{key}: {}", reply.text);
                assert_eq!(reply.body["error"]["code"], "unavailable");
                let write = rest.put_entry("solo", key, "0").await;
                assert_eq!(write.status, 503, "{key}: {}", write.text);
            } else {
                assert_eq!(reply.status, 200, "{key} kept: {}", reply.text);
                assert_eq!(etag(&reply), Some(format!("\"{version}\"")), "{key}");
            }
        }
        let listing = rest.get("/api/v1/caches/solo/entries").await;
        assert_eq!(listing.status, 503, "never listed in part: {}", listing.text);
    }

    // An operator declares the data lost: the segments start again empty.
    let declared = survivors[1].post("/api/v1/caches/solo/lost", "").await;
    assert_eq!(declared.status, 200, "{}", declared.text);
    assert_eq!(declared.body["declared"], serde_json::json!(lost));
    for rest in &survivors {
        until("the declaration placed", Duration::from_secs(10), async || {
            let view = rest.get("/api/v1/cluster").await.body;
            view["caches"]["solo"]["lost"] == serde_json::json!([])
                && rest.get_entry("solo", "s0").await.status != 503
        })
        .await;
        let view = rest.get("/api/v1/cluster").await.body;
        assert_eq!(view["caches"]["solo"]["declared_lost"], serde_json::json!(lost));
        let declared = r#"pushgrid_segments_lost{cache="solo",state="declared"}"#;
        assert_eq!(rest.metric(declared).await, Some(lost.len() as f64));
        let now = rest.get("/api/v1/caches/solo").await.body["incarnation"].clone();
        assert_ne!(now, incarnation, "positions of the lost data are reset");
        for (key, version) in &written {
            let reply = rest.get_entry("solo", key).await;
            match in_lost(key) {
                true => assert_eq!(reply.status, 404, "{key} started again: {}", reply.text),
                false => assert_eq!(etag(&reply), Some(format!("\"{version}\"")), "{key}"),
            }
        }
    }
    // What the subscribers held of the lost segments is gone: each is
    // sent a reset snapshot (WebSocket in place; SSE and long polling on
    // their next request, from a position of the cache's last life).
    for follower in &mut followers {
        let deadline = Instant::now() + Duration::from_secs(20);
        while follower.resets() == 0 {
            assert!(Instant::now() < deadline, "{}: never reset", follower.label);
            follower.read_a_while().await;
        }
    }
    let (key, _) = written.iter().find(|(key, _)| in_lost(key)).unwrap();
    let rewritten = survivors[0].put_entry("solo", key, "7").await;
    assert_eq!(rewritten.status, 201, "{}", rewritten.text);
    assert_eq!(rewritten.body["version"], 1, "the segment's count starts again");
    let finally = common::cluster::final_state(&survivors[1], "solo").await;
    assert_eq!(finally.get(key.as_str()), Some(&(7, 1)));
    for follower in &mut followers {
        follower.check(&History::default(), &finally).await;
    }
    let again = survivors[1]
        .post("/api/v1/caches/solo/lost", r#"{"segments":[0]}"#)
        .await;
    assert_eq!(
        again.body["declared"],
        serde_json::json!([]),
        "nothing left to declare"
    );
}

fn etag(reply: &common::Reply) -> Option<String> {
    Some(reply.headers.get("etag")?.to_str().ok()?.to_owned())
}

#[actix::test]
async fn a_write_retried_with_its_idempotency_key_after_a_failover_is_applied_once() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut cluster = three_members(100).await;
    // The key write_keys writes first.
    let primary = cluster.primary_of(CACHE, "s0").await;
    let named = |op: &'static str| ("idempotency-key", op);
    // A first write brings the backup level (a backup placed after its
    // primary is sent the whole segment), so the named write reaches it
    // as a write of its own.
    let written = write_keys(&cluster.rest(primary), CACHE, 1).await;
    let (warm_up, _) = &written[0];
    let key = warm_up.as_str();
    let mut first = None;
    until("the named write answered", Duration::from_secs(10), async || {
        let reply = cluster
            .rest(primary)
            .put_entry_if(CACHE, key, "1", named("op-1"))
            .await;
        let answered = reply.status.is_success();
        first = Some(reply);
        answered
    })
    .await;
    let first = first.unwrap();
    assert_eq!(first.status, 200, "{}", first.text);
    let version = first.body["version"].as_u64().unwrap();

    // The client never saw that reply: the member that sent it dies, and
    // the client sends the write again through another.
    cluster.signal(primary, libc::SIGKILL);
    cluster.nodes[primary] = None;
    let survivors: Vec<usize> = (0..3).filter(|&i| i != primary).collect();
    cluster.until_members(&survivors, 2).await;
    let rest = cluster.rest(survivors[0]);
    let mut retried = None;
    until("the retry answered", Duration::from_secs(30), async || {
        let reply = rest.put_entry_if(CACHE, key, "1", named("op-1")).await;
        let answered = reply.status.is_success();
        retried = Some(reply);
        answered
    })
    .await;
    let retried = retried.unwrap();
    assert_eq!(
        retried.status, 200,
        "answered as the first time: {}",
        retried.text
    );
    assert_eq!(retried.body["version"], version, "not applied twice");
    for &i in &survivors {
        let entry = cluster.rest(i).get_entry(CACHE, key).await;
        assert_eq!(etag(&entry), Some(format!("\"{version}\"")), "n{}", i + 1);
    }
    let next = rest.put_entry_if(CACHE, key, "2", named("op-2")).await;
    assert_eq!(next.status, 200, "{}", next.text);
    assert_eq!(next.body["version"], version + 1);
}

/// The events `ws` receives until nothing came for a second after `until`.
async fn events_until(ws: &mut common::ws::WsClient, until: Instant) -> Vec<serde_json::Value> {
    let mut events = Vec::new();
    loop {
        match ws.next_within(Duration::from_secs(1)).await {
            Some(message) => {
                assert_eq!(message["type"], "event", "{message}");
                events.push(message["event"].clone());
            }
            None if Instant::now() >= until => return events,
            None => {}
        }
    }
}

#[actix::test]
async fn subscribers_on_other_members_see_every_write_once_in_order_across_a_kill() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut cluster = three_members(110).await;
    // The victim leads the counter's segment; subscribers and writers are
    // on the others, so each subscriber gets events its node relays from
    // other members, and the victim's from its backups once it is gone.
    let victim = cluster.primary_of(CACHE, COUNTER).await;
    let survivors: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    let mut followers = followers_on(&cluster, &survivors).await;
    let mut killed = false;
    let load = under_load(&cluster, &survivors, Duration::from_secs(5), |elapsed| {
        if !killed && elapsed > Duration::from_millis(1500) {
            cluster.signal(victim, libc::SIGKILL);
            killed = true;
        }
    });
    let history = followed(load, &mut followers).await;
    cluster.until_members(&survivors, 2).await;
    let nodes = [cluster.rest(survivors[0]), cluster.rest(survivors[1])];
    history.check(CACHE, SEGMENTS, &nodes).await;
    let finally = common::cluster::final_state(&nodes[0], CACHE).await;
    for follower in &mut followers {
        follower.check(&history, &finally).await;
    }
    cluster.nodes[victim] = None;
}

/// What a WebSocket client holds of a cache: per segment, the version of
/// the last event it was sent and the epoch it was written under.
#[derive(Default)]
struct Held {
    positions: BTreeMap<String, u64>,
    epochs: BTreeMap<String, u64>,
}

impl Held {
    fn from_snapshot(done: &serde_json::Value) -> Held {
        let numbers = |field: &str| -> BTreeMap<String, u64> {
            done[field]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(s, v)| (s.clone(), v.as_u64().unwrap()))
                .collect()
        };
        Held {
            positions: numbers("positions"),
            epochs: numbers("epochs"),
        }
    }

    fn take(&mut self, event: &serde_json::Value) {
        let segment = event["segment"].to_string();
        self.positions
            .insert(segment.clone(), event["version"].as_u64().unwrap());
        let epoch = event["epoch"]
            .as_u64()
            .expect("a cluster's events name their epoch");
        self.epochs.insert(segment, epoch);
    }
}

#[actix::test]
async fn a_subscriber_whose_member_dies_resumes_on_another_with_exactly_what_it_missed() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut cluster = three_members(130).await;
    let subscribe = json!({"op": "subscribe", "cache": CACHE, "filter": {}});
    let (mut ws, frames) = subscribed(&cluster, 0, subscribe).await;
    let done = frames.last().expect("a snapshot").clone();
    let incarnation = done["incarnation"].clone();
    let mut held = Held::from_snapshot(&done);
    let before = write_keys(&cluster.rest(1), CACHE, 40).await;
    let seen = events_until(&mut ws, Instant::now()).await;
    assert_eq!(seen.len(), before.len(), "every write pushed to n1's subscriber");
    for event in &seen {
        held.take(event);
    }
    let epoch_before = *held.epochs.values().max().unwrap();

    // Its member dies; the writes go on; the client resumes on n2.
    cluster.signal(0, libc::SIGKILL);
    cluster.nodes[0] = None;
    cluster.until_members(&[1, 2], 2).await;
    let missed: Vec<(String, u64)> = write_keys(&cluster.rest(2), CACHE, 40).await;
    let resume = json!({"op": "subscribe", "cache": CACHE, "filter": {},
                        "resume": {"positions": held.positions, "incarnation": incarnation,
                                   "epochs": held.epochs}});
    let (mut resumed, frames) = subscribed(&cluster, 1, resume).await;
    assert!(frames.is_empty(), "a replay, not a reset snapshot: {frames:?}");
    let replayed = events_until(&mut resumed, Instant::now()).await;
    let got: Vec<(String, u64)> = replayed
        .iter()
        .map(|e| {
            (
                e["key"].as_str().unwrap().to_string(),
                e["version"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut expected = missed.clone();
    expected.sort();
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "exactly the writes it missed, once each");

    // The writes since the kill were made under the epoch that counted n1
    // out. A client claiming one of those versions under the epoch before
    // saw writes this lineage does not have: it is sent a reset snapshot.
    let after_kill = &replayed.last().unwrap();
    let epoch_after = after_kill["epoch"].as_u64().unwrap();
    assert!(epoch_after > epoch_before, "{epoch_after} after {epoch_before}");
    let segment = after_kill["segment"].to_string();
    let version = after_kill["version"].as_u64().unwrap();
    let stale = json!({"op": "subscribe", "cache": CACHE, "filter": {},
                       "resume": {"positions": {&segment: version}, "incarnation": incarnation,
                                  "epochs": {&segment: epoch_before}}});
    let (_, frames) = subscribed(&cluster, 2, stale).await;
    assert!(
        !frames.is_empty() && frames.iter().all(|f| f["reset"] == true),
        "version {version} of segment {segment} under epoch {epoch_before} was never written here: {frames:?}"
    );
    let exact = json!({"op": "subscribe", "cache": CACHE, "filter": {},
                       "resume": {"positions": {&segment: version}, "incarnation": incarnation,
                                  "epochs": {&segment: epoch_after}}});
    let (_, frames) = subscribed(&cluster, 2, exact).await;
    assert!(
        frames.is_empty(),
        "the same position under its own epoch replays: {frames:?}"
    );

    // Position tokens name the epochs too: a poll's token, read back.
    let poll = cluster.rest(2).get("/api/v1/caches/c/poll").await;
    assert_eq!(poll.status, 200, "{}", poll.text);
    let token = pushgrid::protocol::position::decode(poll.body["position"].as_str().unwrap()).unwrap();
    let position = token.positions[&pushgrid::grid::SegmentId(segment.parse().unwrap())];
    assert_eq!(
        (position.version.0, position.epoch),
        (version, Some(epoch_after)),
        "the token holds the segment's position and its epoch"
    );
}

#[actix::test]
async fn a_subscriber_on_a_member_cut_off_is_told_and_caught_up_after_the_heal() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = three_members(140).await;
    // n3 is cut off from both others for longer than the failure timeout:
    // they count it out and stop sending it events, while its subscriber
    // stays connected to it. Writes go on through n1.
    let mut followers = followers_on(&cluster, &[2]).await;
    let firewall = Firewall::new("subscriber");
    let (mut cut, mut healed) = (false, false);
    let load = under_load(&cluster, &[0], Duration::from_secs(9), |elapsed| {
        if !cut && elapsed > Duration::from_secs(1) {
            firewall.cut(&cluster.ips[2], &cluster.ips[0]);
            firewall.cut(&cluster.ips[2], &cluster.ips[1]);
            cut = true;
        }
        if !healed && elapsed > Duration::from_secs(5) {
            firewall.heal();
            healed = true;
        }
    });
    let history = followed(load, &mut followers).await;
    drop(firewall);
    cluster.until_members(&[0, 1, 2], 3).await;
    let finally = common::cluster::final_state(&cluster.rest(0), CACHE).await;
    // Caught up: what they missed arrives after the heal.
    for follower in &mut followers {
        follower.check(&history, &finally).await;
    }
    // A long poll is not told; the streams are, of the cut and of the heal.
    for follower in &followers[..2] {
        assert_eq!(follower.notices, ["degraded", "recovered"], "{}", follower.label);
    }
}

#[actix::test]
async fn members_send_a_member_only_the_events_its_subscribers_filters_match() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = three_members(160).await;
    // n3's only subscriber follows one key; n2 has none.
    let subscribe = json!({"op": "subscribe", "cache": CACHE, "filter": {"key": "watched"}});
    let (mut ws, _) = subscribed(&cluster, 2, subscribe).await;
    // Its list of filters reaches the others within a refresh.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let relayed = async |i: usize, kind: &str| {
        let name = format!("pushgrid_listener_relayed_{kind}_total");
        cluster.rest(i).metric(&name).await.unwrap_or(0.0) as u64
    };
    let before = (relayed(2, "events").await, relayed(2, "skips").await);

    let rest = cluster.rest(0);
    for n in 0..200u64 {
        let key = if n % 10 == 0 {
            "watched".to_string()
        } else {
            format!("other-{n}")
        };
        let put = rest.put_entry(CACHE, &key, &n.to_string()).await;
        assert!(put.status.is_success(), "{}", put.text);
    }
    let events = events_until(&mut ws, Instant::now() + Duration::from_secs(1)).await;
    let values: Vec<u64> = events.iter().map(|e| e["value"].as_u64().unwrap()).collect();
    assert_eq!(
        values,
        (0..200).step_by(10).collect::<Vec<_>>(),
        "every write of its key, in order"
    );

    let events_in = relayed(2, "events").await - before.0;
    let skips_in = relayed(2, "skips").await - before.1;
    eprintln!("n3 was relayed {events_in} events and {skips_in} skipped versions");
    // Each write of its key comes from at most its two owners; the other
    // keys' writes come as versions only.
    assert!(
        events_in <= 2 * 20,
        "n3 was sent events it does not want: {events_in}"
    );
    assert!(
        skips_in > 0,
        "the versions n3 does not want still reach it as skipped"
    );
    assert_eq!(
        (relayed(1, "events").await, relayed(1, "skips").await),
        (0, 0),
        "n2, with no subscriber, is sent nothing"
    );
    // Each member counts the cache's entries across the cluster, once each.
    for i in 0..3 {
        let described = cluster.rest(i).get("/api/v1/caches/c").await;
        assert_eq!(described.body["entries"], 181, "n{}: {}", i + 1, described.text);
    }
}

#[actix::test]
async fn a_cache_is_on_every_member_once_its_creation_is_answered() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = three_members(170).await;
    // n3 is paused while n2 creates a cache (n1 and n2 agree without it);
    // the creation is answered once n3, running again, has the cache too.
    cluster.signal(2, libc::SIGSTOP);
    let rest = cluster.rest(1);
    let create = rest.create_cache("fresh", r#"{"segments":8}"#);
    let resume = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        cluster.signal(2, libc::SIGCONT);
    };
    let (created, ()) = futures_util::future::join(create, resume).await;
    assert!(created.status.is_success(), "{}", created.text);
    let found = cluster.rest(2).get("/api/v1/caches/fresh").await;
    assert_ne!(
        found.status, 404,
        "n3 has the cache once n2 answered: {}",
        found.text
    );
}

#[actix::test]
async fn caches_created_back_to_back_all_stay_on_every_member() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = three_members(230).await;
    // Each creation is a new topology while members still place the one
    // before: placing an older topology must not delete a newer cache.
    let names: Vec<String> = (0..24).map(|n| format!("b{n}")).collect();
    let members = [cluster.rest(0), cluster.rest(1), cluster.rest(2)];
    let members = &members;
    let creations = names
        .iter()
        .enumerate()
        .map(|(n, name)| async move { (name, members[n % 3].create_cache(name, r#"{"segments":8}"#).await) });
    for (name, created) in futures_util::future::join_all(creations).await {
        assert!(created.status.is_success(), "{name}: {}", created.text);
    }
    // A wrongful deletion is agreed moments after the creation it undoes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..3 {
        let listed = cluster.rest(i).get("/api/v1/caches").await;
        let mut present: Vec<String> = listed.body["caches"]
            .as_array()
            .expect("a list of caches")
            .iter()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .filter(|name| name.starts_with('b'))
            .collect();
        present.sort_by_key(|name| name[1..].parse::<u32>().unwrap());
        assert_eq!(present, names, "n{} still has every cache", i + 1);
    }
}

#[actix::test]
async fn max_entries_bounds_the_cluster_each_primary_keeping_its_segments_share() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = three_members(180).await;
    let capped = "capped";
    let created = cluster
        .rest(0)
        .create_cache(capped, r#"{"segments":16,"max_entries":100}"#)
        .await;
    assert!(created.status.is_success(), "{}", created.text);
    // Three times the limit, through one member: every member leads a
    // third of the segments and holds copies of two thirds.
    let written = write_keys(&cluster.rest(1), capped, 300).await;
    for i in 0..3 {
        let rest = cluster.rest(i);
        let summary = rest.get("/api/v1/caches/capped").await;
        assert_eq!(
            summary.body["entries"],
            100,
            "n{}: the cluster holds max_entries, not a member: {}",
            i + 1,
            summary.text
        );
        let state = common::cluster::final_state(&rest, capped).await;
        assert_eq!(state.len(), 100, "n{} lists as many", i + 1);
        let (last, version) = written.last().unwrap();
        assert_eq!(
            state.get(last).map(|(_, v)| *v),
            Some(*version),
            "the latest write stays"
        );
    }
}

#[actix::test]
async fn a_subscriber_resumes_on_a_member_holding_a_copy_of_its_segment_from_that_copy() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = three_members(220).await;
    let key = "followed";
    let owners = cluster.owners_of(CACHE, key).await;
    let (primary, backup) = (owners[0], owners[1]);
    let write = async |n: u64| {
        let rest = cluster.rest(primary);
        until(&format!("write {n}"), Duration::from_secs(10), async || {
            rest.put_entry(CACHE, key, &n.to_string())
                .await
                .status
                .is_success()
        })
        .await;
    };
    // A subscriber to the key on the member backing its segment sees two
    // writes, drops, and misses three.
    let subscribe = json!({"op": "subscribe", "cache": CACHE, "filter": {"key": key}});
    let (mut ws, frames) = subscribed(&cluster, backup, subscribe).await;
    let mut held = Held::from_snapshot(frames.last().expect("a snapshot"));
    for n in 0..2 {
        write(n).await;
    }
    for event in events_until(&mut ws, Instant::now()).await {
        held.take(&event);
    }
    drop(ws);
    for n in 2..5 {
        write(n).await;
    }
    // The primary stops answering (for less than the failure timeout, so
    // it stays the primary): the member's own copy answers the resume.
    cluster.signal(primary, libc::SIGSTOP);
    let resume = json!({"op": "subscribe", "cache": CACHE, "filter": {"key": key},
                        "resume": {"positions": held.positions, "epochs": held.epochs}});
    let mut resumed = common::ws::WsClient::connect(cluster.node(backup)).await;
    let reply = resumed.request(resume).await;
    let mut replayed = Vec::new();
    while replayed.len() < 3 {
        match resumed.next_within(Duration::from_millis(300)).await {
            Some(frame) => replayed.push(frame),
            None => break,
        }
    }
    cluster.signal(primary, libc::SIGCONT);
    assert_eq!(reply["type"], "subscribed", "{reply}");
    let values: Vec<String> = replayed.iter().map(|f| f["event"]["value"].to_string()).collect();
    assert_eq!(
        values,
        ["2", "3", "4"],
        "the missed writes, replayed by n{} with its primary stopped: {replayed:?}",
        backup + 1
    );
}
