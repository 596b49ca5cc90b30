//! The command-line client (`pushgrid get|put|rm|ls|watch|caches|cluster`)
//! against a real node: what it prints, its exit codes and error lines, its
//! token, and `watch` following a node through a restart.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::node::Launch;
use common::{Rest, TestNode};

fn client(node: &TestNode, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pushgrid"))
        .args(args)
        .args(["--url", &node.base])
        .env_remove("PUSHGRID_TOKEN")
        .output()
        .expect("run pushgrid")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// The one line a failed command prints, and its exit code.
fn failure(output: &Output) -> (i32, String) {
    let stderr = String::from_utf8_lossy(&output.stderr).trim_end().to_string();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    (output.status.code().unwrap(), stderr)
}

#[actix_web::test]
async fn entries_are_written_read_listed_and_removed() {
    // One segment: every write takes the next version of one counter.
    let node = TestNode::start_with("[caches.c]\nsegments = 1\n", &[]);
    let put = client(
        &node,
        &[
            "put",
            "c",
            "team/1",
            r#"{"name": "Ajax", "goals": 12345678901234567890123}"#,
        ],
    );
    assert_eq!(stdout(&put), "version 1 (created)\n");
    assert_eq!(
        stdout(&client(&node, &["get", "c", "team/1"])),
        "{\"name\":\"Ajax\",\"goals\":12345678901234567890123}\n",
        "the value exactly as written"
    );
    let put = client(&node, &["put", "c", "team/1", "2", "--if-version", "1"]);
    assert_eq!(stdout(&put), "version 2 (modified)\n");
    let (code, line) = failure(&client(&node, &["put", "c", "team/1", "3", "--if-version", "1"]));
    assert_eq!(code, 1);
    assert!(line.starts_with("pushgrid: version_mismatch: "), "{line}");
    let (_, line) = failure(&client(&node, &["put", "c", "team/1", "3", "--if-absent"]));
    assert!(line.starts_with("pushgrid: version_mismatch"), "{line}");
    // A key with a slash, a space and a non-ASCII letter.
    stdout(&client(&node, &["put", "c", "team/2 é", "\"b\""]));
    stdout(&client(&node, &["put", "c", "other", "[]"]));

    assert_eq!(
        stdout(&client(&node, &["ls", "c", "--prefix", "team/"])),
        "team/1\t2\t2\nteam/2 é\t3\t\"b\"\n"
    );
    assert_eq!(
        stdout(&client(&node, &["ls", "c", "--limit", "1"]))
            .lines()
            .count(),
        1
    );

    assert_eq!(stdout(&client(&node, &["rm", "c", "team/2 é"])), "");
    let (code, line) = failure(&client(&node, &["get", "c", "team/2 é"]));
    assert_eq!(
        (code, line.as_str()),
        (1, "pushgrid: not_found: no entry with that key")
    );
    let (_, line) = failure(&client(&node, &["get", "nope", "k"]));
    assert!(line.starts_with("pushgrid: unknown_cache"), "{line}");
    let (_, line) = failure(&client(&node, &["put", "c", "k", "{not json"]));
    assert!(line.starts_with("pushgrid: bad_request"), "{line}");
}

#[actix_web::test]
async fn caches_and_the_cluster_are_shown() {
    let node = TestNode::start_with("node_id = \"n1\"\n[caches.c]\nsegments = 4\n[caches.d]\n", &[]);
    Rest::new(&node).put_entry("c", "k", "\"abc\"").await;
    let caches = stdout(&client(&node, &["caches"]));
    let rows: Vec<Vec<&str>> = caches.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows,
        [
            vec!["CACHE", "ENTRIES", "BYTES", "SEGMENTS"],
            vec!["c", "1", "6", "4"],
            vec!["d", "0", "0", "256"]
        ]
    );
    let cluster: serde_json::Value = serde_json::from_str(&stdout(&client(&node, &["cluster"]))).unwrap();
    assert_eq!(cluster["node"]["id"], "n1");
    assert_eq!(cluster["caches"]["d"]["owners"][0]["last"], 255);
}

