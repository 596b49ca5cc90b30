//! Three cluster members in one process, each with its own grid, over
//! real loopback links, gossip and the topology log: a cache agreed on one
//! member exists on all, writes made through any member are replicated to
//! both owners and forwarded to primaries, and a member that crashes loses
//! no acknowledged write.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pushgrid::cluster::member::{ClusterMember, Settings};
use pushgrid::config::Config;
use pushgrid::grid::{CacheConfig, CacheName, Grid, JsonValue, Precondition};
use pushgrid::metrics::Metrics;
use pushgrid::node::start_member_grid;

const FAILURE_TIMEOUT: Duration = Duration::from_millis(1000);

async fn member(name: &str, seeds: Vec<SocketAddr>) -> (Arc<ClusterMember>, Grid) {
    let metrics = Metrics::new();
    let settings = Settings {
        cluster_id: "members-test".into(),
        node_id: name.into(),
        generation: 1,
        link: "127.0.0.1:0".parse().unwrap(),
        api: format!("{name}.test:8080"),
        seeds,
        failure_timeout: FAILURE_TIMEOUT,
        secret: None,
        traffic: metrics.link.clone(),
    };
    let member = Arc::new(ClusterMember::start(settings).await.unwrap());
    let config = Config {
        arbiters: 1,
        ..Config::default()
    };
    let core = start_member_grid(&config, &metrics, name, Some(member.clone()))
        .await
        .unwrap();
    (member, core.grid)
}

async fn until(what: &str, mut holds: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !holds() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether every member's grid placed `c` at the epoch its topology is at.
fn placed(members: &[&(Arc<ClusterMember>, Grid)]) -> bool {
    members.iter().all(|(member, grid)| {
        let topology = member.topology().borrow().clone();
        let Some(agreed) = topology.caches.get("c") else {
            return false;
        };
        let Ok(cache) = grid.cache("c") else { return false };
        cache.owner_epoch() == agreed.epoch
    })
}

#[actix::test]
async fn writes_through_any_member_survive_the_crash_of_one() {
    let n1 = member("n1", vec![]).await;
    let n2 = member("n2", vec![n1.0.link_address()]).await;
    let n3 = member("n3", vec![n1.0.link_address()]).await;
    let all = [&n1, &n2, &n3];
    until("three members everywhere", || {
        all.iter().all(|(m, _)| m.topology().borrow().members.len() == 3)
    })
    .await;

    let config = CacheConfig {
        segments: 16,
        num_owners: Some(2),
        ..CacheConfig::default()
    };
    n2.1.create_cache(CacheName::parse("c").unwrap(), config)
        .await
        .unwrap();
    until("the cache placed on every member", || placed(&all)).await;
    until("every member leased", || {
        all.iter().all(|(m, _)| m.lease().holds())
    })
    .await;

    let mut written = Vec::new();
    for n in 0..120 {
        let (key, value) = (format!("k{n}"), JsonValue::parse(&format!("[{n}, 0.1]")).unwrap());
        let (_, grid) = all[n % 3];
        let outcome = grid
            .put("c", Arc::from(key.as_str()), value, Precondition::None, None)
            .await
            .unwrap_or_else(|e| panic!("write {n} through member {}: {e}", n % 3 + 1));
        written.push((key, format!("[{n}, 0.1]"), outcome.version));
    }
    for (_, grid) in all {
        for (key, value, version) in &written {
            let entry = grid.get("c", Arc::from(key.as_str())).await.unwrap();
            assert_eq!(
                (entry.value.get(), entry.version),
                (value.as_str(), *version),
                "{key}"
            );
        }
        assert_eq!(
            grid.list("c", "", None, 1000).await.unwrap().entries.len(),
            written.len()
        );
    }

    // n3 crashes: the others agree it is gone, take over its segments and
    // still hold every acknowledged write.
    n3.0.stop().await;
    let survivors = [&n1, &n2];
    until("n3 agreed away", || {
        survivors
            .iter()
            .all(|(m, _)| m.topology().borrow().members.len() == 2)
    })
    .await;
    until("the cache placed again", || placed(&survivors)).await;
    for (_, grid) in survivors {
        for (key, value, version) in &written {
            let entry = grid.get("c", Arc::from(key.as_str())).await.unwrap();
            assert_eq!(
                (entry.value.get(), entry.version),
                (value.as_str(), *version),
                "{key}"
            );
        }
    }
    for (n, (key, _, version)) in written.iter().enumerate() {
        let (_, grid) = survivors[n % 2];
        let value = JsonValue::parse("\"after\"").unwrap();
        let outcome = grid
            .put("c", Arc::from(key.as_str()), value, Precondition::None, None)
            .await
            .unwrap();
        assert!(outcome.version > *version, "{key}: versions go on after failover");
    }
    for (member, _) in survivors {
        member.stop().await;
    }
}
