//! The WebSocket request/reply rows of the contract against a real node:
//! `get`, `put`, `remove`, `ping` with ids echoed, every error code, bad
//! frames that leave the connection open, close codes, subprotocols and
//! origins.

mod common;

use std::time::Duration;

use awc::error::WsClientError;
use awc::http::StatusCode;
use awc::ws;
use common::ws::{WsClient, JSON, MSGPACK};
use common::TestNode;
use serde_json::{json, Value};

fn node() -> TestNode {
    TestNode::start_with("[caches.c]\n[caches.small]\nmax_value_bytes = 64\n", &[])
}

async fn run_ops(client: &mut WsClient) {
    let put = client
        .request(json!({"op":"put","cache":"c","key":"match/7","value":{"home":1,"away":0}}))
        .await;
    assert_eq!(put["type"], "ok");
    assert_eq!(put["created"], true);
    let v1 = put["version"].as_u64().unwrap();

    let get = client
        .request(json!({"op":"get","cache":"c","key":"match/7"}))
        .await;
    assert_eq!(get["type"], "entry");
    assert_eq!(get["key"], "match/7");
    assert_eq!(get["value"], json!({"home":1,"away":0}));
    assert_eq!(get["version"], v1);

    let stale = client
        .request(json!({"op":"put","cache":"c","key":"match/7","value":2,"if_version":v1 + 100}))
        .await;
    assert_eq!(stale["type"], "error");
    assert_eq!(stale["code"], "version_mismatch");
    assert_eq!(stale["current_version"], v1);

    let cas = client
        .request(json!({"op":"put","cache":"c","key":"match/7","value":2,"if_version":v1}))
        .await;
    assert_eq!(
        (cas["type"].as_str(), cas["created"].as_bool()),
        (Some("ok"), Some(false))
    );

    let absent = client
        .request(json!({"op":"put","cache":"c","key":"match/7","value":3,"if_absent":true}))
        .await;
    assert_eq!(absent["code"], "version_mismatch");

    let removed = client
        .request(json!({"op":"remove","cache":"c","key":"match/7"}))
        .await;
    assert_eq!(removed["type"], "ok");
    assert!(removed["version"].as_u64().unwrap() > v1);
    assert!(removed.get("created").is_none());

    let missing = client
        .request(json!({"op":"get","cache":"c","key":"match/7"}))
        .await;
    assert_eq!(
        (missing["type"].as_str(), missing["code"].as_str()),
        (Some("error"), Some("not_found"))
    );
    let gone = client
        .request(json!({"op":"remove","cache":"c","key":"match/7"}))
        .await;
    assert_eq!(gone["code"], "not_found");
    let pong = client.request(json!({"op":"ping"})).await;
    assert_eq!(pong["type"], "pong");
}

#[actix_web::test]
async fn json_is_the_default_and_every_op_replies_with_its_id() {
    let node = node();
    let mut client = WsClient::connect(&node).await;
    assert_eq!(client.protocol, None);
    run_ops(&mut client).await;
}

#[actix_web::test]
async fn msgpack_clients_get_binary_frames_with_the_same_fields() {
    let node = node();
    let mut client = WsClient::connect_msgpack(&node).await;
    assert_eq!(client.protocol.as_deref(), Some(MSGPACK));
    run_ops(&mut client).await;
}

#[actix_web::test]
async fn a_value_written_in_msgpack_reads_back_in_json() {
    let node = node();
    let mut msgpack = WsClient::connect_msgpack(&node).await;
    let value = json!({"nested":{"list":[1,2.5,"three",null,true]},"n":-7});
    msgpack
        .request(json!({"op":"put","cache":"c","key":"k","value":value}))
        .await;
    let mut json_client = WsClient::connect_with(&node, &[JSON], None).await.unwrap();
    assert_eq!(json_client.protocol.as_deref(), Some(JSON));
    let read = json_client
        .request(json!({"op":"get","cache":"c","key":"k"}))
        .await;
    assert_eq!(read["value"], value);
}

#[actix_web::test]
async fn string_ids_are_echoed_and_ids_are_optional() {
    let node = node();
    let mut client = WsClient::connect(&node).await;
    client.send(json!({"op":"ping","id":"abc"})).await;
    assert_eq!(client.next().await, json!({"type":"pong","id":"abc"}));
    client.send(json!({"op":"ping"})).await;
    assert_eq!(client.next().await, json!({"type":"pong"}));
}

