//! Subscriptions against a real node: `subscribed`, then the snapshot in
//! frames of at most 1000 entries with its positions, then every matching
//! write once, in version order per key; filters; unsubscribe; snapshot and
//! stream consistent under concurrent writers; fan-out to 1,000 sessions.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::ws::WsClient;
use common::{Rest, TestNode};
use futures_util::future::join_all;
use serde_json::{json, Value};

fn node() -> TestNode {
    TestNode::start_with("[caches.c]\nsegments = 16\n", &[])
}

async fn put(client: &mut WsClient, key: &str, value: Value) -> u64 {
    let reply = client
        .request(json!({"op":"put","cache":"c","key":key,"value":value}))
        .await;
    assert_eq!(reply["type"], "ok", "{reply}");
    reply["version"].as_u64().unwrap()
}

#[actix_web::test]
async fn subscribed_then_snapshot_then_events() {
    let node = node();
    let mut writer = WsClient::connect(&node).await;
    let v1 = put(&mut writer, "p/1", json!(1)).await;
    put(&mut writer, "p/2", json!(2)).await;
    put(&mut writer, "q/1", json!(3)).await;

    let mut client = WsClient::connect(&node).await;
    let (sub, entries, positions) = client.subscribe("c", json!({"prefix":"p/"})).await;
    assert_eq!(sub, "s1");
    let keys: Vec<_> = entries.iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["p/1", "p/2"]);
    let first = &entries[0];
    assert_eq!(
        (first["value"].clone(), first["version"].as_u64()),
        (json!(1), Some(v1))
    );
    let segment = first["segment"].as_u64().unwrap();
    assert!(
        positions[segment.to_string()].as_u64().unwrap() >= v1,
        "positions cover the snapshot"
    );

    let v = put(&mut writer, "p/1", json!({"goals":3})).await;
    put(&mut writer, "q/2", json!(0)).await;
    let removed = writer
        .request(json!({"op":"remove","cache":"c","key":"p/2"}))
        .await;
    let message = client.next().await;
    assert_eq!(message["type"], "event");
    assert_eq!(message["sub"], "s1");
    let event = &message["event"];
    assert_eq!(event["kind"], "modified");
    assert_eq!(
        (event["cache"].as_str(), event["key"].as_str()),
        (Some("c"), Some("p/1"))
    );
    assert_eq!(
        (event["value"].clone(), event["version"].as_u64()),
        (json!({"goals":3}), Some(v))
    );
    assert_eq!(event["segment"], segment);
    assert!(event["id"].as_str().unwrap().len() == 36, "a UUID");
    assert!(event["ts"].as_u64().unwrap() > 1_700_000_000_000);
    let event = client.next_event().await;
    assert_eq!(
        (event["kind"].as_str(), event["key"].as_str()),
        (Some("removed"), Some("p/2"))
    );
    assert!(event.get("value").is_none());
    assert_eq!(event["version"], removed["version"]);
    client.assert_quiet(Duration::from_millis(200)).await;
}

#[actix_web::test]
async fn snapshots_come_in_frames_of_at_most_1000_entries() {
    let node = node();
    let mut writer = WsClient::connect(&node).await;
    for i in 0..2500 {
        writer
            .send(json!({"op":"put","cache":"c","key":format!("k{i:04}"),"value":i}))
            .await;
    }
    for _ in 0..2500 {
        assert_eq!(writer.next().await["type"], "ok");
    }
    let mut client = WsClient::connect(&node).await;
    client.send(json!({"op":"subscribe","cache":"c"})).await;
    assert_eq!(client.next().await["type"], "subscribed");
    let sizes: Vec<(usize, bool)> = {
        let mut sizes = Vec::new();
        loop {
            let frame = client.next().await;
            assert_eq!(frame["type"], "snapshot");
            let done = frame["done"] == true;
            assert_eq!(
                frame.get("positions").is_some(),
                done,
                "positions only on the done frame"
            );
            sizes.push((frame["entries"].as_array().unwrap().len(), done));
            if done {
                break;
            }
        }
        sizes
    };
    assert_eq!(sizes, [(1000, false), (1000, false), (500, true)]);
}

