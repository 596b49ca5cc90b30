//! Limits against a real node: values nested too deep are refused before
//! they are parsed, a connection's operations are rate limited (and a client
//! that keeps pushing past its limit is closed with 1008), a node refuses
//! connections past its limit with 503, and a connection's subscriptions are
//! capped.

mod common;

use std::time::Duration;

use awc::error::WsClientError;
use awc::http::StatusCode;
use awc::ws;
use common::ws::WsClient;
use common::{Rest, TestNode};
use serde_json::{json, Value};

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

#[actix_web::test]
async fn values_nested_past_the_limit_are_bad_requests_everywhere() {
    let node = TestNode::start_with("[limits]\nmax_depth = 64\n[caches.c]\n", &[]);
    let rest = Rest::new(&node);
    assert_eq!(
        rest.put_entry("c", "ok", &nested(64)).await.status,
        StatusCode::CREATED
    );
    let deep = rest.put_entry("c", "deep", &nested(65)).await;
    assert_eq!(
        (deep.status, deep.error_code()),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    // Far past serde_json's own recursion limit: refused all the same, never a crash.
    let very_deep = rest.put_entry("c", "deep", &nested(100_000)).await;
    assert_eq!(very_deep.status, StatusCode::BAD_REQUEST);

    for mut client in [
        WsClient::connect(&node).await,
        WsClient::connect_msgpack(&node).await,
    ] {
        // Frames built from text, so the client holds no deep tree itself.
        for (depth, expected) in [(64, "ok"), (65, "error")] {
            let key = if depth == 64 { "ok" } else { "deep" };
            let text = format!(
                r#"{{"op":"put","id":{depth},"cache":"c","key":"{key}","value":{}}}"#,
                nested(depth)
            );
            let frame = if client.msgpack {
                let value: Value = serde_json::from_str(&text).unwrap();
                ws::Message::Binary(rmp_serde::to_vec_named(&value).unwrap().into())
            } else {
                ws::Message::Text(text.into())
            };
            client.send_raw(frame).await;
            let reply = client.next().await;
            assert_eq!(reply["type"], expected, "depth {depth}: {reply}");
            if expected == "error" {
                // Refused before its value is parsed into a tree, but its
                // fields are skimmed, so its id is read and echoed.
                assert_eq!(
                    (reply["code"].as_str(), reply.get("id")),
                    (Some("bad_request"), Some(&json!(depth)))
                );
            }
        }
        assert_eq!(
            client.request(json!({"op":"ping"})).await["type"],
            "pong",
            "still open"
        );
    }
    assert_eq!(
        rest.get_entry("c", "deep").await.status,
        StatusCode::NOT_FOUND,
        "nothing deep was stored"
    );
}

#[actix_web::test]
async fn operations_past_the_rate_get_rate_limited_then_pass_again() {
    let node = TestNode::start_with("[limits]\nops_per_second = 20\n", &[]);
    let mut client = WsClient::connect(&node).await;
    for i in 0..60 {
        client.send(json!({"op":"ping","id":i})).await;
    }
    let mut replies = Vec::new();
    for _ in 0..60 {
        replies.push(client.next().await);
    }
    let pongs = replies.iter().filter(|r| r["type"] == "pong").count();
    let limited: Vec<&Value> = replies.iter().filter(|r| r["code"] == "rate_limited").collect();
    assert!((20..=22).contains(&pongs), "a second's worth passes: {pongs}");
    assert_eq!(pongs + limited.len(), 60);
    assert!(
        limited.iter().all(|r| r["id"].is_number()),
        "refusals echo the id"
    );
    actix_web::rt::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        client.request(json!({"op":"ping"})).await["type"],
        "pong",
        "the bucket refilled"
    );
}

#[actix_web::test]
async fn a_client_that_keeps_flooding_is_closed_with_1008() {
    let node = TestNode::start_with("[limits]\nops_per_second = 20\n", &[]);
    let mut client = WsClient::connect(&node).await;
    for i in 0..400 {
        if !client.try_send(json!({"op":"ping","id":i})).await {
            break;
        }
    }
    let (_, code) = client.drain_until_close().await;
    assert_eq!(code, Some(1008));
}

#[actix_web::test]
async fn connections_past_the_node_limit_get_503() {
    let node = TestNode::start_with("[limits]\nmax_connections = 3\n", &[]);
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(WsClient::connect(&node).await);
    }
    match WsClient::connect_with(&node, &[], None).await {
        Err(WsClientError::InvalidResponseStatus(status)) => {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE)
        }
        other => panic!("expected 503, got {:?}", other.map(|c| c.protocol)),
    }
    drop(open.pop());
    // The slot frees once the server has seen the close.
    let mut admitted = false;
    for _ in 0..50 {
        if WsClient::connect_with(&node, &[], None).await.is_ok() {
            admitted = true;
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admitted, "a freed slot is usable again");
}

#[actix_web::test]
async fn subscriptions_per_connection_are_capped() {
    let node = TestNode::start_with("[limits]\nmax_subscriptions = 2\n[caches.c]\n", &[]);
    let mut client = WsClient::connect(&node).await;
    client.subscribe("c", json!({})).await;
    client.subscribe("c", json!({"prefix":"a"})).await;
    let third = client.request(json!({"op":"subscribe","cache":"c"})).await;
    assert_eq!(
        (third["type"].as_str(), third["code"].as_str()),
        (Some("error"), Some("rate_limited"))
    );
}
