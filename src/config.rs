//! The node's configuration: one typed struct read from a TOML file
//! (`--config FILE`), overridden by command-line flags, and validated before
//! anything starts, with errors that name the bad field.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;
use serde::Deserialize;

use crate::grid::{CacheConfig, CacheName};

/// pushgrid: an in-memory data grid whose every change is pushed live to
/// browsers over WebSockets.
#[derive(Debug, Parser)]
#[command(name = "pushgrid", version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Without one, the node starts; with one, this is a client of a
    /// running node
    #[command(subcommand)]
    pub command: Option<crate::client::ClientCommand>,
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// TOML configuration file (see the README for every setting)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Do not run the demo match feed on the `scores` cache
    #[arg(long)]
    pub no_demo: bool,
    /// Speed of the demo feed, in game minutes per second (raise it for load) [default: 1]
    #[arg(long, value_name = "RATE", allow_negative_numbers = true)]
    pub demo_rate: Option<f64>,
    /// Log filter: off, error, warn, info, debug or trace, optionally per
    /// module (`info,pushgrid::push=debug`) [default: info]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Threads for partition actors [default: one per core]
    #[arg(long, value_name = "N")]
    pub arbiters: Option<usize>,
    /// HTTP worker threads [default: one per core]
    #[arg(long, value_name = "N")]
    pub http_workers: Option<usize>,
    /// This member's id [default: a fresh UUID]
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// WebSocket connections and SSE streams the node accepts; past it, 503 [default: 100000]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Operations per second one WebSocket connection may send; 0: unlimited [default: 50000]
    #[arg(long, value_name = "N")]
    pub ops_per_second: Option<u32>,
    /// Subscriptions per WebSocket connection [default: 1000]
    #[arg(long, value_name = "N")]
    pub max_subscriptions: Option<usize>,
    /// Caches the node holds at most [default: 1000]
    #[arg(long, value_name = "N")]
    pub max_caches: Option<usize>,
    /// TOML file of access tokens, as the config file's [auth] table
    /// (`jwt_secret`, `[[tokens]]` with `token`, `read`, `write`); replaces it
    #[arg(long, value_name = "FILE")]
    pub auth_file: Option<PathBuf>,
    /// Turns clustering on: the inter-node link (TCP) and gossip (UDP)
    /// listen here, and this member's traffic to others leaves from it
    #[arg(long, value_name = "ADDR")]
    pub cluster_bind: Option<String>,
    /// Members to join through (any live one will do); none: found a new cluster
    #[arg(long, value_name = "ADDR,...", value_delimiter = ',')]
    pub join: Vec<String>,
    /// How long a member may be silent before it is declared dead
    #[arg(long, value_name = "MS")]
    pub failure_timeout_ms: Option<u64>,
    /// A secret every member must prove it holds when linking
    #[arg(
        long,
        value_name = "SECRET",
        env = "PUSHGRID_CLUSTER_SECRET",
        hide_env_values = true
    )]
    pub cluster_secret: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub bind: String,
    /// Log filter when neither `--log-level` nor `RUST_LOG` is given.
    pub log_level: String,
    /// Run the demo match feed.
    pub demo: bool,
    /// Demo speed: game minutes per second, per match.
    pub demo_rate: f64,
    /// Threads for partition actors; 0 means one per core.
    pub arbiters: usize,
    /// HTTP worker threads; 0 means one per core.
    pub http_workers: usize,
    /// This member's id in the cluster; a fresh UUID when absent.
    pub node_id: Option<String>,
    /// On SIGTERM/SIGINT, how long in-flight requests and closing
    /// connections get before the node exits anyway, in seconds.
    pub shutdown_grace_secs: u64,
    pub listener: ListenerConfig,
    /// The `[push]` table; `[websocket]`, its name before SSE and long
    /// polling shared it, is still read.
    #[serde(alias = "websocket")]
    pub push: PushConfig,
    pub limits: LimitsConfig,
    pub auth: crate::auth::AuthConfig,
    /// The `[cluster]` table; clustering is on when `bind` is set.
    pub cluster: ClusterConfig,
    /// Caches created at start-up, by name.
    pub caches: BTreeMap<String, CacheConfig>,
}