#[actix_web::test]
async fn an_empty_snapshot_is_one_done_frame() {
    let node = node();
    let mut client = WsClient::connect(&node).await;
    client.send(json!({"op":"subscribe","cache":"c","id":1})).await;
    assert_eq!(
        client.next().await,
        json!({"type":"subscribed","id":1,"sub":"s1"})
    );
    let frame = client.next().await;
    let incarnation = frame["incarnation"].as_str().unwrap_or_default();
    assert!(
        incarnation.len() == 8 && incarnation.bytes().all(|b| b.is_ascii_hexdigit()),
        "the done frame names its incarnation: {frame}"
    );
    assert_eq!(
        frame,
        json!({"type":"snapshot","sub":"s1","entries":[],"done":true,"positions":{},"incarnation":incarnation})
    );
}

#[actix_web::test]
async fn filters_select_by_key_prefix_or_nothing() {
    let node = node();
    let mut client = WsClient::connect(&node).await;
    let (whole, ..) = client.subscribe("c", json!({})).await;
    let (exact, ..) = client.subscribe("c", json!({"key":"match/7"})).await;
    let (prefix, ..) = client.subscribe("c", json!({"prefix":"match/"})).await;
    let mut writer = WsClient::connect(&node).await;
    put(&mut writer, "match/7", json!(1)).await;
    put(&mut writer, "match/70", json!(2)).await;
    put(&mut writer, "team/1", json!(3)).await;
    let mut seen: Vec<(String, String)> = Vec::new();
    for _ in 0..6 {
        let message = client.next().await;
        seen.push((
            message["sub"].as_str().unwrap().into(),
            message["event"]["key"].as_str().unwrap().into(),
        ));
    }
    seen.sort();
    let mut expected = vec![
        (whole.clone(), "match/7".to_string()),
        (whole.clone(), "match/70".into()),
        (whole, "team/1".into()),
        (exact, "match/7".into()),
        (prefix.clone(), "match/7".into()),
        (prefix, "match/70".into()),
    ];
    expected.sort();
    assert_eq!(seen, expected);
    client.assert_quiet(Duration::from_millis(200)).await;
}

#[actix_web::test]
async fn without_a_snapshot_only_later_writes_arrive() {
    let node = node();
    let mut writer = WsClient::connect(&node).await;
    put(&mut writer, "a", json!(1)).await;
    let mut client = WsClient::connect(&node).await;
    let reply = client
        .request(json!({"op":"subscribe","cache":"c","snapshot":false}))
        .await;
    assert_eq!(reply["type"], "subscribed");
    put(&mut writer, "a", json!(2)).await;
    let event = client.next_event().await;
    assert_eq!(event["value"], 2, "no snapshot frame first");
}

#[actix_web::test]
async fn unsubscribe_stops_the_events() {
    let node = node();
    let mut client = WsClient::connect(&node).await;
    let (sub, ..) = client.subscribe("c", json!({})).await;
    let mut writer = WsClient::connect(&node).await;
    put(&mut writer, "a", json!(1)).await;
    assert_eq!(client.next_event().await["value"], 1);
    let reply = client.request(json!({"op":"unsubscribe","sub":sub})).await;
    assert_eq!(reply["type"], "unsubscribed");
    assert_eq!(reply["sub"], sub);
    put(&mut writer, "a", json!(2)).await;
    client.assert_quiet(Duration::from_millis(300)).await;
    let metrics = Rest::new(&node);
    assert_eq!(metrics.metric("pushgrid_subscriptions").await, Some(0.0));
}

