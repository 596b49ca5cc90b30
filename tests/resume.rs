//! Resume against a real node: a client that reconnects with the positions
//! it holds gets exactly the matching events it missed, with their original
//! ids and no snapshot, when the history still holds them; otherwise a
//! snapshot marked `reset`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::ws::WsClient;
use common::TestNode;
use serde_json::{json, Value};

async fn put(client: &mut WsClient, key: &str, value: Value) {
    let reply = client
        .request(json!({"op":"put","cache":"c","key":key,"value":value}))
        .await;
    assert_eq!(reply["type"], "ok", "{reply}");
}

/// Positions as a client tracks them: the snapshot's, advanced by events.
fn advance(positions: &mut BTreeMap<String, u64>, event: &Value) {
    let segment = event["segment"].to_string();
    let version = event["version"].as_u64().unwrap();
    let position = positions.entry(segment).or_default();
    *position = (*position).max(version);
}

fn positions_of(snapshot_positions: &Value) -> BTreeMap<String, u64> {
    snapshot_positions
        .as_object()
        .unwrap()
        .iter()
        .map(|(s, v)| (s.clone(), v.as_u64().unwrap()))
        .collect()
}

async fn resume_replays_exactly_the_missed_events_over(msgpack: bool) {
    let node = TestNode::start_with("[caches.c]\nsegments = 8\n", &[]);
    let connect = || async {
        if msgpack {
            WsClient::connect_msgpack(&node).await
        } else {
            WsClient::connect(&node).await
        }
    };
    let mut writer = WsClient::connect(&node).await;
    // A witness that stays connected sees every event with its id.
    let mut witness = WsClient::connect(&node).await;
    witness.subscribe("c", json!({"prefix":"m/"})).await;

    for i in 0..5 {
        put(&mut writer, &format!("m/{i}"), json!(i)).await;
    }
    let mut client = connect().await;
    let (_, entries, positions) = client.subscribe("c", json!({"prefix":"m/"})).await;
    assert_eq!(entries.len(), 5);
    let mut positions = positions_of(&positions);
    put(&mut writer, "m/0", json!("seen live")).await;
    let event = client.next_event().await;
    advance(&mut positions, &event);
    for _ in 0..6 {
        witness.next_event().await;
    }
    drop(client);

    // Missed while away: matching and non-matching writes.
    let mut missed = Vec::new();
    for i in 0..12 {
        put(&mut writer, &format!("m/{}", i % 4), json!({"missed": i})).await;
        put(&mut writer, &format!("x/{i}"), json!(i)).await;
        missed.push(witness.next_event().await);
    }

    let mut client = connect().await;
    let reply = client
        .request(
            json!({"op":"subscribe","cache":"c","filter":{"prefix":"m/"},"resume":{"positions":positions}}),
        )
        .await;
    assert_eq!(reply["type"], "subscribed");
    let mut replayed = Vec::new();
    for _ in 0..missed.len() {
        let message = client.next().await;
        assert_eq!(
            message["type"], "event",
            "no snapshot on a successful resume: {message}"
        );
        replayed.push(message["event"].clone());
    }
    let ids = |events: &[Value]| {
        let mut ids: Vec<String> = events
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(&replayed),
        ids(&missed),
        "exactly the missed events, with their original ids"
    );
    for key in ["m/0", "m/1", "m/2", "m/3"] {
        let versions: Vec<u64> = replayed
            .iter()
            .filter(|e| e["key"] == key)
            .map(|e| e["version"].as_u64().unwrap())
            .collect();
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "{key}: in version order"
        );
    }
    // Then live events, and nothing else.
    put(&mut writer, "m/9", json!("live")).await;
    assert_eq!(client.next_event().await["value"], "live");
    client.assert_quiet(Duration::from_millis(200)).await;
}

#[actix_web::test]
async fn resume_replays_exactly_the_missed_events() {
    resume_replays_exactly_the_missed_events_over(false).await;
}

#[actix_web::test]
async fn resume_replays_exactly_the_missed_events_over_msgpack() {
    resume_replays_exactly_the_missed_events_over(true).await;
}

#[actix_web::test]
async fn resume_past_the_history_sends_a_reset_snapshot() {
    let node = TestNode::start_with("[caches.c]\nsegments = 1\nhistory_per_segment = 4\n", &[]);
    let mut writer = WsClient::connect(&node).await;
    put(&mut writer, "a", json!(1)).await;
    let mut client = WsClient::connect(&node).await;
    let (_, _, positions) = client.subscribe("c", json!({})).await;
    drop(client);
    for i in 0..10 {
        put(&mut writer, &format!("k{i}"), json!(i)).await;
    }
    let mut client = WsClient::connect(&node).await;
    let reply = client
        .request(json!({"op":"subscribe","cache":"c","resume":{"positions":positions}}))
        .await;
    assert_eq!(reply["type"], "subscribed");
    let frame = client.next().await;
    assert_eq!(frame["type"], "snapshot");
    assert_eq!(frame["reset"], true);
    assert_eq!(frame["done"], true);
    assert_eq!(
        frame["entries"].as_array().unwrap().len(),
        11,
        "the whole current state"
    );
    assert_eq!(frame["positions"]["0"], 11);
    put(&mut writer, "a", json!(2)).await;
    assert_eq!(client.next_event().await["version"], 12);
}

#[actix_web::test]
async fn resume_from_positions_the_node_never_reached_resets() {
    let node = TestNode::start_with("[caches.c]\nsegments = 2\n", &[]);
    let mut writer = WsClient::connect(&node).await;
    put(&mut writer, "a", json!(1)).await;
    let mut client = WsClient::connect(&node).await;
    let reply = client
        .request(json!({"op":"subscribe","cache":"c","resume":{"positions":{"0":500,"1":500}}}))
        .await;
    assert_eq!(reply["type"], "subscribed");
    let frame = client.next().await;
    assert_eq!(
        (frame["type"].as_str(), frame["reset"].as_bool()),
        (Some("snapshot"), Some(true))
    );
    assert_eq!(frame["entries"][0]["key"], "a");
}

#[actix_web::test]
async fn resume_with_nothing_missed_sends_nothing_until_the_next_write() {
    let node = TestNode::start_with("[caches.c]\nsegments = 4\n", &[]);
    let mut writer = WsClient::connect(&node).await;
    put(&mut writer, "a", json!(1)).await;
    let mut client = WsClient::connect(&node).await;
    let (_, _, positions) = client.subscribe("c", json!({})).await;
    drop(client);
    let mut client = WsClient::connect(&node).await;
    client
        .request(json!({"op":"subscribe","cache":"c","snapshot":true,"resume":{"positions":positions}}))
        .await;
    client.assert_quiet(Duration::from_millis(200)).await;
    put(&mut writer, "a", json!(2)).await;
    assert_eq!(client.next_event().await["value"], 2);
}
