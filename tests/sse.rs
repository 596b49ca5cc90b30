//! Server-Sent Events against a real node: the snapshot, live events with
//! position-token ids, `Last-Event-ID` resume (replay or reset), filters,
//! heartbeats, errors, and exactly-once in-order delivery across a
//! reconnect while writers race.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::sse::SseClient;
use common::ws::WsClient;
use common::{Rest, TestNode};
use serde_json::{json, Value};

fn node() -> TestNode {
    TestNode::start_with("[caches.c]\nsegments = 8\n", &[])
}

async fn put(rest: &Rest<'_>, key: &str, value: Value) -> u64 {
    let reply = rest.put_entry("c", key, &value.to_string()).await;
    assert!(reply.status.is_success(), "{}", reply.text);
    reply.etag().unwrap().trim_matches('"').parse().unwrap()
}

/// (key, version, id) of events, sorted by key then version.
fn by_key_version(events: &[Value]) -> Vec<(String, u64, String)> {
    let mut all: Vec<_> = events
        .iter()
        .map(|e| {
            let field = |name: &str| e[name].as_str().unwrap().to_string();
            (field("key"), e["version"].as_u64().unwrap(), field("id"))
        })
        .collect();
    all.sort();
    all
}

fn keys(entries: &[Value]) -> Vec<&str> {
    entries.iter().map(|e| e["key"].as_str().unwrap()).collect()
}

