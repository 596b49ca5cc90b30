//! Graceful shutdown of a real node: on SIGTERM every WebSocket session is
//! closed with 1001, a client's writes in flight are either acknowledged or
//! cut off with the close (never answered with an error), and the process
//! exits 0 within its grace period.

mod common;

use std::time::Duration;

use common::ws::WsClient;
use common::TestNode;
use serde_json::json;

#[actix_web::test]
async fn sigterm_closes_sessions_with_1001_and_exits_zero() {
    let mut node = TestNode::start_with("shutdown_grace_secs = 5\n[caches.c]\n", &[]);
    let mut subscriber = WsClient::connect(&node).await;
    subscriber.subscribe("c", json!({})).await;
    let mut writer = WsClient::connect(&node).await;
    for i in 0..500 {
        writer
            .send(json!({"op":"put","id":i,"cache":"c","key":format!("k{}", i % 10),"value":i}))
            .await;
    }
    node.terminate();

    let (replies, code) = writer.drain_until_close().await;
    assert_eq!(code, Some(1001), "the writer is told the server is going away");
    assert!(
        replies.iter().all(|r| r["type"] == "ok"),
        "every reply it got is an acknowledgement"
    );
    let (events, code) = subscriber.drain_until_close().await;
    assert_eq!(code, Some(1001), "so is the subscriber");
    assert!(
        events.iter().all(|e| e["type"] == "event"),
        "nothing but events before the close"
    );

    let status = node
        .wait_exit(Duration::from_secs(8))
        .expect("exited within the grace period");
    assert!(status.success(), "exit status {status}");
}

#[actix_web::test]
async fn sigterm_on_an_idle_node_exits_zero_at_once() {
    let mut node = TestNode::start();
    node.terminate();
    let status = node.wait_exit(Duration::from_secs(3)).expect("exited promptly");
    assert!(status.success(), "exit status {status}");
}