#[actix_web::test]
async fn snapshot_and_stream_agree_under_concurrent_writers() {
    let node = node();
    const WRITERS: usize = 4;
    const KEYS_PER_WRITER: usize = 5;
    const ROUNDS: u64 = 60;
    // The subscriber joins once writes are under way, and the writers hold
    // their last round until it has its snapshot: its snapshot is taken
    // amid writes, and at least that last round reaches it as events,
    // however the machine schedules the two.
    let (under_way, mut writes_began) = tokio::sync::watch::channel(false);
    let (snapshot_read, has_snapshot) = tokio::sync::watch::channel(false);
    let write = |w: usize| {
        let node = &node;
        let under_way = &under_way;
        let mut has_snapshot = has_snapshot.clone();
        async move {
            let mut writer = WsClient::connect(node).await;
            for round in 1..=ROUNDS {
                if round == ROUNDS {
                    has_snapshot.wait_for(|read| *read).await.unwrap();
                }
                for k in 0..KEYS_PER_WRITER {
                    put(
                        &mut writer,
                        &format!("w{w}/k{k}"),
                        json!({"count": round, "pad": "x"}),
                    )
                    .await;
                }
                if round == 3 {
                    under_way.send_replace(true);
                }
            }
        }
    };
    let subscribe = async {
        // Join mid-stream.
        writes_began.wait_for(|began| *began).await.unwrap();
        let mut client = WsClient::connect(&node).await;
        let (_, entries, _) = client.subscribe("c", json!({})).await;
        snapshot_read.send_replace(true);
        let mut last: HashMap<String, (u64, u64)> = HashMap::new();
        for entry in &entries {
            let key = entry["key"].as_str().unwrap().to_string();
            last.insert(
                key,
                (
                    entry["value"]["count"].as_u64().unwrap(),
                    entry["version"].as_u64().unwrap(),
                ),
            );
        }
        assert!(!entries.is_empty() && entries.len() <= WRITERS * KEYS_PER_WRITER);
        let mut events = 0;
        while last.len() < WRITERS * KEYS_PER_WRITER || last.values().any(|(count, _)| *count < ROUNDS) {
            let event = client.next_event().await;
            let key = event["key"].as_str().unwrap().to_string();
            let count = event["value"]["count"].as_u64().unwrap();
            let version = event["version"].as_u64().unwrap();
            let (previous, previous_version) = last.get(&key).copied().unwrap_or((0, 0));
            assert_eq!(
                count,
                previous + 1,
                "{key}: no duplicate and no gap between snapshot and stream"
            );
            assert!(version > previous_version, "{key}: versions grow");
            last.insert(key, (count, version));
            events += 1;
        }
        client.assert_quiet(Duration::from_millis(200)).await;
        events
    };
    let (events, _) = futures_util::join!(subscribe, join_all((0..WRITERS).map(write)));
    assert!(
        events >= WRITERS * KEYS_PER_WRITER,
        "the last round, written after the snapshot, arrived as events"
    );
}

#[actix_web::test]
async fn a_thousand_sessions_each_receive_every_event_of_a_prefix() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let node = node();
    const SESSIONS: usize = 1000;
    const WRITES: u64 = 20;
    let mut clients = Vec::with_capacity(SESSIONS);
    for _ in 0..SESSIONS {
        let mut client = WsClient::connect(&node).await;
        client
            .send(json!({"op":"subscribe","cache":"c","filter":{"prefix":"live/"}}))
            .await;
        clients.push(client);
    }
    for client in &mut clients {
        assert_eq!(client.next().await["type"], "subscribed");
        assert_eq!(client.next().await["done"], true);
    }
    let mut writer = WsClient::connect(&node).await;
    for i in 1..=WRITES {
        put(&mut writer, &format!("live/{}", i % 3), json!(i)).await;
        put(&mut writer, "other", json!(i)).await;
    }
    let receive = |mut client: WsClient| async move {
        for i in 1..=WRITES {
            let event = client.next_event().await;
            assert_eq!(event["value"], i, "every event, in order");
        }
    };
    join_all(clients.into_iter().map(receive)).await;
    let delivered = Rest::new(&node)
        .metric("pushgrid_events_delivered_total")
        .await
        .unwrap();
    assert_eq!(delivered, (SESSIONS as u64 * WRITES) as f64);
}
