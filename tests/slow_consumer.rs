//! Slow consumers against a real node: a client that stops reading while
//! writes continue does not make the server's memory grow without bound. It
//! is sent only the latest write of each key it fell behind on (marked
//! `conflated`), and if even that cannot fit, it is closed with 1013.

mod common;

use std::collections::HashMap;

use common::ws::WsClient;
use common::{Rest, TestNode};
use serde_json::{json, Value};

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Pipelines `count` puts and waits for all of their acks.
async fn write_burst(
    writer: &mut WsClient,
    count: usize,
    key: impl Fn(usize) -> String,
    value: impl Fn(usize) -> Value,
) {
    for i in 0..count {
        writer
            .send(json!({"op":"put","cache":"c","key":key(i),"value":value(i)}))
            .await;
    }
    for _ in 0..count {
        assert_eq!(writer.next().await["type"], "ok");
    }
}

#[actix_web::test]
async fn a_reader_that_falls_behind_gets_the_latest_writes_conflated_in_bounded_memory() {
    let node = TestNode::start_with(
        "[caches.c]\nsegments = 8\nhistory_per_segment = 8\n[websocket]\nconflate_after_bytes = 65536\nclose_after_bytes = 67108864\n",
        &[],
    );
    const KEYS: usize = 5;
    const WRITES: usize = 12_000;
    let padding = "x".repeat(4096);
    let mut reader = WsClient::connect(&node).await;
    reader.subscribe("c", json!({})).await;
    let mut writer = WsClient::connect(&node).await;
    let baseline = rss_kib(node.pid());

    // ~48 MiB of events while the reader reads nothing.
    for chunk in 0..(WRITES / 1000) {
        write_burst(
            &mut writer,
            1000,
            |i| format!("k{}", (chunk * 1000 + i) % KEYS),
            |i| json!({"n": chunk * 1000 + i, "pad": padding}),
        )
        .await;
    }
    let grown_mib = rss_kib(node.pid()).saturating_sub(baseline) / 1024;
    assert!(
        grown_mib < 32,
        "server memory grew {grown_mib} MiB for a stalled reader"
    );

    // The reader catches up: per key, versions grow and the last write arrives.
    let last_n: HashMap<String, u64> = (0..KEYS)
        .map(|k| (format!("k{k}"), ((WRITES - KEYS + k) as u64)))
        .collect();
    let mut latest: HashMap<String, (u64, u64)> = HashMap::new();
    let (mut received, mut conflated) = (0, 0);
    while latest.len() < KEYS || latest.iter().any(|(k, (n, _))| *n != last_n[k]) {
        let event = reader.next_event().await;
        let key = event["key"].as_str().unwrap().to_string();
        let n = event["value"]["n"].as_u64().unwrap();
        let version = event["version"].as_u64().unwrap();
        if let Some((previous_n, previous_version)) = latest.get(&key) {
            assert!(
                version > *previous_version && n > *previous_n,
                "{key}: in order, never repeated: {previous_n}@{previous_version} then {n}@{version} {}",
                event["conflated"]
            );
        }
        if event["conflated"] == true {
            conflated += 1;
        }
        latest.insert(key, (n, version));
        received += 1;
    }
    assert!(conflated > 0, "some events were conflated");
    assert!(
        received < WRITES,
        "skipped writes are never sent later ({received} of {WRITES})"
    );
    let rest = Rest::new(&node);
    assert!(rest.metric("pushgrid_events_conflated_total").await.unwrap() > 0.0);
    assert_eq!(
        rest.metric("pushgrid_slow_consumer_closes_total").await,
        Some(0.0)
    );
}

#[actix_web::test]
async fn a_reader_that_cannot_keep_up_even_conflated_is_closed_with_1013() {
    let node = TestNode::start_with(
        "[caches.c]\nhistory_per_segment = 1\n[websocket]\nconflate_after_bytes = 65536\nclose_after_bytes = 1048576\n",
        &[],
    );
    let padding = "y".repeat(2048);
    let mut reader = WsClient::connect(&node).await;
    reader.subscribe("c", json!({})).await;
    let mut writer = WsClient::connect(&node).await;
    // Every write a new key: nothing to conflate, so the backlog only grows.
    for chunk in 0..20 {
        write_burst(
            &mut writer,
            1000,
            |i| format!("k{}", chunk * 1000 + i),
            |_| json!(padding),
        )
        .await;
    }
    assert_eq!(reader.close_code().await, Some(1013));
    let rest = Rest::new(&node);
    assert_eq!(
        rest.metric("pushgrid_slow_consumer_closes_total").await,
        Some(1.0)
    );
    // The writer was never slowed down or closed.
    assert_eq!(writer.request(json!({"op":"ping"})).await["type"], "pong");
}