/// How this node takes part in a cluster.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Where the inter-node link and gossip listen; none: a single node.
    pub bind: Option<String>,
    /// Seed members' cluster addresses.
    pub join: Vec<String>,
    pub failure_timeout_ms: u64,
    /// Members of another cluster id are refused.
    pub cluster_id: String,
    pub secret: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            bind: None,
            join: Vec::new(),
            failure_timeout_ms: 3000,
            cluster_id: "pushgrid".into(),
            secret: None,
        }
    }
}

/// The listener's duplicate-event window.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerConfig {
    /// Event ids remembered at most.
    pub dedup_capacity: usize,
    /// How long an event id is remembered, in milliseconds.
    pub dedup_max_age_ms: u64,
    /// How long a segment's events may wait past a gap for the missing
    /// versions (from another owner) before they are read from history.
    pub gap_fill_after_ms: u64,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            dedup_capacity: 100_000,
            dedup_max_age_ms: 60_000,
            gap_fill_after_ms: 250,
        }
    }
}

/// What one client may ask of the node.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// The deepest nesting of arrays and objects accepted in a value.
    pub max_depth: usize,
    /// Operations (WebSocket messages) per second per connection; a burst of
    /// one second's worth is allowed. 0 means unlimited.
    pub ops_per_second: u32,
    /// WebSocket connections per node; a handshake past it gets 503.
    pub max_connections: usize,
    /// Subscriptions per connection.
    pub max_subscriptions: usize,
    /// Caches the node holds at most; creating one more is refused.
    pub max_caches: usize,
    /// Segments over all caches the node holds at most: each is an actor
    /// with its own memory (about 2 KiB empty).
    pub max_segments: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_depth: 64,
            ops_per_second: 50_000,
            max_connections: 100_000,
            max_subscriptions: 1_000,
            max_caches: 1_000,
            max_segments: 262_144,
        }
    }
}

/// How pushes are delivered: the keep-alive and slow-client settings every
/// transport (WebSocket, SSE, long polling) shares, and the two that only
/// the WebSocket endpoint has (message size, origins).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// How often the server pings each WebSocket connection and sends a
    /// comment down each idle SSE stream.
    pub heartbeat_interval_ms: u64,
    /// A WebSocket connection that sends nothing (not even a pong) for this
    /// long is closed.
    pub client_timeout_ms: u64,
    /// The largest client message; 0 means the largest `max_value_bytes` of
    /// any configured cache (at least 1 MiB) plus 64 KiB.
    pub max_message_bytes: usize,
    /// Origins allowed besides the server's own: whole origins
    /// (`https://app.example.com`) or bare host names (any scheme and port).
    pub allowed_origins: Vec<String>,
    /// Bytes waiting for a client beyond which its events are conflated.
    pub conflate_after_bytes: usize,
    /// Bytes waiting, even with conflation, beyond which it is closed (1013;
    /// an SSE stream is ended).
    pub close_after_bytes: usize,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            heartbeat_interval_ms: 15_000,
            client_timeout_ms: 45_000,
            max_message_bytes: 0,
            allowed_origins: vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()],
            conflate_after_bytes: 256 * 1024,
            close_after_bytes: 8 * 1024 * 1024,
        }
    }
}

