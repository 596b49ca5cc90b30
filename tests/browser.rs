//! The scoreboard page in a real browser (headless Chromium driven over
//! WebDriver) against a real node, once over each transport (WebSocket,
//! SSE, long polling): the snapshot shows, a REST write appears within a
//! second, a connection cut by the server side is resumed with the write
//! made meanwhile, and two pages see each other's changes. A page whose
//! WebSocket cannot connect falls back to SSE by itself. Screenshots are
//! kept under `target/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs
//! them); without them the test says it was skipped, and why.

mod common;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::node::Launch;
use common::{Rest, TestNode};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

fn browser_available() -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    // Straight to stderr: the test harness captures eprintln! of passing
    // tests, and a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "\nbrowser test SKIPPED: {} not installed (apt-get install chromium chromium-driver; .ci/run does)",
        missing.join(" and ")
    );
    false
}

/// A chromedriver process on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
    _profiles: tempfile::TempDir,
}

impl Driver {
    async fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // A process group of its own: the browsers it starts go with it,
        // also when a test fails before closing its sessions.
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Driver {
            child,
            url,
            _profiles: tempfile::tempdir().unwrap(),
        }
    }

    /// A new headless browser session.
    async fn browser(&self) -> Client {
        let profile: PathBuf = tempfile::tempdir_in(self._profiles.path()).unwrap().keep();
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--disable-dev-shm-usage", "--window-size=1280,860",
                         format!("--user-data-dir={}", profile.display())]
            }
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // SAFETY: a plain kill(2) of the group the driver leads.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// A TCP proxy in front of the node: the page is loaded through it, so the
/// test can cut the page's WebSocket from the server side and keep it from
/// reconnecting for a while.
struct Proxy {
    port: u16,
    accepting: Arc<AtomicBool>,
    refusing_websockets: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
}

