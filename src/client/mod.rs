//! The command-line client in the same binary, the way `redis-cli` and
//! `nats kv` serve their users: `pushgrid get|put|rm|ls|watch|caches|cluster`
//! against a running node, over its REST API and event streams.
//!
//! [`ClientCommand`] is what the user asked for; [`run`] carries it out and
//! prints the answer on stdout, or one line on stderr and a non-zero exit
//! when the node refuses it or cannot be reached. The HTTP side is
//! [`rest::Node`] over a small blocking client ([`http`]); `watch` is
//! [`watch`].

mod http;
mod rest;
mod watch;

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::Value;

use rest::{ClientError, Node};

/// Where the node is, and how to get in.
#[derive(Clone, Debug, Args)]
pub struct NodeArgs {
    /// The node to talk to
    #[arg(
        long,
        value_name = "URL",
        env = "PUSHGRID_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// Access token, when the node requires one
    #[arg(long, value_name = "TOKEN", env = "PUSHGRID_TOKEN")]
    pub token: Option<String>,
}

/// Talk to a running node instead of starting one.
#[derive(Clone, Debug, Subcommand)]
pub enum ClientCommand {
    /// Print an entry's value (JSON, exactly as written)
    Get {
        cache: String,
        key: String,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Write an entry; prints its new version
    Put {
        cache: String,
        key: String,
        /// The value, as JSON; `-` reads it from stdin
        value: String,
        /// Write only if the entry's version is still this
        #[arg(long, value_name = "VERSION", conflicts_with = "if_absent")]
        if_version: Option<u64>,
        /// Write only if there is no entry
        #[arg(long)]
        if_absent: bool,
        /// The entry expires this long after the write
        #[arg(long, value_name = "MS")]
        lifespan_ms: Option<u64>,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Remove an entry
    Rm {
        cache: String,
        key: String,
        /// Remove only if the entry's version is still this
        #[arg(long, value_name = "VERSION")]
        if_version: Option<u64>,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// List entries in key order: key, version, value, one per line
    Ls {
        cache: String,
        /// Only keys starting with this
        #[arg(long, default_value = "")]
        prefix: String,
        /// At most this many entries [default: all]
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Print the entries, then every change as it happens, resuming after a
    /// dropped connection (a restarted node sends the state afresh, marked reset)
    Watch {
        cache: String,
        /// Only keys starting with this
        #[arg(long, conflicts_with = "key")]
        prefix: Option<String>,
        /// Only this key
        #[arg(long)]
        key: Option<String>,
        /// One JSON object per line instead of columns
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// List the caches with their entry and byte counts
    Caches {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Show the cluster: members and segment owners
    Cluster {
        #[command(flatten)]
        node: NodeArgs,
    },
}

impl ClientCommand {
    fn node(&self) -> &NodeArgs {
        match self {
            ClientCommand::Get { node, .. }
            | ClientCommand::Put { node, .. }
            | ClientCommand::Rm { node, .. }
            | ClientCommand::Ls { node, .. }
            | ClientCommand::Watch { node, .. }
            | ClientCommand::Caches { node }
            | ClientCommand::Cluster { node } => node,
        }
    }
}

/// Carries out `command`; the exit code says whether it worked.
pub fn run(command: ClientCommand) -> ExitCode {
    let done =
        Node::new(command.node()).and_then(|node| execute(&node, command, &mut std::io::stdout().lock()));
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pushgrid: {err}");
            ExitCode::FAILURE
        }
    }
}

fn execute(node: &Node, command: ClientCommand, out: &mut impl Write) -> Result<(), ClientError> {
    match command {
        ClientCommand::Get { cache, key, .. } => {
            let reply = node.get(&entry_path(&cache, &key))?;
            writeln!(out, "{}", reply.text)?;
        }
        ClientCommand::Put {
            cache,
            key,
            value,
            if_version,
            if_absent,
            lifespan_ms,
            ..
        } => {
            let value = if value == "-" {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text)?;
                text
            } else {
                value
            };
            let mut path = entry_path(&cache, &key);
            if let Some(ms) = lifespan_ms {
                path.push_str(&format!("?lifespan_ms={ms}"));
            }
            let precondition = match (if_version, if_absent) {
                (Some(version), _) => Some(("If-Match", format!("\"{version}\""))),
                (None, true) => Some(("If-None-Match", "*".to_string())),
                (None, false) => None,
            };
            let reply = node.put(
                &path,
                &value,
                precondition.as_ref().map(|(n, v)| (*n, v.as_str())),
            )?;
            let created = if reply.json()?["created"] == true {
                "created"
            } else {
                "modified"
            };
            writeln!(out, "version {} ({created})", reply.json()?["version"])?;
        }
        ClientCommand::Rm {
            cache,
            key,
            if_version,
            ..
        } => {
            let precondition = if_version.map(|v| format!("\"{v}\""));
            node.delete(
                &entry_path(&cache, &key),
                precondition.as_deref().map(|v| ("If-Match", v)),
            )?;
        }
        ClientCommand::Ls {
            cache, prefix, limit, ..
        } => list(node, &cache, &prefix, limit, out)?,
        ClientCommand::Watch {
            cache,
            prefix,
            key,
            json,
            ..
        } => {
            let filter = match (key, prefix) {
                (Some(key), _) => format!("key={}", encode(&key)),
                (None, Some(prefix)) => format!("prefix={}", encode(&prefix)),
                (None, None) => String::new(),
            };
            let format = if json {
                watch::Format::Json
            } else {
                watch::Format::Columns
            };
            watch::watch(node, &cache, &filter, format, out)?;
        }
        ClientCommand::Caches { .. } => {
            let reply = node.get("/api/v1/caches")?.json()?;
            writeln!(
                out,
                "{:<24} {:>10} {:>12} {:>9}",
                "CACHE", "ENTRIES", "BYTES", "SEGMENTS"
            )?;
            for cache in reply["caches"].as_array().into_iter().flatten() {
                let count = |value: &Value| value.as_u64().unwrap_or_default();
                writeln!(
                    out,
                    "{:<24} {:>10} {:>12} {:>9}",
                    cache["name"].as_str().unwrap_or_default(),
                    count(&cache["entries"]),
                    count(&cache["bytes"]),
                    count(&cache["config"]["segments"])
                )?;
            }
        }
        ClientCommand::Cluster { .. } => {
            let mut view = node.get("/api/v1/cluster")?.json()?;
            // Every page of caches, into one view.
            while let Some(after) = view["next"].as_str().map(str::to_string) {
                let page = node
                    .get(&format!("/api/v1/cluster?after={}", encode(&after)))?
                    .json()?;
                if let (Some(caches), Some(more)) =
                    (view["caches"].as_object_mut(), page["caches"].as_object())
                {
                    caches.extend(more.clone());
                }
                view["next"] = page["next"].clone();
            }
            if let Some(view) = view.as_object_mut() {
                view.remove("next");
            }
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&view).expect("JSON prints")
            )?;
        }
    }
    Ok(())
}

/// Every entry with the prefix, page by page, up to `limit`.
fn list(
    node: &Node,
    cache: &str,
    prefix: &str,
    limit: Option<usize>,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    const PAGE: usize = 1000;
    let mut after: Option<String> = None;
    let mut left = limit.unwrap_or(usize::MAX);
    while left > 0 {
        let mut path = format!(
            "/api/v1/caches/{}/entries?prefix={}&limit={}",
            encode(cache),
            encode(prefix),
            left.min(PAGE)
        );
        if let Some(after) = &after {
            path.push_str(&format!("&after={}", encode(after)));
        }
        let reply = node.get(&path)?;
        let page: EntryPage = serde_json::from_str(&reply.text)
            .map_err(|e| ClientError::Unexpected(format!("a listing that does not parse: {e}")))?;
        for entry in &page.entries {
            writeln!(out, "{}\t{}\t{}", entry.key, entry.version, entry.value.get())?;
            left = left.saturating_sub(1);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok(())
}

/// A page of `GET .../entries`, values kept exactly as the node sent them.
#[derive(serde::Deserialize)]
struct EntryPage {
    entries: Vec<ListedEntry>,
    next: Option<String>,
}

#[derive(serde::Deserialize)]
struct ListedEntry {
    key: String,
    version: u64,
    value: Box<serde_json::value::RawValue>,
}

fn entry_path(cache: &str, key: &str) -> String {
    format!("/api/v1/caches/{}/entries/{}", encode(cache), encode(key))
}

/// Percent-encodes a path segment or query value.
fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The JSON of a reply whose body the node sent as JSON.
trait JsonReply {
    fn json(&self) -> Result<Value, ClientError>;
}

impl JsonReply for rest::Reply {
    fn json(&self) -> Result<Value, ClientError> {
        serde_json::from_str(&self.text)
            .map_err(|e| ClientError::Unexpected(format!("a reply that is not JSON: {e}")))
    }
}