#[actix_web::test]
async fn bad_messages_get_errors_and_the_connection_stays_open() {
    let node = node();
    let mut client = WsClient::connect(&node).await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"op":"fly","id":1}), "bad_request"),
        (json!({"id":2}), "bad_request"),
        (json!({"op":"get","id":3,"cache":"c"}), "bad_request"),
        (json!({"op":"get","id":4,"cache":"c","key":7}), "bad_request"),
        (
            json!({"op":"get","id":5,"cache":"nope","key":"k"}),
            "unknown_cache",
        ),
        (json!({"op":"subscribe","id":6,"cache":"nope"}), "unknown_cache"),
        (
            json!({"op":"put","id":7,"cache":"c","key":"","value":1}),
            "bad_request",
        ),
        (
            json!({"op":"put","id":8,"cache":"c","key":"k","value":1,"if_version":1,"if_absent":true}),
            "bad_request",
        ),
        (
            json!({"op":"put","id":9,"cache":"small","key":"k","value":"x".repeat(100)}),
            "too_large",
        ),
        (
            json!({"op":"put","id":10,"cache":"c","key":"k","value":1,"lifespan_ms":"soon"}),
            "bad_request",
        ),
        (
            json!({"op":"subscribe","id":11,"cache":"c","filter":{"key":"a","prefix":"b"}}),
            "bad_request",
        ),
        (
            json!({"op":"subscribe","id":12,"cache":"c","filter":{"colour":"red"}}),
            "bad_request",
        ),
        (
            json!({"op":"subscribe","id":13,"cache":"c","resume":{"positions":{"x":1}}}),
            "bad_request",
        ),
        (json!({"op":"unsubscribe","id":14,"sub":"s99"}), "bad_request"),
        (json!({"op":"put","id":15,"cache":"c","key":"k"}), "bad_request"),
    ];
    for (message, code) in cases {
        let id = message["id"].clone();
        client.send(message.clone()).await;
        let reply = client.next().await;
        assert_eq!(reply["type"], "error", "{message}");
        assert_eq!(reply["code"], code, "{message} -> {reply}");
        assert_eq!(reply["id"], id, "{message}");
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    for raw in ["not json", "{\"op\":", "[1,2]", "42", ""] {
        client.send_raw(ws::Message::Text(raw.into())).await;
        let reply = client.next().await;
        assert_eq!(
            (reply["type"].as_str(), reply["code"].as_str()),
            (Some("error"), Some("bad_request")),
            "{raw:?}"
        );
    }
    // Still serving, and nothing bad was stored.
    assert_eq!(client.request(json!({"op":"ping"})).await["type"], "pong");
    let read = client.request(json!({"op":"get","cache":"c","key":"k"})).await;
    assert_eq!(read["code"], "not_found");
}

#[actix_web::test]
async fn malformed_msgpack_gets_an_error_too() {
    let node = node();
    let mut client = WsClient::connect_msgpack(&node).await;
    client
        .send_raw(ws::Message::Binary(vec![0xc1, 0x00].into()))
        .await;
    assert_eq!(client.next().await["code"], "bad_request");
    client
        .send_raw(ws::Message::Binary(
            rmp_serde::to_vec(&vec![1, 2]).unwrap().into(),
        ))
        .await;
    assert_eq!(client.next().await["code"], "bad_request");
    assert_eq!(client.request(json!({"op":"ping"})).await["type"], "pong");
}

#[actix_web::test]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let node = node();
    let mut client = WsClient::connect(&node).await;
    client.send_raw(ws::Message::Text(unsafe_invalid_utf8())).await;
    assert_eq!(client.close_code().await, Some(1007));
}

/// A text frame whose payload is not UTF-8, as a broken client would send.
fn unsafe_invalid_utf8() -> bytestring::ByteString {
    // SAFETY: the ByteString is only handed to the frame encoder, which
    // copies its bytes; nothing reads it as a str.
    unsafe { bytestring::ByteString::from_bytes_unchecked(bytes::Bytes::from_static(b"{\"op\":\"\xff\"}")) }
}

#[actix_web::test]
async fn a_message_over_the_limit_closes_with_1009() {
    let node = TestNode::start_with("[caches.c]\n[websocket]\nmax_message_bytes = 1000\n", &[]);
    let mut client = WsClient::connect(&node).await;
    let fits = json!({"op":"put","cache":"c","key":"k","value":"x".repeat(900)});
    assert_eq!(client.request(fits).await["type"], "ok");
    client
        .send(json!({"op":"put","cache":"c","key":"k","value":"x".repeat(2000)}))
        .await;
    assert_eq!(client.close_code().await, Some(1009));
}

