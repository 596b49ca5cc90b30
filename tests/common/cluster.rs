//! The multi-node harness: a cluster of node processes, each on its own
//! loopback address ([`Cluster`]); nftables rules that cut and heal the
//! links between those addresses ([`Firewall`]); and a history of every
//! write a test's clients made, with the checker that verifies it against
//! the final state of every node ([`History`]).

#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use super::node::Launch;
use super::{Rest, TestNode};

/// One cluster of node processes on 127.0.0.{base+1}, {base+2}, ...
pub struct Cluster {
    pub nodes: Vec<Option<TestNode>>,
    pub ips: Vec<String>,
    failure_timeout_ms: u64,
    /// Whether the nodes run the demo feed (at 4 game minutes a second).
    demo: bool,
}

/// A cluster port unlikely to be taken: each node has its own address.
fn cluster_port() -> u16 {
    20_000 + (std::process::id() % 20_000) as u16
}

impl Cluster {
    /// Starts `count` members named n1, n2, ...; the first founds the
    /// cluster, the others join through it. Waits until all are members.
    pub async fn start(base: u8, count: usize, failure_timeout_ms: u64) -> Cluster {
        Cluster::start_some(base, count, count, failure_timeout_ms).await
    }

    /// As [`Cluster::start`], with addresses for `places` nodes of which
    /// the first `count` start now (the others may join later).
    pub async fn start_some(base: u8, places: usize, count: usize, failure_timeout_ms: u64) -> Cluster {
        Cluster::start_nodes(base, places, count, failure_timeout_ms, false).await
    }

    /// As [`Cluster::start`], every node running the demo feed.
    pub async fn start_playing_demo(base: u8, count: usize, failure_timeout_ms: u64) -> Cluster {
        Cluster::start_nodes(base, count, count, failure_timeout_ms, true).await
    }

    async fn start_nodes(
        base: u8,
        places: usize,
        count: usize,
        failure_timeout_ms: u64,
        demo: bool,
    ) -> Cluster {
        let ips = (1..=places)
            .map(|i| format!("127.0.0.{}", base as usize + i))
            .collect();
        let mut cluster = Cluster {
            nodes: Vec::new(),
            ips,
            failure_timeout_ms,
            demo,
        };
        for i in 0..places {
            let node = (i < count).then(|| cluster.launcher(i).start());
            cluster.nodes.push(node);
        }
        cluster
            .until_members(&(0..count).collect::<Vec<_>>(), count)
            .await;
        cluster
    }

    /// How node `i` is started (or started again) with its address and
    /// name, joining through the others unless it is node 0.
    pub fn launcher(&self, i: usize) -> Launch {
        let link = self.link(i);
        let name = format!("n{}", i + 1);
        let timeout = self.failure_timeout_ms.to_string();
        let mut args = vec![
            "--cluster-bind",
            link.as_str(),
            "--node-id",
            name.as_str(),
            "--failure-timeout-ms",
            timeout.as_str(),
        ];
        let seeds = (0..self.ips.len())
            .filter(|&j| j != i)
            .map(|j| self.link(j))
            .collect::<Vec<_>>()
            .join(",");
        if i != 0 {
            args.extend(["--join", seeds.as_str()]);
        }
        if self.demo {
            args.extend(["--demo-rate", "4"]);
        }
        let launch = Launch::new()
            .on(&self.ips[i])
            .args(&args)
            .log_level("warn,openraft=error,chitchat=error");
        match self.demo {
            true => launch.demo(),
            false => launch,
        }
    }

    /// The inter-node address of node `i`.
    pub fn link(&self, i: usize) -> String {
        format!("{}:{}", self.ips[i], cluster_port())
    }

    pub fn node(&self, i: usize) -> &TestNode {
        self.nodes[i].as_ref().expect("node running")
    }

