//! Long polling against a real node: the first poll's snapshot, an
//! immediate answer when events are waiting, a held answer when they are
//! not, the timeout, resets, errors, and exactly-once in-order delivery by
//! chaining polls while writers race.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Reply, Rest, TestNode};
use serde_json::{json, Value};

fn node() -> TestNode {
    TestNode::start_with("[caches.c]\nsegments = 8\n", &[])
}

async fn put(rest: &Rest<'_>, key: &str, value: Value) {
    let reply = rest.put_entry("c", key, &value.to_string()).await;
    assert!(reply.status.is_success(), "{}", reply.text);
}

async fn poll(rest: &Rest<'_>, query: &str) -> Reply {
    let reply = rest.get(&format!("/api/v1/caches/c/poll?{query}")).await;
    assert_eq!(reply.status, 200, "{query}: {}", reply.text);
    reply
}

fn position(reply: &Reply) -> String {
    reply.body["position"].as_str().expect("a position").to_string()
}

fn keys(values: &Value) -> Vec<&str> {
    values
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect()
}

#[actix_rt::test]
async fn the_first_poll_is_a_snapshot_and_the_next_gets_what_followed() {
    let node = node();
    let rest = Rest::new(&node);
    for key in ["m/2", "m/1", "x/1"] {
        put(&rest, key, json!(key)).await;
    }
    let first = poll(&rest, "prefix=m/").await;
    assert_eq!(first.headers.get("content-type").unwrap(), "application/json");
    assert_eq!(keys(&first.body["snapshot"]), ["m/1", "m/2"]);
    assert_eq!(first.body["events"], json!([]));
    assert!(first.body.get("reset").is_none());

    put(&rest, "m/1", json!("new")).await;
    put(&rest, "x/1", json!("unfollowed")).await;
    rest.delete_entry("c", "m/2").await;
    let started = Instant::now();
    let next = poll(&rest, &format!("prefix=m/&after={}", position(&first))).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered at once, not at the timeout"
    );
    let mut events = next.body["events"].as_array().unwrap().clone();
    // Events of different segments come segment by segment.
    events.sort_by_key(|e| e["key"].as_str().unwrap().to_string());
    assert_eq!(keys(&json!(events)), ["m/1", "m/2"], "{}", next.text);
    assert_eq!(
        (&events[0]["kind"], &events[0]["value"]),
        (&json!("modified"), &json!("new"))
    );
    assert_eq!(events[1]["kind"], "removed");
    assert!(next.body.get("snapshot").is_none());
    assert_ne!(position(&next), position(&first));
}

