//! A cache's life: created, described with its entry and byte counts,
//! deleted (its subscribers told over every transport, its partitions
//! stopped), created again; the node-wide quotas on caches and segments;
//! and the cluster view, which names owners by ranges and pages by cache.

mod common;

use std::time::Duration;

use common::sse::{JsonData, SseClient};
use common::ws::WsClient;
use common::{send, Rest, TestNode};
use serde_json::json;

async fn delete_cache(rest: &Rest<'_>, cache: &str) -> common::Reply {
    send(
        rest.http
            .delete(rest.node.url(&format!("/api/v1/caches/{cache}"))),
        "",
    )
    .await
}

#[actix_web::test]
async fn a_deleted_cache_is_gone_its_subscribers_are_told_and_its_partitions_stop() {
    let node = TestNode::start_with("[caches.c]\nsegments = 8\n[caches.other]\nsegments = 2\n", &[]);
    let rest = Rest::new(&node);
    assert_eq!(rest.metric("pushgrid_partitions").await, Some(10.0));
    rest.put_entry("c", "a", "1").await;

    let mut ws = WsClient::connect(&node).await;
    let (sub, entries, _) = ws.subscribe("c", json!({})).await;
    assert_eq!(entries.len(), 1);
    let mut sse = SseClient::open(&node, "/api/v1/caches/c/events", None).await;
    let (entries, _, _) = sse.snapshot().await;
    assert_eq!(entries.len(), 1);
    // A poll held for keys nobody writes: the deletion must end it.
    let poll = {
        let first = rest.get("/api/v1/caches/c/poll?prefix=x/").await;
        let token = first.body["position"].as_str().unwrap().to_string();
        let http = rest.http.clone();
        let url = node.url(&format!(
            "/api/v1/caches/c/poll?prefix=x/&after={token}&timeout_ms=20000"
        ));
        actix_web::rt::spawn(async move { send(http.get(url), "").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    rest.put_entry("c", "b", "2").await;

    let reply = delete_cache(&rest, "c").await;
    assert_eq!(reply.status, 204, "{}", reply.text);

    // The write made before the deletion arrives first, then the notice.
    let event = tokio::time::timeout(Duration::from_secs(10), ws.next_event())
        .await
        .unwrap();
    assert_eq!(event["key"], "b");
    let notice = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap();
    assert_eq!(notice, json!({"type": "cache_deleted", "sub": sub, "cache": "c"}));
    let (event, _) = sse.event().await;
    assert_eq!(event["key"], "b");
    let ended = sse.drain_until_end().await;
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0].event, "cache_deleted");
    assert_eq!(ended[0].json(), json!({"cache": "c"}));
    let poll = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("a held poll ends when its cache is deleted")
        .unwrap();
    assert_eq!((poll.status.as_u16(), poll.error_code()), (404, "unknown_cache"));

    // Gone everywhere, and its memory with it.
    assert_eq!(rest.get("/api/v1/caches/c").await.error_code(), "unknown_cache");
    assert_eq!(rest.get_entry("c", "a").await.error_code(), "unknown_cache");
    let listed = rest.get("/api/v1/caches").await;
    assert_eq!(listed.body["caches"].as_array().unwrap().len(), 1);
    assert_eq!(rest.metric("pushgrid_partitions").await, Some(2.0));
    assert_eq!(rest.metric("pushgrid_cache_entries{cache=\"c\"}").await, None);
    assert_eq!(delete_cache(&rest, "c").await.error_code(), "unknown_cache");
    // The connection lives on and may subscribe elsewhere.
    let reply = ws
        .request(json!({"op": "subscribe", "cache": "c", "filter": {}}))
        .await;
    assert_eq!(reply["code"], "unknown_cache");

    // Created again, it starts empty, in a new incarnation.
    assert_eq!(rest.create_cache("c", "{\"segments\":8}").await.status, 201);
    let (_, entries, _) = ws.subscribe("c", json!({})).await;
    assert!(entries.is_empty());
    assert_eq!(rest.get_entry("c", "a").await.status, 404);
}

#[actix_web::test]
async fn a_cache_is_described_with_its_entries_and_bytes() {
    let node = TestNode::start_with("[caches.c]\nsegments = 4\n", &[]);
    let rest = Rest::new(&node);
    rest.put_entry("c", "k", "\"abc\"").await;
    rest.put_entry("c", "key2", "[1, 2]").await;
    // 1 + 5 bytes, and 4 + 5 (values are counted as stored: compact).
    let reply = rest.get("/api/v1/caches/c").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["name"], "c");
    assert_eq!(reply.body["entries"], 2);
    assert_eq!(reply.body["bytes"], 15);
    assert_eq!(reply.body["config"]["segments"], 4);
    assert!(reply.body["incarnation"].is_string(), "{}", reply.text);
    assert_eq!(rest.metric("pushgrid_cache_bytes{cache=\"c\"}").await, Some(15.0));
    rest.delete_entry("c", "k").await;
    assert_eq!(rest.metric("pushgrid_cache_bytes{cache=\"c\"}").await, Some(9.0));
    let listed = rest.get("/api/v1/caches").await;
    assert_eq!(listed.body["caches"][0]["bytes"], 9);
}