    pub fn rest(&self, i: usize) -> Rest<'_> {
        Rest::new(self.node(i))
    }

    /// Sends `signal` to node `i`'s process.
    pub fn signal(&self, i: usize, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        let sent = unsafe { libc::kill(self.node(i).pid() as libc::pid_t, signal) };
        assert_eq!(sent, 0, "signal {signal} delivered to n{}", i + 1);
    }

    /// Members in the topology node `i` follows (0 when it cannot say).
    pub async fn members_seen_by(&self, i: usize) -> usize {
        let reply = self.rest(i).get("/api/v1/cluster").await;
        reply.body["members"].as_array().map_or(0, Vec::len)
    }

    /// The node leading the segment `key` hashes to, as node 0 sees it.
    pub async fn primary_of(&self, cache: &str, key: &str) -> usize {
        self.owners_of(cache, key).await[0]
    }

    /// The nodes owning `key`'s segment of `cache`, primary first, as n1
    /// sees them.
    pub async fn owners_of(&self, cache: &str, key: &str) -> Vec<usize> {
        let view = self.rest(0).get("/api/v1/cluster").await.body;
        let segments = view["caches"][cache]["segments"]
            .as_u64()
            .expect("the cache's segments") as u32;
        let segment = u64::from(pushgrid::grid::hash::segment_of(key, segments).0);
        let ranges = view["caches"][cache]["owners"].as_array().expect("owner ranges");
        let range = ranges
            .iter()
            .find(|r| r["first"].as_u64() <= Some(segment) && Some(segment) <= r["last"].as_u64())
            .expect("a range holds every segment");
        let owners = range["owners"].as_array().expect("owners");
        let index = |owner: &serde_json::Value| {
            let n: usize = owner
                .as_str()
                .and_then(|o| o.trim_start_matches('n').parse().ok())
                .expect("members are n1, n2, ...");
            n - 1
        };
        owners.iter().map(index).collect()
    }

    /// Waits until every node in `which` sees exactly `count` members.
    pub async fn until_members(&self, which: &[usize], count: usize) {
        until(
            &format!("{count} members seen by {which:?}"),
            Duration::from_secs(30),
            async || {
                for &i in which {
                    if self.members_seen_by(i).await != count {
                        return false;
                    }
                }
                true
            },
        )
        .await
    }
}

/// Polls `holds` every 50 ms until it is true, failing the test after `within`.
pub async fn until(what: &str, within: Duration, mut holds: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !holds().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An nftables table of this test's own, dropping packets between pairs
/// of addresses; deleted when dropped, however the test ends.
pub struct Firewall {
    table: String,
}

fn nft(args: &str) -> Result<(), String> {
    let output = Command::new("nft")
        .args(args.split_whitespace())
        .output()
        .map_err(|e| format!("cannot run nft ({e}): .ci/run installs Debian's nftables"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("nft {args}: {}", String::from_utf8_lossy(&output.stderr)))
    }
}

impl Firewall {
    /// A table named `name` (one left over by a killed run is replaced).
    pub fn new(name: &str) -> Firewall {
        let table = format!("pushgrid_test_{name}");
        let _ = nft(&format!("delete table inet {table}"));
        nft(&format!("add table inet {table}")).unwrap();
        nft(&format!(
            "add chain inet {table} out {{ type filter hook output priority 0 ; policy accept ; }}"
        ))
        .unwrap();
        Firewall { table }
    }

    /// Drops every packet from `from` to `to` (one direction).
    pub fn cut_one_way(&self, from: &str, to: &str) {
        nft(&format!(
            "add rule inet {} out ip saddr {from} ip daddr {to} drop",
            self.table
        ))
        .unwrap();
    }

    /// Drops every packet between `a` and `b`, both ways.
    pub fn cut(&self, a: &str, b: &str) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    /// Removes every cut.
    pub fn heal(&self) {
        nft(&format!("flush chain inet {} out", self.table)).unwrap();
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        let _ = nft(&format!("delete table inet {}", self.table));
    }
}

/// What became of one client operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Acknowledged {
        version: u64,
        at: Instant,
    },
    /// Refused, timed out or lost on the way: it may or may not have been
    /// applied.
    Unknown,
}

#[derive(Debug)]
pub struct Write {
    /// Which client wrote it, through which node.
    pub writer: usize,
    pub key: String,
    pub value: u64,
    pub invoked: Instant,
    pub outcome: Outcome,
}