impl PushConfig {
    /// The message limit in force: the configured one, or the contract's
    /// default of the largest value size plus 64 KiB.
    pub fn message_limit(&self, caches: &BTreeMap<String, CacheConfig>) -> usize {
        if self.max_message_bytes > 0 {
            return self.max_message_bytes;
        }
        let largest = caches
            .values()
            .map(|c| c.max_value_bytes)
            .chain([crate::grid::cache::DEFAULT_MAX_VALUE_BYTES])
            .max()
            .unwrap_or_default();
        largest + 64 * 1024
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: "127.0.0.1:8080".into(),
            log_level: "info".into(),
            demo: true,
            demo_rate: 1.0,
            arbiters: 0,
            http_workers: 0,
            node_id: None,
            shutdown_grace_secs: 10,
            listener: ListenerConfig::default(),
            push: PushConfig::default(),
            limits: LimitsConfig::default(),
            auth: crate::auth::AuthConfig::default(),
            cluster: ClusterConfig::default(),
            caches: BTreeMap::new(),
        }
    }
}

/// A log filter as `env_logger` reads it, but strict: every directive is a
/// level, or `module=level`. (`env_logger` would read a lone word such as
/// `verbose` as a module name and log nothing else.)
fn check_log_filter(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let is_level = |level: &str| LEVELS.contains(&level.trim().to_ascii_lowercase().as_str());
    for directive in filter.split(',') {
        let level = directive.split_once('=').map_or(directive, |(_, level)| level);
        if !is_level(level) {
            return Err(format!(
                "log_level: {directive:?} is not a level ({}) or module=level",
                LEVELS.join(", ")
            ));
        }
    }
    Ok(())
}