#[actix_web::test]
async fn the_default_limit_lets_a_max_size_value_through() {
    let node = node();
    let mut client = WsClient::connect(&node).await;
    // 1 MiB of value in one put: the default message limit is the value limit plus 64 KiB.
    let value = "x".repeat(1024 * 1024 - 2);
    let reply = client
        .request(json!({"op":"put","cache":"c","key":"big","value":value}))
        .await;
    assert_eq!(reply["type"], "ok", "{}", reply["message"]);
}

#[actix_web::test]
async fn only_unknown_subprotocols_are_refused_with_400() {
    let node = node();
    match WsClient::connect_with(&node, &["chat.v2"], None).await {
        Err(WsClientError::InvalidResponseStatus(status)) => assert_eq!(status, StatusCode::BAD_REQUEST),
        other => panic!("expected 400, got {:?}", other.map(|c| c.protocol)),
    }
    let client = WsClient::connect_with(&node, &["chat.v2", MSGPACK], None)
        .await
        .unwrap();
    assert_eq!(client.protocol.as_deref(), Some(MSGPACK));
}

#[actix_web::test]
async fn foreign_origins_are_refused_with_403() {
    let node = node();
    match WsClient::connect_with(&node, &[], Some("https://evil.example")).await {
        Err(WsClientError::InvalidResponseStatus(status)) => assert_eq!(status, StatusCode::FORBIDDEN),
        other => panic!("expected 403, got {:?}", other.map(|c| c.protocol)),
    }
    assert!(WsClient::connect_with(&node, &[], Some("http://localhost:3000"))
        .await
        .is_ok());
    assert!(WsClient::connect_with(&node, &[], Some("http://127.0.0.1:9"))
        .await
        .is_ok());
    let configured = TestNode::start_with(
        "[websocket]\nallowed_origins = [\"https://app.example.com\"]\n",
        &[],
    );
    assert!(
        WsClient::connect_with(&configured, &[], Some("https://app.example.com"))
            .await
            .is_ok()
    );
    assert!(
        WsClient::connect_with(&configured, &[], Some("https://evil.example"))
            .await
            .is_err()
    );
}

#[actix_web::test]
async fn the_server_pings_and_closes_silent_connections() {
    let node = TestNode::start_with(
        "[caches.c]\n[websocket]\nheartbeat_interval_ms = 100\nclient_timeout_ms = 400\n",
        &[],
    );
    // A client that answers pings stays connected past the timeout.
    let mut lively = WsClient::connect(&node).await;
    lively.assert_quiet(Duration::from_millis(300)).await;
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..6 {
        lively.assert_quiet(Duration::from_millis(100)).await;
    }
    assert_eq!(lively.request(json!({"op":"ping"})).await["type"], "pong");

    // One that never answers (its frames are not read, so no pong) is closed.
    let mut silent = WsClient::connect(&node).await;
    actix_web::rt::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(silent.close_code().await, Some(1000));
}

#[actix_web::test]
async fn pipelined_writes_to_one_key_apply_in_the_order_sent() {
    let node = node();
    let mut client = WsClient::connect(&node).await;
    const WRITES: u64 = 3000;
    for i in 0..WRITES {
        client
            .send(json!({"op":"put","cache":"c","key":"k","value":i,"id":i}))
            .await;
    }
    let mut versions = Vec::new();
    for _ in 0..WRITES {
        let reply = client.next().await;
        versions.push((reply["id"].as_u64().unwrap(), reply["version"].as_u64().unwrap()));
    }
    versions.sort();
    assert!(
        versions.windows(2).all(|w| w[0].1 < w[1].1),
        "a later write got an earlier version"
    );
    let read = client.request(json!({"op":"get","cache":"c","key":"k"})).await;
    assert_eq!(read["value"], WRITES - 1, "the last write sent is the one stored");
}

#[actix_web::test]
async fn huge_numbers_are_bad_requests_and_change_nothing() {
    let node = node();
    let mut client = WsClient::connect(&node).await;
    let frame = r#"{"op":"put","id":1,"cache":"c","key":"k","value":1e99999}"#;
    client.send_raw(ws::Message::Text(frame.into())).await;
    assert_eq!(client.next().await["code"], "bad_request");
    let big = r#"{"op":"put","id":2,"cache":"c","key":"k","value":123456789012345678901234567890}"#;
    client.send_raw(ws::Message::Text(big.into())).await;
    let reply = client.next().await;
    assert_eq!(
        reply["type"], "ok",
        "a big integer that fits a double is a number: {reply}"
    );
    let read = client.request(json!({"op":"get","cache":"c","key":"k"})).await;
    assert_eq!(read["value"].as_f64(), Some(1.2345678901234568e29));
}

