//! A cluster of three node processes, each on its own loopback address:
//! writes go through two of them while the third, primary of a third of
//! the segments, is killed with SIGKILL. A history of every write checks
//! that nothing acknowledged was lost and nothing was applied twice.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::node::Launch;
use common::{Rest, TestNode};

const FAILURE_TIMEOUT_MS: u64 = 1000;

/// A cluster port unlikely to be taken: each node has its own address.
fn cluster_port() -> u16 {
    20_000 + (std::process::id() % 20_000) as u16
}

fn start(ip: &str, name: &str, join: Option<&str>) -> TestNode {
    let cluster = format!("{ip}:{}", cluster_port());
    let timeout = FAILURE_TIMEOUT_MS.to_string();
    let mut args = vec![
        "--cluster-bind",
        cluster.as_str(),
        "--node-id",
        name,
        "--failure-timeout-ms",
        timeout.as_str(),
    ];
    if let Some(seed) = join {
        args.extend(["--join", seed]);
    }
    Launch::new().on(ip).args(&args).log_level("warn").start()
}

async fn members(rest: &Rest<'_>) -> usize {
    let view = rest.get("/api/v1/cluster").await.body;
    view["members"].as_array().map_or(0, Vec::len)
}

async fn until(what: &str, within: Duration, mut holds: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !holds().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What became of one write.
#[derive(Debug)]
enum Outcome {
    Acknowledged {
        version: u64,
    },
    /// Refused or lost on the way: it may or may not have been applied.
    Unknown,
}

#[actix::test]
async fn a_primary_killed_under_writes_loses_no_acknowledged_write() {
    let n1 = start("127.0.0.21", "n1", None);
    let seed = format!("127.0.0.21:{}", cluster_port());
    let n2 = start("127.0.0.22", "n2", Some(&seed));
    let n3 = start("127.0.0.23", "n3", Some(&seed));
    let (r1, r2) = (Rest::new(&n1), Rest::new(&n2));
    until("three members", Duration::from_secs(20), async || {
        members(&r1).await == 3
    })
    .await;
    let created = r2.create_cache("c", r#"{"segments":16}"#).await;
    assert_eq!(
        created.body["config"]["num_owners"], 2,
        "two owners by default: {}",
        created.text
    );
    assert!(created.status.is_success(), "{}", created.text);
    until("the cache on both writers", Duration::from_secs(10), async || {
        r1.get("/api/v1/caches/c").await.status.is_success()
    })
    .await;

    // Writers through n1 and n2, each key written once; a counter
    // incremented with compare-and-set. n3 is killed a second in.
    let writers = [&r1, &r2];
    let mut history: BTreeMap<String, Outcome> = BTreeMap::new();
    let mut increments = (0u64, 0u64, Vec::new()); // (acknowledged, unknown, versions)
    let started = Instant::now();
    let mut killed_at = None;
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(6) {
        if killed_at.is_none() && started.elapsed() > Duration::from_secs(1) {
            unsafe { libc::kill(n3.pid() as i32, libc::SIGKILL) };
            killed_at = Some(Instant::now());
        }
        let rest = writers[n % 2];
        let key = format!("k{n}");
        let reply = rest.put_entry("c", &key, &format!("{{\"n\":{n}}}")).await;
        let outcome = match reply.status.as_u16() {
            200 | 201 => Outcome::Acknowledged {
                version: reply.body["version"].as_u64().expect("a version"),
            },
            503 => Outcome::Unknown,
            other => panic!("write {key}: unexpected {other} {}", reply.text),
        };
        history.insert(key, outcome);
        increment(rest, &mut increments).await;
        n += 1;
    }
    let killed_at = killed_at.expect("n3 was killed");

    // The survivors agree n3 is gone, and every segment takes writes again.
    until("n3 agreed away", Duration::from_secs(20), async || {
        members(&r1).await == 2 && members(&r2).await == 2
    })
    .await;
    for n in 0..64 {
        let reply = r1.put_entry("c", &format!("after{n}"), "1").await;
        assert!(reply.status.is_success(), "after{n}: {}", reply.text);
    }
    eprintln!(
        "writes acknowledged for every segment again {:?} after the kill",
        killed_at.elapsed()
    );

    // The checker: every acknowledged write is on both survivors, as
    // acknowledged; the counter counts every acknowledged increment and
    // at most the unknown ones besides.
    let acknowledged = history
        .values()
        .filter(|o| matches!(o, Outcome::Acknowledged { .. }))
        .count();
    assert!(
        acknowledged > 50,
        "only {acknowledged} of {} writes acknowledged",
        history.len()
    );
    for rest in writers {
        for (key, outcome) in &history {
            if let Outcome::Acknowledged { version } = outcome {
                let entry = rest.get_entry("c", key).await;
                assert_eq!(entry.status.as_u16(), 200, "{key} lost: {}", entry.text);
                assert_eq!(entry.etag(), Some(format!("\"{version}\"")), "{key}");
                let n: u64 = key[1..].parse().unwrap();
                assert_eq!(entry.body["n"].as_u64(), Some(n), "{key}");
            }
        }
        let counter = rest.get_entry("c", "counter").await;
        let value = counter.body.as_u64().unwrap_or(0);
        let (acked, unknown, _) = increments;
        assert!(
            acked <= value && value <= acked + unknown,
            "counter {value}: {acked} increments acknowledged, {unknown} unknown"
        );
    }
    let versions = &increments.2;
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "the counter's versions only grow: {versions:?}"
    );

    // What an operator sees in /metrics on a survivor.
    let metric = async |rest: &Rest<'_>, sample: &str| rest.metric(sample).await.unwrap_or(-1.0);
    assert_eq!(metric(&r1, "pushgrid_cluster_members").await, 2.0);
    assert!(metric(&r1, "pushgrid_cluster_epoch").await >= 3.0);
    assert_eq!(metric(&r1, "pushgrid_cluster_leased").await, 1.0);
    assert!(metric(&r1, "pushgrid_cluster_link_sent_bytes_total").await > 0.0);
    assert!(metric(&r1, "pushgrid_cluster_link_received_bytes_total").await > 0.0);
    assert!(metric(&r1, "pushgrid_forwarded_requests_total").await > 0.0);
    assert!(metric(&r1, "pushgrid_replication_seconds_count").await > 0.0);
    let mut held = 0.0;
    let mut transferred = 0.0;
    for rest in writers {
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

/// One compare-and-set increment of `counter`, retried while another
/// write got in first.
async fn increment(rest: &Rest<'_>, (acked, unknown, versions): &mut (u64, u64, Vec<u64>)) {
    for _ in 0..10 {
        let current = rest.get_entry("c", "counter").await;
        let (value, precondition) = match current.status.as_u16() {
            200 => (
                current.body.as_u64().expect("the counter is a number"),
                ("if-match", current.etag().expect("an etag")),
            ),
            404 => (0, ("if-none-match", "*".to_string())),
            _ => return, // unavailable for now: no increment tried
        };
        let reply = rest
            .put_entry_if(
                "c",
                "counter",
                &(value + 1).to_string(),
                (precondition.0, &precondition.1),
            )
            .await;
        match reply.status.as_u16() {
            200 | 201 => {
                *acked += 1;
                versions.push(reply.body["version"].as_u64().expect("a version"));
                return;
            }
            412 => continue,
            503 => {
                *unknown += 1;
                return;
            }
            other => panic!("increment: unexpected {other} {}", reply.text),
        }
    }
}