#[actix_rt::test]
async fn a_poll_with_nothing_new_is_held_until_an_event_arrives() {
    let node = node();
    let rest = Rest::new(&node);
    put(&rest, "m/1", json!(0)).await;
    let first = poll(&rest, "key=m/1").await;
    let after = position(&first);
    let path = format!("/api/v1/caches/c/poll?key=m/1&after={after}&timeout_ms=20000");
    let url = node.url(&path);
    let held = actix_rt::spawn(async move {
        let started = Instant::now();
        let reply = common::send(common::client().get(url), "").await;
        (reply, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    put(&rest, "m/10", json!("another key")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!held.is_finished(), "a write to another key does not answer it");
    put(&rest, "m/1", json!(1)).await;
    let (reply, waited) = held.await.unwrap();
    assert!(
        waited >= Duration::from_millis(500),
        "held until the write: {waited:?}"
    );
    assert!(waited < Duration::from_secs(20), "answered before the timeout");
    assert_eq!(keys(&reply.body["events"]), ["m/1"], "{}", reply.text);
    assert_eq!(reply.body["events"][0]["value"], 1);
}

#[actix_rt::test]
async fn a_poll_that_times_out_answers_empty_and_its_position_still_resumes() {
    let node = node();
    let rest = Rest::new(&node);
    let first = poll(&rest, "prefix=m/").await;
    put(&rest, "x/1", json!("unfollowed")).await;
    let started = Instant::now();
    let empty = poll(
        &rest,
        &format!("prefix=m/&after={}&timeout_ms=300", position(&first)),
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(empty.body, json!({"events":[],"position":empty.body["position"]}));
    put(&rest, "m/1", json!(1)).await;
    let next = poll(
        &rest,
        &format!("prefix=m/&after={}&timeout_ms=300", position(&empty)),
    )
    .await;
    assert_eq!(keys(&next.body["events"]), ["m/1"]);
}

#[actix_rt::test]
async fn a_position_the_history_no_longer_reaches_gets_a_reset() {
    let node = TestNode::start_with("[caches.c]\nsegments = 1\nhistory_per_segment = 4\n", &[]);
    let rest = Rest::new(&node);
    put(&rest, "m/1", json!(1)).await;
    let first = poll(&rest, "prefix=m/").await;
    for i in 0..10 {
        put(&rest, &format!("m/{}", i % 3), json!(i)).await;
    }
    let reset = poll(&rest, &format!("prefix=m/&after={}", position(&first))).await;
    assert_eq!(reset.body["reset"], true, "{}", reset.text);
    assert_eq!(keys(&reset.body["snapshot"]), ["m/0", "m/1", "m/2"]);
    assert_eq!(reset.body["events"], json!([]));
    put(&rest, "m/2", json!("after")).await;
    let next = poll(&rest, &format!("prefix=m/&after={}", position(&reset))).await;
    assert_eq!(next.body["events"][0]["value"], "after");
}

#[actix_rt::test]
async fn bad_polls_get_the_contract_error() {
    let node = node();
    let rest = Rest::new(&node);
    for (path, status, code) in [
        ("/api/v1/caches/nope/poll", 404, "unknown_cache"),
        ("/api/v1/caches/c/poll?after=%21%21", 400, "bad_request"),
        ("/api/v1/caches/c/poll?after=AWQB", 400, "bad_request"),
        ("/api/v1/caches/c/poll?timeout_ms=-1", 400, "bad_request"),
        ("/api/v1/caches/c/poll?key=a&prefix=b", 400, "bad_request"),
    ] {
        let reply = rest.get(path).await;
        assert_eq!(
            (reply.status.as_u16(), reply.error_code()),
            (status, code),
            "{path}"
        );
    }
}

/// Writers race on 12 keys while a client chains polls: every write of every
/// key arrives exactly once and in version order.
#[actix_rt::test]
async fn chained_polls_get_every_write_once_and_in_order() {
    let node = node();
    let rest = Rest::new(&node);
    const WRITERS: usize = 4;
    const WRITES: usize = 100;
    let mut after = position(&poll(&rest, "prefix=k/").await);
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let base = node.base.clone();
            actix_rt::spawn(async move {
                let http = common::client();
                for i in 0..WRITES {
                    let url = format!("{base}/api/v1/caches/c/entries/k/{}", (w * 3 + i) % 12);
                    assert!(common::send(http.put(url), json!([w, i]).to_string())
                        .await
                        .status
                        .is_success());
                }
            })
        })
        .collect();
    let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut received = 0;
    let mut polls = 0;
    while received < WRITERS * WRITES {
        let reply = poll(&rest, &format!("prefix=k/&after={after}&timeout_ms=10000")).await;
        assert!(reply.body.get("reset").is_none(), "the history reaches back");
        let events = reply.body["events"].as_array().unwrap();
        assert!(!events.is_empty(), "held until events came, not timed out");
        for event in events {
            versions
                .entry(event["key"].as_str().unwrap().to_string())
                .or_default()
                .push(event["version"].as_u64().unwrap());
        }
        received += events.len();
        after = position(&reply);
        polls += 1;
    }
    assert_eq!(received, WRITERS * WRITES, "nothing twice");
    for writer in writers {
        writer.await.unwrap();
    }
    let quiet = poll(&rest, &format!("prefix=k/&after={after}&timeout_ms=300")).await;
    assert_eq!(quiet.body["events"], json!([]), "nothing left over");
    for (key, seen) in &versions {
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{key}: {seen:?}");
    }
    assert!(polls > 1);
}

/// A client that gives up on a held poll leaves nothing behind: once the
/// poll's timeout passes (actix-web does not tell a waiting handler that
/// its client hung up, so the timeout bounds it), its subscription is
/// dropped and the held-polls gauge goes back down.
#[actix_rt::test]
async fn an_abandoned_poll_is_cleaned_up() {
    let node = node();
    let rest = Rest::new(&node);
    let after = position(&poll(&rest, "prefix=m/").await);
    let mut client = tokio::net::TcpStream::connect(node.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let request = format!(
        "GET /api/v1/caches/c/poll?prefix=m/&after={after}&timeout_ms=1000 HTTP/1.1\r\nHost: x\r\n\r\n"
    );
    tokio::io::AsyncWriteExt::write_all(&mut client, request.as_bytes())
        .await
        .unwrap();
    async fn gauge(rest: &Rest<'_>) -> (Option<f64>, Option<f64>) {
        (
            rest.metric("pushgrid_polls_held").await,
            rest.metric("pushgrid_subscriptions").await,
        )
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while gauge(&rest).await != (Some(1.0), Some(1.0)) {
        assert!(Instant::now() < deadline, "the poll was never held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(10);
    while gauge(&rest).await != (Some(0.0), Some(0.0)) {
        assert!(Instant::now() < deadline, "still held: {:?}", gauge(&rest).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn answers_are_shared_only_with_origins_that_may_push() {
    let node = node();
    let rest = Rest::new(&node);
    let from = |origin: &'static str| {
        let url = node.url("/api/v1/caches/c/poll?key=k");
        let request = rest.http.get(url).insert_header(("Origin", origin));
        common::send(request, "")
    };
    // `localhost` is on the default allow-list, on any port.
    let allowed = from("http://localhost:5173").await;
    assert_eq!(allowed.status, 200, "{}", allowed.text);
    assert_eq!(
        allowed.headers.get("access-control-allow-origin").unwrap(),
        "http://localhost:5173"
    );
    assert!(allowed.headers.get_all("vary").any(|v| v == "Origin"));
    // Another site's script may not read it (the browser enforces that).
    let other = from("https://elsewhere.example").await;
    assert_eq!(other.status, 200, "{}", other.text);
    assert!(other.headers.get("access-control-allow-origin").is_none());
}