/// Whether a connection's first bytes are a WebSocket handshake.
fn is_websocket_handshake(head: &[u8]) -> bool {
    String::from_utf8_lossy(head)
        .to_ascii_lowercase()
        .contains("upgrade: websocket")
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        Proxy::start_with(upstream, false).await
    }

    /// A proxy that drops every WebSocket handshake, as some corporate
    /// proxies do. (Browsers open a fresh connection for each WebSocket,
    /// so a connection's first request is enough to tell.)
    async fn refusing_websockets(upstream: String) -> Proxy {
        Proxy::start_with(upstream, true).await
    }

    async fn start_with(upstream: String, refuse_websockets: bool) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepting = Arc::new(AtomicBool::new(true));
        let refusing_websockets = Arc::new(AtomicBool::new(refuse_websockets));
        let (cut, cuts) = watch::channel(0u64);
        let open = accepting.clone();
        let refusing = refusing_websockets.clone();
        actix_web::rt::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !open.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                // Only cuts after this connection was opened apply to it.
                let mut cuts = cuts.clone();
                cuts.borrow_and_update();
                let upstream = upstream.clone();
                let refuse_websockets = refusing.load(Ordering::SeqCst);
                actix_web::rt::spawn(async move {
                    let mut head = vec![0; 4096];
                    let Ok(read) = client.read(&mut head).await else {
                        return;
                    };
                    head.truncate(read);
                    if refuse_websockets && is_websocket_handshake(&head) {
                        return;
                    }
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    if server.write_all(&head).await.is_err() {
                        return;
                    }
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Proxy {
            port,
            accepting,
            refusing_websockets,
            cut,
        }
    }

    /// Lets WebSocket handshakes through from now on.
    fn allow_websockets(&self) {
        self.refusing_websockets.store(false, Ordering::SeqCst);
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Drops every open connection and refuses new ones until `resume`.
    fn cut_and_hold(&self) {
        self.accepting.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn resume(&self) {
        self.accepting.store(true, Ordering::SeqCst);
    }
}

/// Evaluates `script` (which returns a value) until `expected` holds or
/// `within` passes; returns the last value.
async fn eventually(
    page: &Client,
    script: &str,
    within: Duration,
    expected: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let value = page.execute(script, vec![]).await.expect("script runs");
        if expected(&value) || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn score_of(key: &str, side: &str) -> String {
    format!("return document.querySelector('[data-key=\"{key}\"] .{side}-score')?.textContent ?? null")
}

const CARD_COUNT: &str = "return document.querySelectorAll('#board .card:not(.leaving)').length";
const CONNECTION: &str = "return document.getElementById('connection').dataset.state";
const TRANSPORT: &str = "return document.getElementById('connection').dataset.transport";

fn fixture(home: &str, away: &str, home_score: u32, away_score: u32) -> String {
    json!({"league":"Test League","home":home,"away":away,"home_score":home_score,"away_score":away_score,
           "minute":10,"status":"live","goals":[]})
    .to_string()
}

fn save_screenshot(png: &[u8], name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

#[actix_web::test]
async fn the_scoreboard_follows_the_grid_over_a_websocket() {
    scoreboard_follows_the_grid_live_across_reconnects_and_windows(None, "websocket").await;
}

#[actix_web::test]
async fn the_scoreboard_follows_the_grid_over_sse() {
    scoreboard_follows_the_grid_live_across_reconnects_and_windows(Some("sse"), "sse").await;
}

#[actix_web::test]
async fn the_scoreboard_follows_the_grid_over_long_polling() {
    scoreboard_follows_the_grid_live_across_reconnects_and_windows(Some("poll"), "poll").await;
}

/// The whole scoreboard journey with the page's `?transport=` set to
/// `forced` (none: the page chooses), which must end up on `expected`.
async fn scoreboard_follows_the_grid_live_across_reconnects_and_windows(
    forced: Option<&str>,
    expected: &str,
) {
    if !browser_available() {
        return;
    }
    let page_url = |proxy: &Proxy| match forced {
        Some(transport) => format!("{}?transport={transport}", proxy.url()),
        // A reconnect may land on a fallback; auto moves back within 300 ms.
        None => format!("{}?upgrade_after_ms=300", proxy.url()),
    };
    let node = TestNode::start_with("[caches.scores]\nsegments = 16\n", &[]);
    let rest = Rest::new(&node);
    rest.put_entry("scores", "match/1", &fixture("Alpha", "Beta", 0, 0))
        .await;
    rest.put_entry("scores", "match/2", &fixture("Gamma", "Delta", 2, 1))
        .await;
    let proxy = Proxy::start(node.base.trim_start_matches("http://").to_string()).await;
    let driver = Driver::start().await;
    let page = driver.browser().await;
    page.goto(&page_url(&proxy)).await.unwrap();

    // The snapshot shows.
    let cards = eventually(&page, CARD_COUNT, Duration::from_secs(10), |v| v == 2).await;
    assert_eq!(cards, 2, "both matches from the snapshot");
    assert_eq!(
        eventually(&page, CONNECTION, Duration::from_secs(5), |v| v == "live").await,
        "live"
    );
    assert_eq!(page.execute(TRANSPORT, vec![]).await.unwrap(), expected);
    // textContent, not WebDriver's rendered text: cards fade in.
    let name = "return document.querySelector('[data-key=\"match/2\"] .home .name').textContent";
    assert_eq!(page.execute(name, vec![]).await.unwrap(), "Gamma");
    assert_eq!(
        page.execute(&score_of("match/2", "home"), vec![]).await.unwrap(),
        "2"
    );

    // A REST write appears within a second.
    rest.put_entry("scores", "match/1", &fixture("Alpha", "Beta", 1, 0))
        .await;
    let written = Instant::now();
    let shown = eventually(&page, &score_of("match/1", "home"), Duration::from_secs(1), |v| {
        v == "1"
    })
    .await;
    assert_eq!(shown, "1", "the write reached the page within a second");
    eprintln!("REST write to page: {:?}", written.elapsed());

    // Matches appear and disappear with their entries.
    rest.put_entry("scores", "match/3", &fixture("Epsilon", "Zeta", 0, 0))
        .await;
    assert_eq!(
        eventually(&page, CARD_COUNT, Duration::from_secs(2), |v| v == 3).await,
        3
    );
    rest.delete_entry("scores", "match/2").await;
    assert_eq!(
        eventually(&page, CARD_COUNT, Duration::from_secs(2), |v| v == 2).await,
        2
    );

    // The server side cuts the connection; a write lands while the page is away.
    proxy.cut_and_hold();
    let state = eventually(&page, CONNECTION, Duration::from_secs(5), |v| v != "live").await;
    assert_ne!(state, "live", "the page noticed the cut");
    rest.put_entry("scores", "match/1", &fixture("Alpha", "Beta", 1, 3))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        page.execute(&score_of("match/1", "away"), vec![]).await.unwrap(),
        "0",
        "not yet"
    );
    proxy.resume();
    let missed = eventually(
        &page,
        &score_of("match/1", "away"),
        Duration::from_secs(15),
        |v| v == "3",
    )
    .await;
    assert_eq!(
        missed, "3",
        "the page reconnected and resumed with the missed write"
    );
    assert_eq!(
        eventually(&page, TRANSPORT, Duration::from_secs(5), |v| v == expected).await,
        expected
    );
    assert_eq!(
        eventually(&page, CONNECTION, Duration::from_secs(5), |v| v == "live").await,
        "live"
    );

    // Two pages see each other's writes.
    let other = driver.browser().await;
    other.goto(&page_url(&proxy)).await.unwrap();
    assert_eq!(
        eventually(&other, CARD_COUNT, Duration::from_secs(10), |v| v == 2).await,
        2
    );
    other
        .find(Locator::Css("[data-key=\"match/1\"] .home .plus"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let clicked = Instant::now();
    let seen = eventually(&page, &score_of("match/1", "home"), Duration::from_secs(1), |v| {
        v == "2"
    })
    .await;
    assert_eq!(
        seen, "2",
        "one window's change shows in the other within a second"
    );
    eprintln!("click in one window to the other: {:?}", clicked.elapsed());
    let stored: Value = serde_json::from_str(&rest.get_entry("scores", "match/1").await.text).unwrap();
    assert_eq!(stored["home_score"], 2, "the click wrote through to the grid");
    page.find(Locator::Css("[data-key=\"match/3\"] .away .plus"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(
        eventually(
            &other,
            &score_of("match/3", "away"),
            Duration::from_secs(1),
            |v| v == "1"
        )
        .await,
        "1"
    );

    save_screenshot(
        &page.screenshot().await.unwrap(),
        &format!("scoreboard-test-{expected}.png"),
    );
    other.close().await.unwrap();
    page.close().await.unwrap();
}

#[actix_web::test]
async fn a_page_whose_websocket_cannot_connect_falls_back_to_sse() {
    if !browser_available() {
        return;
    }
    let node = TestNode::start_with("[caches.scores]\nsegments = 16\n", &[]);
    let rest = Rest::new(&node);
    rest.put_entry("scores", "match/1", &fixture("Alpha", "Beta", 0, 0))
        .await;
    let proxy = Proxy::refusing_websockets(node.base.trim_start_matches("http://").to_string()).await;
    let driver = Driver::start().await;
    let page = driver.browser().await;
    page.goto(&proxy.url()).await.unwrap();
    assert_eq!(
        eventually(&page, CARD_COUNT, Duration::from_secs(10), |v| v == 1).await,
        1
    );
    assert_eq!(
        eventually(&page, CONNECTION, Duration::from_secs(5), |v| v == "live").await,
        "live"
    );
    assert_eq!(page.execute(TRANSPORT, vec![]).await.unwrap(), "sse");
    let text = "return document.getElementById('connection-text').textContent";
    assert_eq!(page.execute(text, vec![]).await.unwrap(), "Live · SSE");
    rest.put_entry("scores", "match/1", &fixture("Alpha", "Beta", 0, 2))
        .await;
    assert_eq!(
        eventually(&page, &score_of("match/1", "away"), Duration::from_secs(2), |v| v
            == "2")
        .await,
        "2"
    );
    page.close().await.unwrap();
}

/// A page that fell back to SSE because its WebSocket could not connect
/// moves back to a WebSocket once one can, and keeps following.
#[actix_web::test]
async fn a_page_on_a_fallback_returns_to_a_websocket_once_it_can() {
    if !browser_available() {
        return;
    }
    let node = TestNode::start_with("[caches.scores]\nsegments = 16\n", &[]);
    let rest = Rest::new(&node);
    rest.put_entry("scores", "match/1", &fixture("Alpha", "Beta", 0, 0))
        .await;
    let proxy = Proxy::refusing_websockets(node.base.trim_start_matches("http://").to_string()).await;
    let driver = Driver::start().await;
    let page = driver.browser().await;
    page.goto(&format!("{}?upgrade_after_ms=300", proxy.url()))
        .await
        .unwrap();
    assert_eq!(
        eventually(&page, TRANSPORT, Duration::from_secs(10), |v| v == "sse").await,
        "sse"
    );
    assert_eq!(
        eventually(&page, CONNECTION, Duration::from_secs(5), |v| v == "live").await,
        "live"
    );
    // Still refused: it stays on SSE, and live.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(page.execute(TRANSPORT, vec![]).await.unwrap(), "sse");

    proxy.allow_websockets();
    assert_eq!(
        eventually(&page, TRANSPORT, Duration::from_secs(10), |v| v == "websocket").await,
        "websocket",
        "back on a WebSocket"
    );
    assert_eq!(
        eventually(&page, CONNECTION, Duration::from_secs(5), |v| v == "live").await,
        "live"
    );
    rest.put_entry("scores", "match/1", &fixture("Alpha", "Beta", 2, 0))
        .await;
    assert_eq!(
        eventually(&page, &score_of("match/1", "home"), Duration::from_secs(5), |v| v
            == "2")
        .await,
        "2",
        "and it follows the grid there"
    );
    assert_eq!(page.execute(CARD_COUNT, vec![]).await.unwrap(), 1);
    page.close().await.unwrap();
}

#[actix_web::test]
async fn the_demo_feed_fills_the_board_and_a_screenshot_is_kept() {
    if !browser_available() {
        return;
    }
    let node = TestNode::start_demo(&["--demo-rate", "4"]);
    let driver = Driver::start().await;
    let page = driver.browser().await;
    page.goto(&format!("{}/", node.base)).await.unwrap();
    let cards = eventually(&page, CARD_COUNT, Duration::from_secs(10), |v| {
        v.as_u64() >= Some(6)
    })
    .await;
    assert!(
        cards.as_u64() >= Some(6),
        "the demo's matches are on the board: {cards}"
    );
    let statuses = "return [...document.querySelectorAll('.card .status')].map(s => s.textContent).join(',')";
    let before = page.execute(statuses, vec![]).await.unwrap();
    let after = eventually(&page, statuses, Duration::from_secs(5), |v| *v != before).await;
    assert_ne!(after, before, "the matches move on their own");
    let rate = eventually(
        &page,
        "return document.getElementById('event-rate').textContent",
        Duration::from_secs(5),
        |v| {
            v.as_str()
                .is_some_and(|t| t.ends_with("events/s") && !t.starts_with("0.0"))
        },
    )
    .await;
    assert!(rate.as_str().unwrap().ends_with("events/s"), "{rate}");

    // Believable: a club plays one match at a time, and goals name scorers.
    let clubs =
        "return [...document.querySelectorAll('#board .card:not(.leaving) .name')].map(n => n.textContent)";
    for _ in 0..20 {
        let names: Vec<String> = serde_json::from_value(page.execute(clubs, vec![]).await.unwrap()).unwrap();
        let mut distinct = names.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            names.len(),
            "a club plays twice at once: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let goals = "return [...document.querySelectorAll('#board .card:not(.leaving)')].flatMap(card => \
                 [...card.querySelectorAll('.goals li')].map(li => [li.textContent, \
                 ...[...card.querySelectorAll('.name')].map(n => n.textContent)]))";
    let scored = eventually(&page, goals, Duration::from_secs(30), |v| {
        v.as_array().is_some_and(|goals| !goals.is_empty())
    })
    .await;
    let scored: Vec<[String; 3]> = serde_json::from_value(scored).unwrap();
    assert!(!scored.is_empty(), "no goal in 30 s of four matches a second");
    for [goal, home, away] in &scored {
        let (minute, scorer) = goal.split_once("' ").expect("a goal reads MINUTE' SCORER");
        assert!(minute.parse::<u32>().is_ok(), "{goal}");
        assert!(
            scorer != home && scorer != away,
            "a goal names its club, not a scorer: {goal}"
        );
    }

    // The icon browsers ask for is there.
    let icon = Rest::new(&node).get("/favicon.ico").await;
    assert_eq!(icon.status, 200);
    assert_eq!(icon.headers.get("content-type").unwrap(), "image/x-icon");

    // Settled: no card is fading in or out, no score flashing (the live
    // dot pulses forever and does not count).
    let moving =
        "return document.getAnimations().filter(a => !a.effect?.target?.closest?.('.connection')).length";
    let settled = eventually(&page, moving, Duration::from_secs(20), |v| v == 0).await;
    let still = "return document.getAnimations().filter(a => !a.effect?.target?.closest?.('.connection')) \
                 .map(a => `${a.animationName || a.transitionProperty} ${a.playState} on ${a.effect?.target?.className}`)";
    assert_eq!(
        settled,
        0,
        "the page never settled: {}",
        page.execute(still, vec![]).await.unwrap()
    );
    save_screenshot(&page.screenshot().await.unwrap(), "scoreboard.png");
    page.close().await.unwrap();
}

/// With auth on, a page without a token says it is not authorized (not
/// "Live" over an empty board) and offers a form for one; given a token
/// that may read the scores, it follows them.
#[actix_web::test]
async fn a_page_without_a_token_says_so_and_takes_one() {
    if !browser_available() {
        return;
    }
    let config = "[auth]\n[[auth.tokens]]\ntoken = \"viewer-token\"\nread = [\"scores\"]\n";
    let node = Launch::new().config(config).demo().start();
    let driver = Driver::start().await;
    let notice = "return document.getElementById('empty').textContent";
    let form_shown = "return !document.getElementById('token-form').classList.contains('hidden')";
    for (page_path, refused_how) in [("/", "no token"), ("/?token=wrong", "a wrong token")] {
        let page = driver.browser().await;
        page.goto(&format!("{}{page_path}", node.base)).await.unwrap();
        assert_eq!(
            eventually(&page, CONNECTION, Duration::from_secs(10), |v| v
                == "unauthorized")
            .await,
            "unauthorized",
            "{refused_how}"
        );
        let text = "return document.getElementById('connection-text').textContent";
        assert_eq!(page.execute(text, vec![]).await.unwrap(), "Not authorized");
        assert_eq!(page.execute(CARD_COUNT, vec![]).await.unwrap(), 0);
        assert_eq!(
            page.execute(notice, vec![]).await.unwrap(),
            "Not authorized to read the scores."
        );
        assert_eq!(page.execute(form_shown, vec![]).await.unwrap(), true);

        let input = page.find(Locator::Id("token-input")).await.unwrap();
        input.send_keys("viewer-token").await.unwrap();
        page.find(Locator::Css("#token-form button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        assert_eq!(
            eventually(&page, CONNECTION, Duration::from_secs(10), |v| v == "live").await,
            "live",
            "{refused_how}, then a good one"
        );
        let cards = eventually(&page, CARD_COUNT, Duration::from_secs(10), |v| {
            v.as_u64() >= Some(6)
        })
        .await;
        assert!(cards.as_u64() >= Some(6), "{cards}");
        assert_eq!(page.execute(form_shown, vec![]).await.unwrap(), false);
        page.close().await.unwrap();
    }
}

/// In a cluster the page works on every member: the demo feed plays once
/// (on n1), pages on n2 and n3 show the same matches, and a score written
/// through one member shows on the page of another.
/// Sets `field` of match `key` to `score` through `rest` as the page
/// does (read, then compare-and-set on its version), retrying for up to
/// 20 s while the cluster cannot take it.
async fn write_score(rest: &Rest<'_>, key: &str, field: &str, score: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "{key}: no write of {field} taken");
        let current = rest.get_entry("scores", key).await;
        if let Some(version) = current
            .headers
            .get("etag")
            .map(|v| v.to_str().unwrap().to_string())
        {
            let mut fixture = current.body.clone();
            fixture[field] = json!(score);
            let put = rest
                .put_entry_if("scores", key, &fixture.to_string(), ("If-Match", &version))
                .await;
            if put.status.is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Scoreboard pages on n2 and n3 of `cluster`, each showing the demo's
/// six matches; `query` is the pages' query string (`?transport=sse`).
async fn pages_on_n2_and_n3(
    cluster: &common::cluster::Cluster,
    driver: &Driver,
    query: &str,
) -> (Client, Client) {
    let (on_n2, on_n3) = (driver.browser().await, driver.browser().await);
    for (page, i) in [(&on_n2, 1), (&on_n3, 2)] {
        page.goto(&format!("{}/{query}", cluster.node(i).base))
            .await
            .unwrap();
        let cards = eventually(page, CARD_COUNT, Duration::from_secs(20), |v| {
            v.as_u64() >= Some(6)
        })
        .await;
        assert!(
            cards.as_u64() >= Some(6),
            "the matches are on n{}'s page: {cards}",
            i + 1
        );
    }
    (on_n2, on_n3)
}

#[actix_web::test]
async fn pages_on_two_members_of_a_cluster_show_the_same_matches() {
    if !browser_available() {
        return;
    }
    let cluster = common::cluster::Cluster::start_playing_demo(120, 3, 3000).await;
    let driver = Driver::start().await;
    let (on_n2, on_n3) = pages_on_n2_and_n3(&cluster, &driver, "").await;
    let keys =
        "return [...document.querySelectorAll('#board .card:not(.leaving)')].map(c => c.dataset.key).sort()";
    let shown_on_n2 = on_n2.execute(keys, vec![]).await.unwrap();
    let shown_on_n3 = eventually(&on_n3, keys, Duration::from_secs(10), |v| *v == shown_on_n2).await;
    assert_eq!(shown_on_n3, shown_on_n2, "one set of matches for the cluster");

    // A score written through n3 (read, then compare-and-set on its
    // version, as the page does) shows on the page of n2.
    let key = shown_on_n2[0].as_str().unwrap().to_string();
    write_score(&Rest::new(cluster.node(2)), &key, "home_score", 42).await;
    let score = eventually(&on_n2, &score_of(&key, "home"), Duration::from_secs(10), |v| {
        v == "42"
    })
    .await;
    assert_eq!(score, "42", "n3's write on n2's page");
    on_n2.close().await.unwrap();
    on_n3.close().await.unwrap();
}

#[actix_web::test]
async fn a_page_whose_node_dies_reconnects_to_another_member_and_shows_what_changed_meanwhile() {
    page_fails_over(150, None).await;
}

#[actix_web::test]
async fn a_page_on_sse_whose_node_dies_reconnects_to_another_member() {
    page_fails_over(190, Some("sse")).await;
}

#[actix_web::test]
async fn a_page_on_long_polling_whose_node_dies_reconnects_to_another_member() {
    page_fails_over(200, Some("poll")).await;
}

/// Pages on n2 and n3 (on `transport`, or the default WebSocket); n2 is
/// killed; n2's page reconnects to another member, on the same
/// transport, and shows a score written meanwhile and the same scores as
/// n3's page.
async fn page_fails_over(base: u8, transport: Option<&str>) {
    if !browser_available() {
        return;
    }
    let mut cluster = common::cluster::Cluster::start_playing_demo(base, 3, 3000).await;
    let driver = Driver::start().await;
    let query = transport.map_or(String::new(), |t| format!("?transport={t}"));
    let (on_n2, on_n3) = pages_on_n2_and_n3(&cluster, &driver, &query).await;
    // The page learns the members as it goes live: let that answer come.
    tokio::time::sleep(Duration::from_millis(500)).await;

    cluster.signal(1, libc::SIGKILL);
    cluster.nodes[1] = None;
    // A score written through n3 while n2's page has no node.
    let key = on_n3
        .execute(
            "return document.querySelector('#board .card:not(.leaving)').dataset.key",
            vec![],
        )
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    write_score(&Rest::new(cluster.node(2)), &key, "away_score", 77).await;
    let score = eventually(&on_n2, &score_of(&key, "away"), Duration::from_secs(20), |v| {
        v == "77"
    })
    .await;
    assert_eq!(
        score, "77",
        "n2's page, reconnected elsewhere, shows the write made meanwhile"
    );
    let state = eventually(&on_n2, CONNECTION, Duration::from_secs(5), |v| v == "live").await;
    assert_eq!(state, "live");
    let on = on_n2
        .execute(
            "return document.querySelector('#connection').dataset.transport",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(on, transport.unwrap_or("websocket"), "on the transport it was on");
    // Both pages show the same scores (the demo plays on: compare until
    // they agree at one moment).
    let scores = "return [...document.querySelectorAll('#board .card:not(.leaving)')]\
                  .map(c => c.dataset.key + ' ' + c.querySelector('.home-score').textContent + '-' \
                  + c.querySelector('.away-score').textContent).sort().join(', ')";
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut left, mut right);
    loop {
        left = on_n2.execute(scores, vec![]).await.unwrap();
        right = on_n3.execute(scores, vec![]).await.unwrap();
        if left == right || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, right, "the pages show the same scores");

    // The page's own writes follow it too (on SSE and long polling they
    // are REST calls, to another origin than the page's).
    let n3 = Rest::new(cluster.node(2));
    let created = n3.create_cache("notes", "{}").await;
    assert!(created.status.is_success(), "{}", created.text);
    let written = page_put(&on_n2, "notes", "from-n2", json!({"seen": 77})).await;
    assert_eq!(written["type"], "ok", "{written}");
    let read = n3.get_entry("notes", "from-n2").await;
    assert_eq!(read.body, json!({"seen": 77}), "the write reached the cluster");
    on_n2.close().await.unwrap();
    on_n3.close().await.unwrap();
}

/// `pushgridClient.put` on `page`, retried while the cluster answers
/// `unavailable` (a member's segments are being promoted); its answer.
async fn page_put(page: &Client, cache: &str, key: &str, value: Value) -> Value {
    let script = "const done = arguments[arguments.length - 1];\
                  window.pushgridClient.put(arguments[0], arguments[1], arguments[2])\
                  .then(done, (e) => done({ type: 'error', code: e.code, message: e.message }));";
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let args = vec![json!(cache), json!(key), value.clone()];
        let answer = page.execute_async(script, args).await.unwrap();
        if answer["code"] != "unavailable" || Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