/// One compare-and-set increment of the shared counter, and the reads of
/// the counter it began with.
#[derive(Debug)]
pub struct Increment {
    pub invoked: Instant,
    pub outcome: Outcome,
    /// When each read was sent, and the counter it returned.
    pub reads: Vec<(Instant, u64)>,
}

/// Every operation the clients of one test made. Each key is written once,
/// so its final state must be exactly its acknowledged write.
#[derive(Default)]
pub struct History {
    pub writes: Vec<Write>,
    pub increments: Vec<Increment>,
}

/// How long one client request may take before its outcome is unknown.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

pub const COUNTER: &str = "counter";

impl History {
    pub fn acknowledged(&self) -> impl Iterator<Item = &Write> {
        self.writes
            .iter()
            .filter(|w| matches!(w.outcome, Outcome::Acknowledged { .. }))
    }

    /// Writes through `rest` as client `writer` until `stop`: each round a
    /// new key, then one compare-and-set increment of the counter.
    pub async fn write_until(
        history: &RefCell<History>,
        rest: &Rest<'_>,
        writer: usize,
        cache: &str,
        stop: Instant,
    ) {
        let mut n = 0u64;
        while Instant::now() < stop {
            let key = format!("w{writer}-{n}");
            let invoked = Instant::now();
            let outcome = put(rest, cache, &key, &n.to_string(), None)
                .await
                .expect("no precondition, so never 412");
            history.borrow_mut().writes.push(Write {
                writer,
                key,
                value: n,
                invoked,
                outcome,
            });
            let invoked = Instant::now();
            let mut reads = Vec::new();
            let outcome = increment(rest, cache, &mut reads).await;
            history.borrow_mut().increments.push(Increment {
                invoked,
                outcome,
                reads,
            });
            if outcome == Outcome::Unknown {
                // Do not spin on a node that refuses at once.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            n += 1;
        }
    }

    /// The checker, against the final state read from each of `nodes`:
    /// - every acknowledged write is there with its acknowledged version and value;
    /// - no two acknowledged writes share a `(segment, version)`;
    /// - the counter lies between the acknowledged increments and those plus the unknown ones;
    /// - the counter's versions follow real time: an increment acknowledged
    ///   before another was invoked has the lower version;
    /// - no read of the counter is stale: it shows at least every increment
    ///   acknowledged before the read was sent.
    pub async fn check(&self, cache: &str, segments: u32, nodes: &[Rest<'_>]) {
        let acknowledged: Vec<&Write> = self.acknowledged().collect();
        let mut positions = HashSet::new();
        for write in &acknowledged {
            let Outcome::Acknowledged { version, .. } = write.outcome else {
                unreachable!()
            };
            let segment = pushgrid::grid::hash::segment_of(&write.key, segments);
            assert!(
                positions.insert((segment, version)),
                "{} shares (segment {}, version {version}) with another acknowledged write",
                write.key,
                segment.0
            );
        }
        for (i, rest) in nodes.iter().enumerate() {
            let state = final_state(rest, cache).await;
            for write in &acknowledged {
                let Outcome::Acknowledged { version, .. } = write.outcome else {
                    unreachable!()
                };
                let held = state.get(&write.key);
                assert_eq!(
                    held,
                    Some(&(write.value, version)),
                    "node {i}: {} was acknowledged at version {version} with {}",
                    write.key,
                    write.value
                );
            }
            let counter = state.get(COUNTER).map_or(0, |(value, _)| *value);
            let acked = self
                .increments
                .iter()
                .filter(|i| matches!(i.outcome, Outcome::Acknowledged { .. }))
                .count() as u64;
            let unknown = self.increments.len() as u64 - acked;
            assert!(
                acked <= counter && counter <= acked + unknown,
                "node {i}: counter {counter}, {acked} increments acknowledged, {unknown} unknown"
            );
        }
        let increments: Vec<(Instant, Instant, u64)> = self
            .increments
            .iter()
            .filter_map(|i| match i.outcome {
                Outcome::Acknowledged { version, at } => Some((i.invoked, at, version)),
                Outcome::Unknown => None,
            })
            .collect();
        for a in &increments {
            for b in &increments {
                if a.1 < b.0 {
                    assert!(
                        a.2 < b.2,
                        "increment at version {} acknowledged before one at {} began",
                        a.2,
                        b.2
                    );
                }
            }
        }
        for (sent, value) in self.increments.iter().flat_map(|i| &i.reads) {
            let before = increments.iter().filter(|(_, at, _)| at < sent).count() as u64;
            assert!(
                *value >= before,
                "a stale read: the counter read {value} after {before} increments were acknowledged"
            );
        }
    }
}

/// One PUT, with a precondition header if given; None when the
/// precondition failed (412).
async fn put(
    rest: &Rest<'_>,
    cache: &str,
    key: &str,
    value: &str,
    header: Option<(&str, &str)>,
) -> Option<Outcome> {
    let mut request = rest.http.put(rest.entry_url(cache, key)).timeout(REQUEST_TIMEOUT);
    if let Some(header) = header {
        request = request.insert_header(header);
    }
    let Ok(mut response) = request
        .content_type("application/json")
        .send_body(value.to_string())
        .await
    else {
        return Some(Outcome::Unknown);
    };
    let status = response.status().as_u16();
    let body = response.body().await.unwrap_or_default();
    match status {
        200 | 201 => {
            let ack: serde_json::Value = serde_json::from_slice(&body).expect("a write ack");
            Some(Outcome::Acknowledged {
                version: ack["version"].as_u64().expect("a version"),
                at: Instant::now(),
            })
        }
        412 => None,
        503 | 504 => Some(Outcome::Unknown),
        other => panic!("PUT {key}: unexpected {other} {}", String::from_utf8_lossy(&body)),
    }
}

/// One compare-and-set increment of the counter, retried while another
/// write got in first; every read it made goes into `reads`. Unknown also
/// when no increment was sent (a read failed): that one counts for nothing.
async fn increment(rest: &Rest<'_>, cache: &str, reads: &mut Vec<(Instant, u64)>) -> Outcome {
    for _ in 0..10 {
        let invoked = Instant::now();
        let request = rest
            .http
            .get(rest.entry_url(cache, COUNTER))
            .timeout(REQUEST_TIMEOUT);
        let Ok(mut current) = request.send().await else {
            return Outcome::Unknown;
        };
        let (value, precondition) = match current.status().as_u16() {
            200 => {
                let etag = current
                    .headers()
                    .get("etag")
                    .expect("an etag")
                    .to_str()
                    .unwrap()
                    .to_string();
                let Ok(body) = current.body().await else {
                    return Outcome::Unknown;
                };
                let value: u64 = serde_json::from_slice(&body).expect("the counter is a number");
                (value, ("if-match", etag))
            }
            404 => (0, ("if-none-match", "*".to_string())),
            503 | 504 => return Outcome::Unknown,
            other => panic!("reading the counter: unexpected {other}"),
        };
        reads.push((invoked, value));
        let header = (precondition.0, precondition.1.as_str());
        if let Some(outcome) = put(rest, cache, COUNTER, &(value + 1).to_string(), Some(header)).await {
            return outcome;
        }
    }
    Outcome::Unknown
}

/// Every entry of `cache` as node `rest` serves it: key to (value, version).
/// Values are the numbers the writers wrote.
pub async fn final_state(rest: &Rest<'_>, cache: &str) -> BTreeMap<String, (u64, u64)> {
    let mut state = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/caches/{cache}/entries?limit=1000");
        if let Some(after) = &after {
            path.push_str(&format!("&after={}", urlencode(after)));
        }
        // A member that joined just now may not hold its lease yet.
        let mut page = rest.get(&path).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while page.status.as_u16() == 503 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            page = rest.get(&path).await;
        }
        assert_eq!(page.status.as_u16(), 200, "listing {cache}: {}", page.text);
        for entry in page.body["entries"].as_array().expect("entries") {
            let key = entry["key"].as_str().expect("a key").to_string();
            let value = entry["value"].as_u64().expect("a number");
            let version = entry["version"].as_u64().expect("a version");
            state.insert(key, (value, version));
        }
        match page.body["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return state,
        }
    }
}

fn urlencode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}
