//! The REST rows of the contract against a real node: every route, status
//! code, header and error code, plus the grid's behaviour seen through it
//! (compare-and-set races, expiry, eviction, paging, concurrent writers).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use awc::http::StatusCode;
use common::{send, Rest, TestNode};
use futures_util::future::join_all;
use pushgrid::grid::hash::segment_of;
use serde_json::{json, Value};

#[actix_web::test]
async fn healthz_answers_when_serving() {
    let node = TestNode::start();
    let reply = Rest::new(&node).get("/healthz").await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[actix_web::test]
async fn creating_a_cache_is_201_then_200_then_409_for_another_config() {
    let node = TestNode::start();
    let rest = Rest::new(&node);
    let created = rest.create_cache("scores", "{}").await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.body["config"]["segments"], 256);
    let again = rest.create_cache("scores", r#"{"segments":256}"#).await;
    assert_eq!(again.status, StatusCode::OK, "same config, spelled out");
    let other = rest.create_cache("scores", r#"{"segments":16}"#).await;
    assert_eq!(other.status, StatusCode::CONFLICT);
    assert_eq!(other.error_code(), "conflict");
    assert_eq!(
        other.headers.get("content-type").unwrap(),
        "application/json",
        "error bodies are JSON"
    );
}

#[actix_web::test]
async fn bad_cache_configs_and_names_are_bad_requests() {
    let node = TestNode::start();
    let rest = Rest::new(&node);
    for (name, body) in [
        ("c", r#"{"segmnets":4}"#),
        ("c", r#"{"segments":0}"#),
        ("c", r#"{"segments":"many"}"#),
        ("c", "{not json"),
        ("bad%20name", "{}"),
    ] {
        let reply = rest.create_cache(name, body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{name} {body}");
        assert_eq!(reply.error_code(), "bad_request");
    }
}

#[actix_web::test]
async fn caches_are_listed_with_their_entries_and_config() {
    let node = TestNode::start_with("[caches.preset]\nsegments = 8\n", &[]);
    let rest = Rest::new(&node);
    rest.create_cache("made", r#"{"max_entries":5}"#).await;
    rest.put_entry("preset", "a", "1").await;
    rest.put_entry("preset", "b", "2").await;
    let list = rest.get("/api/v1/caches").await;
    assert_eq!(list.status, StatusCode::OK);
    let caches = list.body["caches"].as_array().unwrap();
    let by_name: HashMap<_, _> = caches.iter().map(|c| (c["name"].as_str().unwrap(), c)).collect();
    assert_eq!(by_name["preset"]["entries"], 2);
    assert_eq!(by_name["preset"]["config"]["segments"], 8);
    assert_eq!(by_name["made"]["entries"], 0);
    assert_eq!(by_name["made"]["config"]["max_entries"], 5);
}

#[actix_web::test]
async fn put_get_delete_round_trip_with_etags() {
    let node = TestNode::start_with("[caches.scores]\n", &[]);
    let rest = Rest::new(&node);
    let created = rest
        .put_entry("scores", "match/7", r#"{"home":2,"away":1}"#)
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.body, json!({"version": 1, "created": true}));
    assert_eq!(created.etag().as_deref(), Some("\"1\""));

    let read = rest.get_entry("scores", "match/7").await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body, json!({"home":2,"away":1}));
    assert_eq!(read.etag().as_deref(), Some("\"1\""));
    assert_eq!(read.headers.get("content-type").unwrap(), "application/json");

    let modified = rest
        .put_entry("scores", "match/7", r#"{"home":3,"away":1}"#)
        .await;
    assert_eq!(modified.status, StatusCode::OK);
    assert_eq!(modified.body["created"], false);
    let version = modified.body["version"].as_u64().unwrap();
    assert!(version > 1);
    assert_eq!(modified.etag(), Some(format!("\"{version}\"")));

    let deleted = rest.delete_entry("scores", "match/7").await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        rest.get_entry("scores", "match/7").await.status,
        StatusCode::NOT_FOUND
    );
    let again = rest.delete_entry("scores", "match/7").await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.error_code(), "not_found");
}

#[actix_web::test]
async fn every_json_value_kind_is_stored_as_sent() {
    let node = TestNode::start_with("[caches.c]\n", &[]);
    let rest = Rest::new(&node);
    for (i, value) in [
        "null",
        "true",
        "-12.5e3",
        "\"text\"",
        "[1,[2,{}]]",
        r#"{"a":{"b":[null]}}"#,
    ]
    .iter()
    .enumerate()
    {
        let key = format!("k{i}");
        assert_eq!(rest.put_entry("c", &key, value).await.status, StatusCode::CREATED);
        let read = rest.get_entry("c", &key).await;
        assert_eq!(
            read.body,
            serde_json::from_str::<Value>(value).unwrap(),
            "{value}"
        );
    }
}

#[actix_web::test]
async fn keys_may_hold_slashes_literal_or_encoded() {
    let node = TestNode::start_with("[caches.c]\n", &[]);
    let rest = Rest::new(&node);
    rest.put_entry("c", "league/match/7", "1").await;
    assert_eq!(rest.get_entry("c", "league%2Fmatch%2F7").await.body, json!(1));
    rest.put_entry("c", "a%20b%3Fc%25", "2").await;
    let listed = rest.get("/api/v1/caches/c/entries?prefix=a").await;
    assert_eq!(listed.body["entries"][0]["key"], "a b?c%");
    assert_eq!(rest.get_entry("c", "a%20b%3Fc%25").await.body, json!(2));
}

#[actix_web::test]
async fn if_match_is_compare_and_set() {
    let node = TestNode::start_with("[caches.c]\n", &[]);
    let rest = Rest::new(&node);
    let absent = rest.put_entry_if("c", "k", "1", ("If-Match", "\"1\"")).await;
    assert_eq!(absent.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(absent.error_code(), "version_mismatch");
    assert!(
        absent.body["error"].get("current_version").is_none(),
        "no entry, no version"
    );
    assert_eq!(
        rest.put_entry_if("c", "k", "1", ("If-Match", "*")).await.status,
        StatusCode::PRECONDITION_FAILED
    );

    let v1 = rest.put_entry("c", "k", "1").await.body["version"]
        .as_u64()
        .unwrap();
    let stale = rest.put_entry_if("c", "k", "2", ("If-Match", "\"999\"")).await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(stale.body["error"]["current_version"], v1);
    let ok = rest
        .put_entry_if("c", "k", "2", ("If-Match", &format!("\"{v1}\"")))
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(
        rest.put_entry_if("c", "k", "3", ("If-Match", "*")).await.status,
        StatusCode::OK
    );
    assert_eq!(rest.get_entry("c", "k").await.body, json!(3));

    let bad = rest.put_entry_if("c", "k", "4", ("If-Match", "yesterday")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[actix_web::test]
async fn if_none_match_star_creates_only() {
    let node = TestNode::start_with("[caches.c]\n", &[]);
    let rest = Rest::new(&node);
    let first = rest.put_entry_if("c", "k", "1", ("If-None-Match", "*")).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let second = rest.put_entry_if("c", "k", "2", ("If-None-Match", "*")).await;
    assert_eq!(second.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(second.error_code(), "version_mismatch");
    assert_eq!(second.body["error"]["current_version"], 1);
    assert_eq!(
        rest.get_entry("c", "k").await.body,
        json!(1),
        "the failed write changed nothing"
    );
}

#[actix_web::test]
async fn delete_honours_if_match() {
    let node = TestNode::start_with("[caches.c]\n", &[]);
    let rest = Rest::new(&node);
    let v = rest.put_entry("c", "k", "1").await.body["version"]
        .as_u64()
        .unwrap();
    let url = rest.entry_url("c", "k");
    let stale = send(rest.http.delete(&url).insert_header(("If-Match", "\"77\"")), "").await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(stale.body["error"]["current_version"], v);
    let ok = send(
        rest.http
            .delete(&url)
            .insert_header(("If-Match", format!("\"{v}\""))),
        "",
    )
    .await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT);
    let gone = send(
        rest.http
            .delete(&url)
            .insert_header(("If-Match", format!("\"{v}\""))),
        "",
    )
    .await;
    assert_eq!(
        gone.status,
        StatusCode::PRECONDITION_FAILED,
        "a precondition on a missing entry fails"
    );
}

#[actix_web::test]
async fn unknown_caches_bad_bodies_and_big_values_get_their_codes() {
    let node = TestNode::start_with("[caches.small]\nmax_value_bytes = 100\n", &[]);
    let rest = Rest::new(&node);

    for reply in [
        rest.get_entry("nope", "k").await,
        rest.put_entry("nope", "k", "1").await,
        rest.delete_entry("nope", "k").await,
        rest.get("/api/v1/caches/nope/entries").await,
    ] {
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.error_code(), "unknown_cache");
    }

    // Valid JSON syntax that no reader can hold (found by fuzzing).
    for body in [
        "{\"a\":",
        "not json",
        "",
        "[1,]",
        "1e99999",
        "[9900000000700000e000702222222022]",
    ] {
        let reply = rest.put_entry("small", "k", body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body:?}");
        assert_eq!(reply.error_code(), "bad_request");
    }

    let big = format!("\"{}\"", "x".repeat(200));
    let reply = rest.put_entry("small", "k", &big).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.error_code(), "too_large");

    let long_key = "k".repeat(1025);
    assert_eq!(
        rest.put_entry("small", &long_key, "1").await.error_code(),
        "bad_request"
    );
    assert_eq!(
        rest.put_entry("small", &"k".repeat(1024), "1").await.status,
        StatusCode::CREATED
    );
    assert_eq!(rest.get_entry("small", "missing").await.error_code(), "not_found");
    assert_eq!(
        rest.get("/api/v1/caches/small/entries?limit=zero")
            .await
            .error_code(),
        "bad_request"
    );
    assert_eq!(
        rest.get("/api/v1/caches/small/entries?limit=0")
            .await
            .error_code(),
        "bad_request"
    );
    let lifespan = send(
        rest.http.put(rest.entry_url("small", "t") + "?lifespan_ms=soon"),
        "1",
    )
    .await;
    assert_eq!(lifespan.error_code(), "bad_request");
    assert_eq!(
        rest.get_entry("small", "k").await.status,
        StatusCode::NOT_FOUND,
        "nothing bad was stored"
    );
}

#[actix_web::test]
async fn listing_pages_through_a_prefix_in_key_order() {
    let node = TestNode::start_with("[caches.c]\nsegments = 16\n", &[]);
    let rest = Rest::new(&node);
    let mut keys: Vec<String> = (0..25).map(|i| format!("p/{i:02}")).collect();
    for key in keys.iter().chain(["q/1".to_string(), "o".to_string()].iter()) {
        rest.put_entry("c", key, &format!("\"{key}\"")).await;
    }
    keys.sort();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = "/api/v1/caches/c/entries?prefix=p%2F&limit=10".to_string();
        if let Some(after) = &after {
            path += &format!("&after={}", after.replace('/', "%2F"));
        }
        let page = rest.get(&path).await;
        assert_eq!(page.status, StatusCode::OK);
        pages += 1;
        for entry in page.body["entries"].as_array().unwrap() {
            assert_eq!(entry["value"], entry["key"]);
            assert!(entry["version"].as_u64().unwrap() >= 1);
            seen.push(entry["key"].as_str().unwrap().to_string());
        }
        match page.body["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, keys);
    let all = rest.get("/api/v1/caches/c/entries").await;
    assert_eq!(all.body["entries"].as_array().unwrap().len(), 27);
    assert_eq!(all.body["next"], Value::Null);
}

#[actix_web::test]
async fn entries_expire_after_their_lifespan_and_are_never_read_after() {
    let node = TestNode::start_with("[caches.c]\n[caches.short]\nlifespan_ms = 200\n", &[]);
    let rest = Rest::new(&node);
    let put = send(rest.http.put(rest.entry_url("c", "t") + "?lifespan_ms=300"), "1").await;
    assert_eq!(put.status, StatusCode::CREATED);
    rest.put_entry("short", "d", "2").await;
    rest.put_entry("c", "forever", "3").await;
    assert_eq!(rest.get_entry("c", "t").await.status, StatusCode::OK);
    actix_web::rt::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(rest.get_entry("c", "t").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        rest.get_entry("short", "d").await.status,
        StatusCode::NOT_FOUND,
        "the cache's default lifespan"
    );
    assert_eq!(rest.get_entry("c", "forever").await.status, StatusCode::OK);
    let listed = rest.get("/api/v1/caches/c/entries").await;
    assert_eq!(listed.body["entries"].as_array().unwrap().len(), 1);
    // The reaper expired both with an event, without any read forcing it.
    assert_eq!(
        rest.metric("pushgrid_events_emitted_total{kind=\"expired\"}")
            .await,
        Some(2.0)
    );
    assert_eq!(
        rest.metric("pushgrid_cache_entries{cache=\"c\"}").await,
        Some(1.0)
    );
}

#[actix_web::test]
async fn max_entries_evicts_the_least_recently_written() {
    let node = TestNode::start_with("[caches.c]\nsegments = 4\nmax_entries = 10\n", &[]);
    let rest = Rest::new(&node);
    for i in 0..30 {
        assert_eq!(
            rest.put_entry("c", &format!("k{i}"), "0").await.status,
            StatusCode::CREATED
        );
    }
    // Forwarded evictions are asynchronous; they settle within moments.
    let mut entries = 0.0;
    for _ in 0..50 {
        entries = rest.metric("pushgrid_cache_entries{cache=\"c\"}").await.unwrap();
        if entries == 10.0 {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(entries, 10.0);
    assert_eq!(
        rest.metric("pushgrid_evictions_total{cache=\"c\"}").await,
        Some(20.0)
    );
    assert_eq!(
        rest.get_entry("c", "k29").await.status,
        StatusCode::OK,
        "the newest write stays"
    );
    let listed = rest.get("/api/v1/caches/c/entries").await;
    assert_eq!(listed.body["entries"].as_array().unwrap().len(), 10);
    // Eviction is not a write: no event for it.
    assert_eq!(
        rest.metric("pushgrid_events_emitted_total{kind=\"removed\"}")
            .await,
        Some(0.0)
    );
}

#[actix_web::test]
async fn racing_if_match_writers_each_version_has_exactly_one_winner() {
    let node = TestNode::start_with("[caches.c]\n", &[]);
    let rest = Rest::new(&node);
    rest.put_entry("c", "counter", "0").await;
    const WRITERS: usize = 8;
    const ROUNDS: usize = 25;
    let writer = |_| async {
        let mut wins = Vec::new();
        for _ in 0..ROUNDS {
            let read = rest.get_entry("c", "counter").await;
            let etag = read.etag().unwrap();
            let next = read.body.as_u64().unwrap() + 1;
            let reply = rest
                .put_entry_if("c", "counter", &next.to_string(), ("If-Match", &etag))
                .await;
            match reply.status {
                StatusCode::OK => wins.push(etag),
                StatusCode::PRECONDITION_FAILED => {
                    assert_eq!(reply.error_code(), "version_mismatch")
                }
                other => panic!("unexpected {other}"),
            }
        }
        wins
    };
    let wins: Vec<String> = join_all((0..WRITERS).map(writer))
        .await
        .into_iter()
        .flatten()
        .collect();
    let mut distinct = wins.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), wins.len(), "two writers won on the same version");
    let final_value = rest.get_entry("c", "counter").await.body.as_u64().unwrap();
    assert_eq!(
        final_value as usize,
        wins.len(),
        "every win is counted once, no update lost"
    );
    assert!(wins.len() >= ROUNDS, "at least one writer wins each round");
}

#[actix_web::test]
async fn concurrent_writers_on_many_keys_lose_nothing_and_versions_follow_segments() {
    let node = TestNode::start_with("[caches.c]\nsegments = 8\n", &[]);
    let rest = Rest::new(&node);
    const WRITERS: usize = 16;
    const WRITES: usize = 40;
    let writer = |w: usize| {
        let rest = &rest;
        async move {
            let mut acks = Vec::new();
            for i in 0..WRITES {
                let key = format!("w{w}/k{}", i % 5);
                let reply = rest.put_entry("c", &key, &i.to_string()).await;
                assert!(reply.status.is_success(), "{:?}", reply.body);
                acks.push((key, i, reply.body["version"].as_u64().unwrap()));
            }
            acks
        }
    };
    let acks: Vec<_> = join_all((0..WRITERS).map(writer))
        .await
        .into_iter()
        .flatten()
        .collect();

    let mut per_segment: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    let mut last_per_key: HashMap<String, (usize, u64)> = HashMap::new();
    for (key, i, version) in &acks {
        per_segment
            .entry(segment_of(key, 8).0)
            .or_default()
            .push(*version);
        let last = last_per_key.entry(key.clone()).or_insert((*i, *version));
        assert!(*version >= last.1, "versions only grow per key");
        *last = (*i, *version);
    }
    for (segment, mut versions) in per_segment {
        versions.sort();
        let expected: Vec<u64> = (1..=versions.len() as u64).collect();
        assert_eq!(
            versions, expected,
            "segment {segment}: every write took the next number, once"
        );
    }
    for (key, (i, version)) in last_per_key {
        let read = rest.get_entry("c", &key).await;
        assert_eq!(
            read.body,
            json!(i),
            "{key}: the last acknowledged write is what is stored"
        );
        assert_eq!(read.etag(), Some(format!("\"{version}\"")));
    }
}

#[actix_web::test]
async fn the_cluster_view_shows_the_node_owning_every_segment() {
    let node = TestNode::start_with("node_id = \"n1\"\n[caches.c]\nsegments = 4\n", &[]);
    let reply = Rest::new(&node).get("/api/v1/cluster").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["node"]["id"], "n1");
    assert_eq!(reply.body["members"].as_array().unwrap().len(), 1);
    assert_eq!(reply.body["rebalance"], "stable");
    assert_eq!(reply.body["caches"]["c"]["segments"], 4);
    assert_eq!(
        reply.body["caches"]["c"]["owners"],
        json!([{"first": 0, "last": 3, "owners": ["n1"]}])
    );
}

#[actix_web::test]
async fn metrics_are_prometheus_text() {
    let node = TestNode::start_with("[caches.c]\n", &[]);
    let rest = Rest::new(&node);
    rest.put_entry("c", "k", "1").await;
    rest.get_entry("c", "k").await;
    rest.get_entry("c", "missing").await;
    let reply = rest.get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply
        .headers
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(
        rest.metric("pushgrid_operations_total{op=\"put\",outcome=\"ok\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(
        rest.metric("pushgrid_operations_total{op=\"get\",outcome=\"not_found\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(
        rest.metric("pushgrid_events_emitted_total{kind=\"created\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(
        rest.metric("pushgrid_cache_entries{cache=\"c\"}").await,
        Some(1.0)
    );
    assert!(reply
        .text
        .contains("pushgrid_http_request_duration_seconds_bucket{method=\"PUT\""));
}

#[actix_web::test]
async fn entries_may_be_written_by_scripts_of_origins_that_may_push() {
    let node = TestNode::start();
    let rest = Rest::new(&node);
    rest.create_cache("c", "{}").await;
    let url = node.url("/api/v1/caches/c/entries/k");
    let preflight = |origin: &'static str| {
        let request = rest
            .http
            .request(awc::http::Method::OPTIONS, &url)
            .insert_header(("Origin", origin))
            .insert_header(("Access-Control-Request-Method", "PUT"))
            .insert_header(("Access-Control-Request-Headers", "authorization, if-match"));
        send(request, "")
    };
    // `localhost` is on the default allow-list: a page of another member
    // (or of a dev server) may write here once its node is gone.
    let allowed = preflight("http://localhost:5173").await;
    assert_eq!(allowed.status, StatusCode::NO_CONTENT, "{}", allowed.text);
    let header = |name: &str| allowed.headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        header("access-control-allow-origin").as_deref(),
        Some("http://localhost:5173")
    );
    assert_eq!(
        header("access-control-allow-methods").as_deref(),
        Some("GET, PUT, DELETE")
    );
    let allowed_headers = header("access-control-allow-headers").unwrap().to_lowercase();
    for asked in ["authorization", "content-type", "if-match", "if-none-match"] {
        assert!(allowed_headers.contains(asked), "{asked} in {allowed_headers}");
    }
    let refused = preflight("https://elsewhere.example").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    assert_eq!(refused.error_code(), "unauthorized");
    assert!(refused.headers.get("access-control-allow-origin").is_none());

    // The write itself: its answer and its version are the script's to read.
    let put = rest
        .http
        .put(&url)
        .insert_header(("Origin", "http://localhost:5173"));
    let written = send(put, "7").await;
    assert_eq!(written.status, StatusCode::CREATED, "{}", written.text);
    assert_eq!(
        written.headers.get("access-control-allow-origin").unwrap(),
        "http://localhost:5173"
    );
    assert_eq!(
        written.headers.get("access-control-expose-headers").unwrap(),
        "ETag"
    );
    assert_eq!(written.etag().as_deref(), Some("\"1\""));
    let other = rest
        .http
        .get(&url)
        .insert_header(("Origin", "https://elsewhere.example"));
    let read = send(other, "").await;
    assert_eq!(
        read.status,
        StatusCode::OK,
        "not a browser's request: served, but not shared"
    );
    assert!(read.headers.get("access-control-allow-origin").is_none());
}

#[actix_web::test]
async fn unknown_routes_are_json_404s() {
    let node = TestNode::start();
    let reply = Rest::new(&node).get("/api/v1/nothing").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_code(), "not_found");
}

#[actix_web::test]
async fn a_write_sent_again_with_its_idempotency_key_is_answered_as_before() {
    let node = TestNode::start_with("[caches.c]\n", &[]);
    let rest = Rest::new(&node);
    let key = ("Idempotency-Key", "put-1");
    let first = rest.put_entry_if("c", "k", "1", key).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = rest.put_entry_if("c", "k", "2", key).await;
    assert_eq!(again.status, StatusCode::CREATED, "answered as the first time");
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers.get("etag"), first.headers.get("etag"));
    assert_eq!(rest.get_entry("c", "k").await.body, json!(1), "not applied twice");

    let remove = |op: &'static str| {
        send(
            rest.http
                .delete(rest.entry_url("c", "k"))
                .insert_header(("Idempotency-Key", op)),
            "",
        )
    };
    assert_eq!(remove("del-1").await.status, StatusCode::NO_CONTENT);
    assert_eq!(remove("del-1").await.status, StatusCode::NO_CONTENT, "not 404");
    assert_eq!(
        remove("put-1").await.error_code(),
        "conflict",
        "named another write"
    );
    for bad in ["", "two words", &"x".repeat(129)] {
        let reply = rest.put_entry_if("c", "k", "3", ("Idempotency-Key", bad)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad:?}: {}", reply.text);
    }
}