#[actix_web::test]
async fn a_token_is_sent_and_a_refusal_is_one_line() {
    let node = TestNode::start_with(
        "[caches.c]\n[auth]\n[[auth.tokens]]\ntoken = \"writer\"\nread = [\"c\"]\nwrite = [\"c\"]\n",
        &[],
    );
    let (code, line) = failure(&client(&node, &["put", "c", "k", "1"]));
    assert_eq!(code, 1);
    assert!(line.starts_with("pushgrid: unauthorized: "), "{line}");
    stdout(&client(&node, &["put", "c", "k", "1", "--token", "writer"]));
    let from_env = Command::new(env!("CARGO_BIN_EXE_pushgrid"))
        .args(["get", "c", "k", "--url", &node.base])
        .env("PUSHGRID_TOKEN", "writer")
        .output()
        .unwrap();
    assert_eq!(stdout(&from_env), "1\n");
}

#[test]
fn an_unreachable_node_is_one_line() {
    let output = Command::new(env!("CARGO_BIN_EXE_pushgrid"))
        .args(["get", "c", "k", "--url", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    let (code, line) = failure(&output);
    assert_eq!(code, 1);
    assert!(
        line.starts_with("pushgrid: cannot reach http://127.0.0.1:1/"),
        "{line}"
    );
}

/// A running `pushgrid watch`, its stdout read line by line; killed on drop.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watch {
    fn start(url: &str, args: &[&str]) -> Watch {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pushgrid"))
            .arg("watch")
            .args(args)
            .args(["--url", url])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watch { child, lines }
    }

    fn next(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .expect("watch printed nothing for 20 s")
    }

    fn assert_quiet(&self, wait: Duration) {
        if let Ok(line) = self.lines.recv_timeout(wait) {
            panic!("unexpected line {line:?}");
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[actix_web::test]
async fn watch_prints_the_state_then_each_change_and_follows_a_restarted_node() {
    // One segment: every write takes the next version of one counter.
    const CONFIG: &str = "[caches.c]\nsegments = 1\n";
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let node = Launch::new().config(CONFIG).port(port).start();
    let rest = Rest::new(&node);
    rest.put_entry("c", "a/1", "1").await;
    rest.put_entry("c", "b/1", "1").await;

    let watch = Watch::start(&node.base, &["c", "--prefix", "a/"]);
    assert_eq!(watch.next(), "snapshot\ta/1\t1\t1");
    rest.put_entry("c", "a/1", "{\"x\": 2}").await;
    rest.put_entry("c", "b/1", "2").await;
    rest.put_entry("c", "a/2", "3").await;
    rest.delete_entry("c", "a/1").await;
    assert_eq!(watch.next(), "modified\ta/1\t3\t{\"x\":2}");
    assert_eq!(watch.next(), "created\ta/2\t5\t3");
    assert_eq!(watch.next(), "removed\ta/1\t6\t");

    // The node restarts: its entries are gone, and the positions watch
    // holds name the old run. It reconnects and is sent the state afresh.
    drop(node);
    let node = Launch::new().config(CONFIG).port(port).start();
    Rest::new(&node).put_entry("c", "a/9", "9").await;
    assert_eq!(watch.next(), "reset");
    assert_eq!(watch.next(), "snapshot\ta/9\t1\t9");
    Rest::new(&node).put_entry("c", "a/9", "10").await;
    assert_eq!(watch.next(), "modified\ta/9\t2\t10");

    // JSON lines, for scripts; one key.
    let json = Watch::start(&node.base, &["c", "--key", "a/9", "--json"]);
    let first: serde_json::Value = serde_json::from_str(&json.next()).unwrap();
    assert_eq!(first["type"], "snapshot");
    assert_eq!(first["entry"]["version"], 2);
    Rest::new(&node).put_entry("c", "a/9", "11").await;
    let event: serde_json::Value = serde_json::from_str(&json.next()).unwrap();
    assert_eq!(
        (event["type"].as_str(), event["event"]["version"].as_u64()),
        (Some("event"), Some(3))
    );
    assert_eq!(watch.next(), "modified\ta/9\t3\t11");
    watch.assert_quiet(Duration::from_millis(300));
}