impl Config {
    /// The file named by `--config` (or the defaults), then the flags on
    /// top, validated.
    pub fn load(cli: &Cli) -> Result<Config, String> {
        let mut config = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
                Config::from_toml(&text).map_err(|e| format!("config file {}: {e}", path.display()))?
            }
            None => Config::default(),
        };
        if let Some(bind) = &cli.bind {
            config.bind = bind.clone();
        }
        if cli.no_demo {
            config.demo = false;
        }
        if let Some(rate) = cli.demo_rate {
            config.demo_rate = rate;
        }
        if let Some(level) = &cli.log_level {
            config.log_level = level.clone();
        }
        if let Some(arbiters) = cli.arbiters {
            config.arbiters = arbiters;
        }
        if let Some(workers) = cli.http_workers {
            config.http_workers = workers;
        }
        if let Some(id) = &cli.node_id {
            config.node_id = Some(id.clone());
        }
        if let Some(max) = cli.max_connections {
            config.limits.max_connections = max;
        }
        if let Some(rate) = cli.ops_per_second {
            config.limits.ops_per_second = rate;
        }
        if let Some(max) = cli.max_subscriptions {
            config.limits.max_subscriptions = max;
        }
        if let Some(max) = cli.max_caches {
            config.limits.max_caches = max;
        }
        if let Some(bind) = &cli.cluster_bind {
            config.cluster.bind = Some(bind.clone());
        }
        if !cli.join.is_empty() {
            config.cluster.join = cli.join.clone();
        }
        if let Some(ms) = cli.failure_timeout_ms {
            config.cluster.failure_timeout_ms = ms;
        }
        if let Some(secret) = &cli.cluster_secret {
            config.cluster.secret = Some(secret.clone());
        }
        if let Some(path) = &cli.auth_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read auth file {}: {e}", path.display()))?;
            config.auth = toml::from_str(&text)
                .map_err(|e: toml::de::Error| format!("auth file {}: {}", path.display(), e.message()))?;
        }
        config.validate()?;
        Ok(config)
    }

    pub fn from_toml(text: &str) -> Result<Config, String> {
        // toml's messages name the line and the field; keep only the
        // message's first line with its location, so it fits on one line.
        toml::from_str(text).map_err(|e: toml::de::Error| {
            let span = e
                .span()
                .map(|s| format!(" (at byte {})", s.start))
                .unwrap_or_default();
            format!("{}{span}", e.message())
        })
    }

    pub fn validate(&self) -> Result<(), String> {
        check_log_filter(&self.log_level)?;
        if self.http_workers > 1024 {
            return Err(format!(
                "http_workers: must be at most 1024, not {}",
                self.http_workers
            ));
        }
        for (name, cache) in &self.caches {
            CacheName::parse(name).map_err(|e| format!("caches.{name}: {e}"))?;
            cache.validate().map_err(|e| format!("caches.{name}.{e}"))?;
        }
        let cluster = &self.cluster;
        if !(100..=600_000).contains(&cluster.failure_timeout_ms) {
            return Err(format!(
                "cluster.failure_timeout_ms: must be 100 to 600000, not {}",
                cluster.failure_timeout_ms
            ));
        }
        if cluster.bind.is_none() && !cluster.join.is_empty() {
            return Err("cluster.join: needs cluster.bind (--cluster-bind), the address to join from".into());
        }
        if self.arbiters > 1024 {
            return Err(format!("arbiters: must be at most 1024, not {}", self.arbiters));
        }
        if !(self.demo_rate > 0.0 && self.demo_rate <= 10_000.0) {
            return Err(format!(
                "demo_rate: must be above 0 and at most 10000, not {}",
                self.demo_rate
            ));
        }
        let push = &self.push;
        if push.heartbeat_interval_ms == 0 || push.client_timeout_ms == 0 {
            return Err("push.heartbeat_interval_ms and client_timeout_ms: must be at least 1".into());
        }
        if push.close_after_bytes <= push.conflate_after_bytes {
            return Err("push.close_after_bytes: must exceed conflate_after_bytes".into());
        }
        if !(1..=1000).contains(&self.limits.max_depth) {
            return Err(format!(
                "limits.max_depth: must be 1 to 1000, not {}",
                self.limits.max_depth
            ));
        }
        if self.limits.max_connections == 0 || self.limits.max_subscriptions == 0 {
            return Err("limits.max_connections and max_subscriptions: must be at least 1".into());
        }
        let limits = &self.limits;
        if limits.max_caches == 0 || limits.max_segments == 0 {
            return Err("limits.max_caches and max_segments: must be at least 1".into());
        }
        if self.caches.len() > limits.max_caches {
            return Err(format!(
                "caches: {} configured, but limits.max_caches is {}",
                self.caches.len(),
                limits.max_caches
            ));
        }
        let segments: usize = self.caches.values().map(|c| c.segments as usize).sum();
        if segments > limits.max_segments {
            return Err(format!(
                "caches: {segments} segments configured, but limits.max_segments is {}",
                limits.max_segments
            ));
        }
        if self.listener.dedup_capacity == 0 {
            return Err("listener.dedup_capacity: must be at least 1".into());
        }
        Ok(())
    }

    /// Threads to use where the setting says 0: one per core.
    pub fn threads(setting: usize) -> usize {
        if setting > 0 {
            setting
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses() {
        let config = Config::from_toml(
            r#"
            bind = "0.0.0.0:9000"
            demo = false
            arbiters = 2
            [listener]
            dedup_capacity = 10
            [caches.scores]
            segments = 64
            lifespan_ms = 5000
            [caches.sessions]
            "#,
        )
        .unwrap();
        assert_eq!(config.bind, "0.0.0.0:9000");
        assert_eq!(config.caches["scores"].segments, 64);
        assert_eq!(config.caches["sessions"], CacheConfig::default());
        assert!(config.validate().is_ok());
    }

    #[test]
    fn errors_name_the_field() {
        let err = Config::from_toml("[caches.s]\nsegmnets = 3").unwrap_err();
        assert!(err.contains("segmnets"), "{err}");
        let config = Config::from_toml("[caches.s]\nsegments = 0").unwrap();
        assert!(config.validate().unwrap_err().starts_with("caches.s.segments"));
        let config = Config::from_toml("[caches.\"a b\"]").unwrap();
        assert!(config.validate().unwrap_err().starts_with("caches.a b"));
    }
}