#[actix_web::test]
async fn caches_and_segments_are_bounded_per_node() {
    let node = TestNode::start_with(
        "demo = false\n[limits]\nmax_caches = 3\nmax_segments = 100\n",
        &[],
    );
    let rest = Rest::new(&node);
    assert_eq!(rest.create_cache("a", "{\"segments\":64}").await.status, 201);
    let reply = rest.create_cache("b", "{\"segments\":64}").await;
    assert_eq!((reply.status.as_u16(), reply.error_code()), (429, "rate_limited"));
    assert!(reply.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("segments"));
    assert_eq!(rest.create_cache("b", "{\"segments\":36}").await.status, 201);
    let reply = rest.create_cache("c", "{\"segments\":1}").await;
    assert_eq!(reply.status, 429, "over 100 segments");
    // Recreating an existing cache is not a new one.
    assert_eq!(rest.create_cache("a", "{\"segments\":64}").await.status, 200);
    assert_eq!(delete_cache(&rest, "b").await.status, 204);
    assert_eq!(rest.create_cache("c", "{\"segments\":1}").await.status, 201);
    assert_eq!(rest.create_cache("d", "{\"segments\":1}").await.status, 201);
    let reply = rest.create_cache("e", "{\"segments\":1}").await;
    assert_eq!((reply.status.as_u16(), reply.error_code()), (429, "rate_limited"));
    assert!(reply.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("caches"));
}

#[actix_web::test]
async fn the_cluster_view_names_owners_by_ranges_and_pages_by_cache() {
    let node = TestNode::start_with(
        "node_id = \"n1\"\n[caches.a]\nsegments = 4\n[caches.b]\n[caches.c]\nsegments = 4096\n",
        &[],
    );
    let rest = Rest::new(&node);
    let page = rest.get("/api/v1/cluster?limit=2").await;
    assert_eq!(page.status, 200, "{}", page.text);
    let caches = page.body["caches"].as_object().unwrap();
    assert_eq!(caches.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(
        page.body["caches"]["a"],
        json!({
            "segments": 4,
            "owners": [{"first": 0, "last": 3, "owners": ["n1"]}],
            "lost": [],
            "declared_lost": []
        })
    );
    assert_eq!(page.body["next"], "b");
    let rest_page = rest.get("/api/v1/cluster?limit=2&after=b").await;
    let caches = rest_page.body["caches"].as_object().unwrap();
    assert_eq!(caches.keys().collect::<Vec<_>>(), ["c"]);
    assert_eq!(rest_page.body["next"], json!(null));
    assert!(
        rest_page.text.len() < 1024,
        "4,096 segments with one owner are one range: {} bytes",
        rest_page.text.len()
    );
    assert_eq!(
        rest.get("/api/v1/cluster?limit=0").await.error_code(),
        "bad_request"
    );
}
