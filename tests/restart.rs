//! Resuming across a restart of the node. Data lives in memory only, so a
//! restarted node starts its caches' histories over, and the same
//! `(segment, version)` then names another write. Positions and tokens name
//! the incarnation they come from: resuming from another one gets a reset
//! snapshot over every transport, never the new run's events as if they
//! followed the old ones.

mod common;

use std::time::Duration;

use common::sse::SseClient;
use common::ws::WsClient;
use common::{Rest, TestNode};
use serde_json::{json, Value};

const CONFIG: &str = "[caches.c]\nsegments = 4\n";

/// A node that was written `k` twice, and one "restarted" after it, with
/// the same cache, written `k` six times: versions 1 to 6 again.
async fn two_runs() -> (TestNode, impl FnOnce() -> TestNode) {
    let first = TestNode::start_with(CONFIG, &[]);
    let rest = Rest::new(&first);
    for v in 1..=2 {
        rest.put_entry("c", "k", &v.to_string()).await;
    }
    let restart = || TestNode::start_with(CONFIG, &[]);
    (first, restart)
}

/// The next message, within a bound: `WsClient::next` waits on as long as
/// the server keeps pinging, and a resume that is never answered must fail
/// the test, not hang it.
async fn next_within_10s(client: &mut WsClient) -> Value {
    tokio::time::timeout(Duration::from_secs(10), client.next())
        .await
        .expect("a message within 10 s")
}

async fn write_six_times(node: &TestNode) {
    let rest = Rest::new(node);
    for v in 1..=6 {
        rest.put_entry("c", "k", &format!("{}", 100 + v)).await;
    }
}

#[actix_web::test]
async fn a_websocket_resume_from_a_previous_run_gets_a_reset_snapshot() {
    let (first, restart) = two_runs().await;
    let mut client = WsClient::connect(&first).await;
    let reply = client
        .request(json!({"op":"subscribe","cache":"c","filter":{"key":"k"}}))
        .await;
    let sub = reply["sub"].as_str().unwrap().to_string();
    let done = next_within_10s(&mut client).await;
    assert_eq!((&done["type"], &done["done"]), (&json!("snapshot"), &json!(true)));
    let incarnation = done["incarnation"]
        .as_str()
        .expect("the done frame names its incarnation")
        .to_string();
    assert_eq!(incarnation.len(), 8, "{incarnation}");
    let positions = done["positions"].clone();
    assert_eq!(positions.as_object().unwrap().values().next(), Some(&json!(2)));
    drop(client);
    drop(first);

    let second = restart();
    write_six_times(&second).await;
    let mut client = WsClient::connect(&second).await;
    let resume = json!({"positions": positions, "incarnation": incarnation});
    let reply = client
        .request(json!({"op":"subscribe","cache":"c","filter":{"key":"k"},"resume":resume}))
        .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    let (entries, _) = tokio::time::timeout(Duration::from_secs(10), client.read_snapshot(&sub))
        .await
        .expect("a snapshot within 10 s");
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (&entries[0]["value"], &entries[0]["version"]),
        (&json!(106), &json!(6)),
        "the new run's state, not its versions 3 to 6 as if they followed"
    );
}

#[actix_web::test]
async fn the_reset_frame_says_reset_and_names_the_new_incarnation() {
    let (first, restart) = two_runs().await;
    let mut client = WsClient::connect(&first).await;
    client
        .request(json!({"op":"subscribe","cache":"c","filter":{"key":"k"}}))
        .await;
    let done = next_within_10s(&mut client).await;
    drop(first);
    let second = restart();
    write_six_times(&second).await;
    let mut client = WsClient::connect(&second).await;
    let resume = json!({"positions": done["positions"], "incarnation": done["incarnation"]});
    client
        .request(json!({"op":"subscribe","cache":"c","filter":{"key":"k"},"resume":resume}))
        .await;
    let reset = next_within_10s(&mut client).await;
    assert_eq!(
        (&reset["type"], &reset["reset"]),
        (&json!("snapshot"), &json!(true)),
        "{reset}"
    );
    assert_eq!(reset["entries"][0]["version"], 6);
    assert_ne!(reset["incarnation"], done["incarnation"]);
    assert!(reset["incarnation"].is_string());
}

#[actix_web::test]
async fn an_sse_last_event_id_from_a_previous_run_gets_a_reset_snapshot() {
    let (first, restart) = two_runs().await;
    let mut stream = SseClient::open(&first, "/api/v1/caches/c/events?key=k", None).await;
    let (entries, token, reset) = stream.snapshot().await;
    assert_eq!((entries.len(), reset), (1, false));
    drop(stream);
    drop(first);

    let second = restart();
    write_six_times(&second).await;
    let mut stream = SseClient::open(&second, "/api/v1/caches/c/events?key=k", Some(&token)).await;
    let (entries, _, reset) = stream.snapshot().await;
    assert!(reset, "a reset snapshot, not the new run's events");
    assert_eq!(entries[0]["value"], 106);
}

#[actix_web::test]
async fn a_poll_after_a_token_from_a_previous_run_gets_a_reset_snapshot() {
    let (first, restart) = two_runs().await;
    let rest = Rest::new(&first);
    let answer = rest.get("/api/v1/caches/c/poll?key=k").await;
    let token = answer.body["position"].as_str().unwrap().to_string();
    drop(rest);
    drop(first);

    let second = restart();
    write_six_times(&second).await;
    let rest = Rest::new(&second);
    let answer = rest
        .get(&format!(
            "/api/v1/caches/c/poll?key=k&after={token}&timeout_ms=1000"
        ))
        .await;
    assert_eq!(answer.body["reset"], true, "{}", answer.text);
    assert_eq!(answer.body["snapshot"][0]["value"], 106);
    assert_eq!(answer.body["events"], json!([]));
}

#[actix_web::test]
async fn resuming_within_one_run_still_replays_exactly_the_missed_events() {
    let node = TestNode::start_with(CONFIG, &[]);
    let rest = Rest::new(&node);
    rest.put_entry("c", "k", "1").await;
    let answer = rest.get("/api/v1/caches/c/poll?key=k").await;
    let token = answer.body["position"].as_str().unwrap().to_string();
    rest.put_entry("c", "k", "2").await;
    let answer = rest
        .get(&format!(
            "/api/v1/caches/c/poll?key=k&after={token}&timeout_ms=1000"
        ))
        .await;
    assert!(answer.body.get("reset").is_none(), "{}", answer.text);
    assert_eq!(answer.body["events"][0]["value"], 2);
}