#[actix_rt::test]
async fn a_stream_sends_the_snapshot_then_matching_events_with_ids() {
    let node = node();
    let rest = Rest::new(&node);
    for key in ["m/2", "m/1", "other/1"] {
        put(&rest, key, json!({"k": key})).await;
    }
    let mut stream = SseClient::open(&node, "/api/v1/caches/c/events?prefix=m/", None).await;
    assert!(
        stream.content_type.starts_with("text/event-stream"),
        "{}",
        stream.content_type
    );
    let (entries, snapshot_id, reset) = stream.snapshot().await;
    assert_eq!(keys(&entries), ["m/1", "m/2"], "sorted, filtered");
    assert_eq!(entries[0]["value"], json!({"k":"m/1"}));
    assert!(entries[0]["segment"].is_u64() && entries[0]["version"].is_u64());
    assert!(!reset);

    let version = put(&rest, "m/1", json!("new")).await;
    put(&rest, "other/1", json!("not followed")).await;
    rest.delete_entry("c", "m/2").await;
    let (event, first_id) = stream.event().await;
    assert_eq!(
        (
            &event["kind"],
            &event["key"],
            &event["value"],
            &event["version"],
            &event["cache"]
        ),
        (
            &json!("modified"),
            &json!("m/1"),
            &json!("new"),
            &json!(version),
            &json!("c")
        )
    );
    assert!(event["id"].is_string() && event["ts"].is_u64() && event["segment"].is_u64());
    let (removed, second_id) = stream.event().await;
    assert_eq!(
        (&removed["kind"], &removed["key"]),
        (&json!("removed"), &json!("m/2"))
    );
    assert!(removed.get("value").is_none());
    let ids = [&snapshot_id, &first_id, &second_id];
    assert!(
        ids.windows(2).all(|w| w[0] != w[1]),
        "each id is the position after it: {ids:?}"
    );
    assert!(ids.iter().all(|id| id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')));
    stream.assert_quiet(Duration::from_millis(300)).await;
}

#[actix_rt::test]
async fn filters_and_snapshot_false_are_honoured() {
    let node = node();
    let rest = Rest::new(&node);
    put(&rest, "m/1", json!(1)).await;
    put(&rest, "m/10", json!(10)).await;

    let mut by_key = SseClient::open(&node, "/api/v1/caches/c/events?key=m/1", None).await;
    let (entries, key_id, _) = by_key.snapshot().await;
    assert_eq!(
        keys(&entries),
        ["m/1"],
        "a key filter is that key only, not a prefix"
    );
    let token = pushgrid::protocol::position::decode(&key_id).unwrap();
    assert_eq!(
        token.positions.len(),
        1,
        "a key's token holds its one segment: {key_id}"
    );
    assert!(key_id.len() < 16, "and is short: {key_id}");

    let mut whole = SseClient::open(&node, "/api/v1/caches/c/events", None).await;
    assert_eq!(whole.snapshot().await.0.len(), 2);

    let mut live_only =
        SseClient::open(&node, "/api/v1/caches/c/events?prefix=m/&snapshot=false", None).await;
    // Subscribed once the response has started; give the stream a moment.
    live_only.assert_quiet(Duration::from_millis(200)).await;
    put(&rest, "m/10", json!("ten")).await;
    put(&rest, "m/1", json!("one")).await;
    let (event, _) = live_only.event().await;
    assert_eq!(event["key"], "m/10", "no snapshot: the first message is an event");
    assert_eq!(live_only.event().await.0["key"], "m/1");
    assert_eq!(by_key.event().await.0["value"], "one", "m/10 is not m/1");
    assert_eq!(whole.event().await.0["key"], "m/10");
    assert_eq!(whole.event().await.0["key"], "m/1");
}

#[actix_rt::test]
async fn last_event_id_replays_exactly_the_missed_events_then_goes_live() {
    let node = node();
    let rest = Rest::new(&node);
    let mut witness = WsClient::connect(&node).await;
    witness.subscribe("c", json!({"prefix":"m/"})).await;
    for i in 0..4 {
        put(&rest, &format!("m/{i}"), json!(i)).await;
    }
    for _ in 0..4 {
        witness.next_event().await;
    }

    let mut stream = SseClient::open(&node, "/api/v1/caches/c/events?prefix=m/", None).await;
    stream.snapshot().await;
    put(&rest, "m/0", json!("seen")).await;
    let (seen, last_id) = stream.event().await;
    assert_eq!(seen["id"], witness.next_event().await["id"]);
    drop(stream);

    let mut missed = Vec::new();
    for (key, value) in [("m/1", "a"), ("x/1", "unfollowed"), ("m/3", "b"), ("m/1", "c")] {
        put(&rest, key, json!(value)).await;
        if key.starts_with("m/") {
            missed.push(witness.next_event().await);
        }
    }
    for use_header in [true, false] {
        let mut resumed = if use_header {
            SseClient::open(&node, "/api/v1/caches/c/events?prefix=m/", Some(&last_id)).await
        } else {
            let path = format!("/api/v1/caches/c/events?prefix=m/&last_event_id={last_id}");
            SseClient::open(&node, &path, None).await
        };
        let mut replayed = Vec::new();
        let mut replayed_ids = Vec::new();
        for _ in &missed {
            let (event, id) = resumed.event().await;
            replayed.push(event);
            replayed_ids.push(id);
        }
        // Replay goes segment by segment: in version order per key, which
        // is the contract's order.
        assert_eq!(
            by_key_version(&replayed),
            by_key_version(&missed),
            "the original ids, no snapshot"
        );
        let m1: Vec<_> = replayed
            .iter()
            .filter(|e| e["key"] == "m/1")
            .map(|e| &e["value"])
            .collect();
        assert_eq!(m1, [&json!("a"), &json!("c")], "in version order per key");
        resumed.assert_quiet(Duration::from_millis(200)).await;
        if use_header {
            // Every replayed event's id is a full position too: resuming
            // from the first one gets exactly the rest.
            let path = "/api/v1/caches/c/events?prefix=m/";
            let mut again = SseClient::open(&node, path, Some(&replayed_ids[0])).await;
            let mut rest = Vec::new();
            for _ in 1..replayed.len() {
                rest.push(again.event().await.0);
            }
            again.assert_quiet(Duration::from_millis(200)).await;
            assert_eq!(
                by_key_version(&rest),
                by_key_version(&replayed[1..]),
                "the rest, once"
            );
        }
        if use_header {
            put(&rest, "m/2", json!("live")).await;
            let (live, _) = resumed.event().await;
            assert_eq!(live["id"], witness.next_event().await["id"]);
            missed.push(live);
        }
    }
}

#[actix_rt::test]
async fn a_position_the_history_no_longer_reaches_gets_a_reset_snapshot() {
    let node = TestNode::start_with("[caches.c]\nsegments = 1\nhistory_per_segment = 4\n", &[]);
    let rest = Rest::new(&node);
    put(&rest, "m/1", json!(1)).await;
    let mut stream = SseClient::open(&node, "/api/v1/caches/c/events?prefix=m/", None).await;
    let (_, id, _) = stream.snapshot().await;
    drop(stream);
    for i in 0..10 {
        put(&rest, &format!("m/{}", i % 3), json!(i)).await;
    }
    let mut resumed = SseClient::open(
        &node,
        "/api/v1/caches/c/events?prefix=m/&snapshot=false",
        Some(&id),
    )
    .await;
    let (entries, reset_id, reset) = resumed.snapshot().await;
    assert!(reset, "the snapshot replaces state");
    assert_eq!(keys(&entries), ["m/0", "m/1", "m/2"]);
    assert_eq!(entries[0]["value"], 9);
    assert_ne!(reset_id, id);
    put(&rest, "m/1", json!("after")).await;
    assert_eq!(resumed.event().await.0["value"], "after");
}

#[actix_rt::test]
async fn idle_streams_get_heartbeat_comments() {
    let node = TestNode::start_with("[websocket]\nheartbeat_interval_ms = 100\n", &[]);
    Rest::new(&node).create_cache("c", "{}").await;
    let mut stream = SseClient::open(&node, "/api/v1/caches/c/events?snapshot=false", None).await;
    stream.assert_quiet(Duration::from_millis(450)).await;
    assert!(stream.comments().len() >= 2, "comments: {:?}", stream.comments());
}

#[actix_rt::test]
async fn bad_requests_get_the_contract_error() {
    let node = node();
    let cases = [
        ("/api/v1/caches/nope/events", None, 404, "unknown_cache"),
        ("/api/v1/caches/c/events?key=a&prefix=b", None, 400, "bad_request"),
        (
            "/api/v1/caches/c/events",
            Some("not a token!"),
            400,
            "bad_request",
        ),
        // A valid token naming segment 100 of an 8-segment cache.
        ("/api/v1/caches/c/events", Some("AWQB"), 400, "bad_request"),
        ("/api/v1/caches/c/events?snapshot=maybe", None, 400, "bad_request"),
    ];
    for (path, last_event_id, status, code) in cases {
        let Err((got, body)) = SseClient::try_open(&node, path, last_event_id).await else {
            panic!("{path} {last_event_id:?} was accepted");
        };
        assert_eq!(
            (got.as_u16(), body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}"
        );
    }
}

/// Writers race on 12 keys while a stream reads; halfway it reconnects with
/// its last id. Every write of every key arrives exactly once, in version
/// order, with nothing conflated (the reader keeps up).
#[actix_rt::test]
async fn every_write_arrives_once_and_in_order_across_a_reconnect() {
    let node = node();
    let rest = Rest::new(&node);
    const WRITERS: usize = 4;
    const WRITES: usize = 150;
    let mut stream = SseClient::open(&node, "/api/v1/caches/c/events?prefix=k/", None).await;
    let (_, mut last_id, _) = stream.snapshot().await;
    let base = node.base.clone();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let base = base.clone();
            actix_rt::spawn(async move {
                let http = common::client();
                for i in 0..WRITES {
                    let url = format!("{base}/api/v1/caches/c/entries/k/{}", (w * 3 + i) % 12);
                    let reply = common::send(http.put(url), json!([w, i]).to_string()).await;
                    assert!(reply.status.is_success());
                }
            })
        })
        .collect();

    let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut received = 0;
    while received < WRITERS * WRITES {
        if received == WRITERS * WRITES / 2 {
            drop(stream);
            stream = SseClient::open(&node, "/api/v1/caches/c/events?prefix=k/", Some(&last_id)).await;
        }
        let (event, id) = stream.event().await;
        assert!(event.get("conflated").is_none(), "{event}");
        versions
            .entry(event["key"].as_str().unwrap().to_string())
            .or_default()
            .push(event["version"].as_u64().unwrap());
        last_id = id;
        received += 1;
    }
    for writer in writers {
        writer.await.unwrap();
    }
    stream.assert_quiet(Duration::from_millis(300)).await;
    assert_eq!(versions.len(), 12);
    for (key, seen) in &versions {
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{key}: {seen:?}");
        let current = rest.get_entry("c", key).await.etag().unwrap();
        assert_eq!(
            current,
            format!("\"{}\"", seen.last().unwrap()),
            "{key} ends current"
        );
    }
}

#[actix_rt::test]
async fn streams_end_when_the_node_shuts_down() {
    let mut node = node();
    let mut stream = SseClient::open(&node, "/api/v1/caches/c/events", None).await;
    stream.snapshot().await;
    node.terminate();
    stream.drain_until_end().await;
    assert!(node
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
}
