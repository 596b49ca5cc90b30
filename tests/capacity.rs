//! Ten thousand concurrent WebSocket connections on one node, each
//! subscribed, all of them served: the node counts them, answers on them,
//! and reports its memory per connection (asserted against a generous bound
//! here; the measured figure comes from `cargo bench --bench load -- idle`).

mod common;

use std::time::Duration;

use common::node::Launch;
use common::ws::WsClient;
use common::{Rest, TestNode};
use futures_util::future::join_all;
use serde_json::json;

const CONNECTIONS: usize = 10_000;

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[actix_web::test]
async fn ten_thousand_subscribed_connections_are_served() {
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let node = TestNode::start_with("[caches.c]\n", &[]);
    let rest = Rest::new(&node);
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    let before = rss_bytes(node.pid());

    let mut clients = Vec::with_capacity(CONNECTIONS);
    for batch in 0..CONNECTIONS / 250 {
        let opened = join_all((0..250).map(|i| {
            let node = &node;
            async move {
                let mut client = WsClient::connect(node).await;
                let n = batch * 250 + i;
                client
                    .send(json!({"op":"subscribe","cache":"c","filter":{"key":format!("k{n}")}}))
                    .await;
                client
            }
        }))
        .await;
        clients.extend(opened);
    }
    // A session counts itself once its actor starts, just after its
    // handshake was answered: allow the last few a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rest.metric("pushgrid_sessions").await != Some(CONNECTIONS as f64)
        && std::time::Instant::now() < deadline
    {
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rest.metric("pushgrid_sessions").await, Some(CONNECTIONS as f64));
    // Every subscription was made.
    for client in clients.iter_mut() {
        assert_eq!(client.next().await["type"], "subscribed");
        assert_eq!(client.next().await["done"], true);
    }
    assert_eq!(
        rest.metric("pushgrid_subscriptions").await,
        Some(CONNECTIONS as f64)
    );

    let per_connection = rss_bytes(node.pid()).saturating_sub(before) / CONNECTIONS as u64;
    eprintln!("{CONNECTIONS} connections: {per_connection} bytes of server memory each");
    assert!(
        per_connection < 128 * 1024,
        "{per_connection} bytes per idle connection"
    );

    // The last connection still gets its own key's writes.
    rest.put_entry("c", &format!("k{}", CONNECTIONS - 1), "1").await;
    assert_eq!(clients.last_mut().unwrap().next_event().await["value"], 1);
}

/// A node short of file descriptors: its connection limit comes from its
/// descriptor limit, so a handshake past it gets 503 (not a failed
/// `accept`), and health checks and metrics are still answered.
#[actix_web::test]
async fn a_node_short_of_descriptors_refuses_handshakes_but_answers_health_checks() {
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
    // 256 descriptors, 2 workers: 64 kept back, 192 accepted, 16 of them
    // for plain requests: 176 push connections (see `capacity`).
    let node = Launch::new()
        .config("[caches.c]\n")
        .args(&["--http-workers", "2"])
        .fd_limit(256)
        .start();
    let rest = Rest::new(&node);
    let mut open = Vec::new();
    let refused = loop {
        match WsClient::connect_with(&node, &[], None).await {
            Ok(client) => open.push(client),
            Err(err) => break err,
        }
        assert!(open.len() <= 256, "no limit short of the descriptor limit");
    };
    assert!(
        matches!(refused, awc::error::WsClientError::InvalidResponseStatus(s) if s == 503),
        "{refused:?}"
    );
    assert_eq!(open.len(), 176);
    for _ in 0..3 {
        assert_eq!(rest.get("/healthz").await.status, 200);
        assert_eq!(rest.get("/metrics").await.status, 200);
        let sse = common::send(rest.http.get(node.url("/api/v1/caches/c/events")), "").await;
        assert_eq!((sse.status.as_u16(), sse.error_code()), (503, "unavailable"));
    }
    // Every connection held is still served.
    for client in open.iter_mut().step_by(25) {
        assert_eq!(client.request(json!({"op": "ping"})).await["type"], "pong");
    }
    // A place given back is a place to take.
    drop(open.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match WsClient::connect_with(&node, &[], None).await {
            Ok(client) => break open.push(client),
            Err(_) if std::time::Instant::now() < deadline => {
                actix_web::rt::time::sleep(Duration::from_millis(50)).await
            }
            Err(err) => panic!("no place after one was given back: {err:?}"),
        }
    }
}
