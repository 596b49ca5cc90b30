//! Every error in the contract's shape: routing errors (404, 405) carry the
//! JSON error body, a WebSocket error echoes the request's `id` whenever it
//! can be read, and keys and prefixes follow one rule on every path (UTF-8
//! once percent-decoded, no NUL).

mod common;

use awc::http::StatusCode;
use awc::ws;
use common::sse::SseClient;
use common::ws::WsClient;
use common::{send, Rest, TestNode};
use serde_json::json;

fn node() -> TestNode {
    TestNode::start_with("[caches.c]\n", &[])
}

#[actix_web::test]
async fn a_method_a_route_does_not_take_is_405_with_allow_and_an_error_body() {
    let node = node();
    let rest = Rest::new(&node);
    for (path, allow) in [
        ("/api/v1/caches/c/entries/a", "GET, PUT, DELETE"),
        ("/api/v1/caches/c", "GET, PUT, DELETE"),
        ("/healthz", "GET"),
        ("/api/v1/caches/c/events", "GET"),
    ] {
        let reply = send(rest.http.post(node.url(path)), "1").await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(reply.headers.get("allow").unwrap(), allow, "{path}");
        assert_eq!(reply.error_code(), "bad_request", "{path}: {}", reply.text);
        assert!(reply.body["error"]["message"].as_str().unwrap().contains("POST"));
    }
    let unknown = rest.get("/api/v2/nothing").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.error_code(), "not_found");
}

#[actix_web::test]
async fn keys_and_prefixes_follow_one_rule_on_every_path() {
    let node = node();
    let rest = Rest::new(&node);
    for path in [
        "/api/v1/caches/c/entries/a%00b",
        "/api/v1/caches/c/entries/a%FFb",
        "/api/v1/caches/c/entries?prefix=%FF",
        "/api/v1/caches/c/entries?prefix=a%00",
        "/api/v1/caches/c/poll?prefix=%FF",
        "/api/v1/caches/c/poll?key=a%00",
        "/api/v1/caches/c/events?prefix=%FF",
        "/api/v1/caches/c/events?key=a%00",
    ] {
        let reply = rest.get(path).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}: {}", reply.text);
        assert_eq!(reply.error_code(), "bad_request", "{path}");
    }
    let put = rest.put_entry("c", "a%00b", "1").await;
    assert_eq!(put.status, StatusCode::BAD_REQUEST, "{}", put.text);
    let long = rest.put_entry("c", &"k".repeat(2000), "1").await;
    assert_eq!(long.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        long.error_code(),
        "bad_request",
        "an over-long key gets the error body"
    );
    assert!(
        SseClient::try_open(&node, "/api/v1/caches/c/events?prefix=ok", None)
            .await
            .is_ok()
    );

    let mut client = WsClient::connect(&node).await;
    for op in [
        json!({"op":"put","cache":"c","key":"a\u{0}b","value":1}),
        json!({"op":"get","cache":"c","key":"a\u{0}b"}),
        json!({"op":"subscribe","cache":"c","filter":{"prefix":"a\u{0}"}}),
    ] {
        let reply = client.request(op.clone()).await;
        assert_eq!(reply["code"], "bad_request", "{op}: {reply}");
    }
}

#[actix_web::test]
async fn a_websocket_frame_nested_too_deep_gets_its_id_back() {
    let node = node();
    let mut client = WsClient::connect(&node).await;
    let deep = format!(
        r#"{{"op":"put","id":"d1","cache":"c","key":"k","value":{}1{}}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    client.send_raw(ws::Message::Text(deep.into())).await;
    let reply = client.next().await;
    assert_eq!(
        (&reply["type"], &reply["code"], &reply["id"]),
        (&json!("error"), &json!("bad_request"), &json!("d1")),
        "{reply}"
    );
}