#[actix_web::test]
async fn a_reused_id_is_echoed_on_each_reply() {
    let node = node();
    let mut client = WsClient::connect(&node).await;
    client
        .send(json!({"op":"put","id":"same","cache":"c","key":"a","value":1}))
        .await;
    client
        .send(json!({"op":"put","id":"same","cache":"c","key":"b","value":2}))
        .await;
    let (first, second) = (client.next().await, client.next().await);
    assert_eq!(
        (first["id"].as_str(), second["id"].as_str()),
        (Some("same"), Some("same"))
    );
    assert_eq!(
        (first["type"].as_str(), second["type"].as_str()),
        (Some("ok"), Some("ok"))
    );
}

/// After the close handshake the server closes the TCP connection itself
/// (RFC 6455 §7.1.1: the server closes first), at once, rather than
/// waiting for the client to: a client that waits for the server, as the
/// RFC tells it to, is not held a second.
#[actix_web::test]
async fn the_server_closes_the_tcp_connection_right_after_the_close_handshake() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = node();
    for initiator in ["client", "server"] {
        let mut tcp = tokio::net::TcpStream::connect(node.addr()).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            node.addr()
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8];
            tcp.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        if initiator == "client" {
            // A masked close frame, code 1000, mask of zeros.
            tcp.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8])
                .await
                .unwrap();
        } else {
            // A text frame the server refuses with a close: invalid UTF-8 (1007).
            tcp.write_all(&[0x81, 0x81, 0, 0, 0, 0, 0xFF]).await.unwrap();
        }
        // Read the close frame, then wait for the end of the stream while
        // sending nothing more.
        let started = std::time::Instant::now();
        let mut received = Vec::new();
        let mut buf = [0u8; 256];
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "{initiator}: the server never closed the connection"
        );
        assert_eq!(
            received.first(),
            Some(&0x88),
            "{initiator}: a close frame came first"
        );
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_millis(500),
            "{initiator}: the server held the closed connection for {waited:?}"
        );
    }
}

#[actix_web::test]
async fn a_write_sent_again_with_its_op_id_is_answered_as_before_and_pushed_once() {
    let node = node();
    let mut watcher = WsClient::connect(&node).await;
    let (sub, _, _) = watcher.subscribe("c", json!({})).await;
    let mut client = WsClient::connect(&node).await;
    let put = json!({"op":"put","cache":"c","key":"k","value":1,"op_id":"w-1"});
    let first = client.request(put.clone()).await;
    assert_eq!(first["type"], "ok", "{first}");
    // The client did not see that reply (say) and sends the write again,
    // even with another value: it is answered as the first time.
    let mut again = put.clone();
    again["value"] = json!(2);
    let second = client.request(again).await;
    assert_eq!(
        (second["version"].clone(), second["created"].clone()),
        (first["version"].clone(), json!(true))
    );
    let read = client.request(json!({"op":"get","cache":"c","key":"k"})).await;
    assert_eq!(read["value"], 1);
    let remove = json!({"op":"remove","cache":"c","key":"k","op_id":"r-1"});
    let removed = client.request(remove.clone()).await;
    assert_eq!(
        client.request(remove).await["version"],
        removed["version"],
        "not not_found"
    );
    let reused = client
        .request(json!({"op":"put","cache":"c","key":"k","value":3,"op_id":"r-1"}))
        .await;
    assert_eq!(reused["code"], "conflict", "{reused}");
    let bad = client
        .request(json!({"op":"put","cache":"c","key":"k","value":3,"op_id":"has space"}))
        .await;
    assert_eq!(bad["code"], "bad_request", "{bad}");

    // One write and one removal, each pushed once.
    let created = watcher.next_event().await;
    assert_eq!(
        (created["kind"].clone(), created["version"].clone()),
        (json!("created"), first["version"].clone())
    );
    let gone = watcher.next_event().await;
    assert_eq!(gone["kind"], "removed");
    let marker = client
        .request(json!({"op":"put","cache":"c","key":"marker","value":0}))
        .await;
    let next = watcher.next().await;
    assert_eq!(next["sub"], sub.as_str());
    assert_eq!(next["event"]["key"], "marker", "nothing between: {next}");
    assert_eq!(next["event"]["version"], marker["version"]);
}
