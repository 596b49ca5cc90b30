//! Starting a node: the arbiters partitions run on, the membership and
//! listener actors, the grid with its start-up caches ([`start_grid`]), and
//! the HTTP server ([`start`], which `main` calls; tests and benches start
//! the binary itself, through `tests/common/node.rs`).

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Arbiter};
use actix_web::{middleware, web, App, HttpServer};
use tokio::sync::watch;

use crate::auth::Authenticator;
use crate::capacity::ConnectionBudget;
use crate::cluster::lease::Lease;
use crate::cluster::member::{ClusterMember, Settings};
use crate::cluster::membership::{Member, Membership};
use crate::cluster::placement::{follow_topology, MemberLinks};
use crate::cluster::relay::{keep_others_told, Relay, WATCH_REFRESH};
use crate::cluster::watchers::Watchers;
use crate::config::Config;
use crate::demo::{DemoFeed, DEMO_CACHE};
use crate::grid::forward::Forwarder;
use crate::grid::owners::{MemberId, OwnerTables};
use crate::grid::replication::ReplicaSink;
use crate::grid::{CacheName, Grid, GridLimits, GridSetup, Interests};
use crate::metrics::Metrics;
use crate::push::listener::{CatchUp, FillGapsFrom, HealthChanged, Listener};
use crate::push::outbox::OutboxLimits;
use crate::push::Health;
use crate::push::PushSettings;
use crate::web::websocket::WebSocketSettings;
use crate::web::{configure, observe_latency, AppState};

/// A node that is serving; await `server` to run it until it stops.
pub struct RunningNode {
    pub address: SocketAddr,
    pub server: actix_web::dev::Server,
    shutting_down: Arc<watch::Sender<bool>>,
    cluster: Option<Arc<ClusterMember>>,
}

impl RunningNode {
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            server: self.server.handle(),
            shutting_down: self.shutting_down.clone(),
            cluster: self.cluster.clone(),
        }
    }
}

/// Shuts a running node down gracefully.
pub struct ShutdownHandle {
    server: actix_web::dev::ServerHandle,
    shutting_down: Arc<watch::Sender<bool>>,
    cluster: Option<Arc<ClusterMember>>,
}

impl ShutdownHandle {
    /// A member of a cluster first leaves it, handing its segments over
    /// (its clients are served meanwhile, by the new owners). Then every
    /// WebSocket session closes with 1001, the server stops accepting,
    /// in-flight requests finish (within the configured grace period), and
    /// the node's `server` future completes.
    pub async fn shut_down(self) {
        if let Some(member) = &self.cluster {
            log::info!("leaving the cluster: handing this member's segments over");
            match member.leave().await {
                Ok(()) => log::info!("left the cluster; every segment is with its new owners"),
                Err(e) => log::warn!("leaving the cluster: {e}"),
            }
        }
        log::info!("shutting down: closing sessions (1001) and finishing in-flight requests");
        self.shutting_down.send_replace(true);
        self.server.stop(true).await;
        if let Some(member) = &self.cluster {
            member.stop().await;
        }
    }
}

/// Starts a node inside the current actix system.
pub async fn start(config: Config) -> Result<RunningNode, String> {
    let tcp = TcpListener::bind(&config.bind).map_err(|e| format!("cannot bind {}: {e}", config.bind))?;
    let address = tcp
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;

    let metrics = Arc::new(Metrics::new());
    let cluster = join_cluster(&config, &address, &metrics).await?;
    let Core {
        grid,
        listener,
        membership,
    } = start_member_grid(&config, &metrics, &address.to_string(), cluster.clone()).await?;
    let settings = &config.push;
    let push = Arc::new(PushSettings {
        heartbeat_interval: Duration::from_millis(settings.heartbeat_interval_ms),
        client_timeout: Duration::from_millis(settings.client_timeout_ms),
        outbox: OutboxLimits {
            conflate_after_bytes: settings.conflate_after_bytes,
            close_after_bytes: settings.close_after_bytes,
        },
    });
    let websocket = Arc::new(WebSocketSettings {
        max_message_bytes: settings.message_limit(&config.caches),
        allowed_origins: settings.allowed_origins.clone(),
    });
    if config.demo {
        DemoFeed::start(grid.clone(), config.demo_rate, plays_demo(cluster.as_ref()))
            .await
            .map_err(|e| format!("cannot start the demo feed: {e}"))?;
        log::info!(
            "demo feed: {} matches on cache {DEMO_CACHE} at {} game minutes/s (--no-demo to turn off)",
            crate::demo::MATCHES,
            config.demo_rate
        );
    }

    let auth = Arc::new(Authenticator::new(&config.auth));
    if auth.is_enabled() {
        log::info!(
            "auth: {} tokens configured; requests without one may do nothing",
            config.auth.tokens.len()
        );
    } else if address.ip().is_loopback() {
        log::info!("no auth configured: every client may read and write every cache (fine on localhost)");
    } else {
        log::warn!(
            "no auth configured and listening on {address}, beyond this machine: anyone who can reach it may \
             read and write every cache; configure [auth] tokens or jwt_secret"
        );
    }
    let workers = Config::threads(config.http_workers);
    let budget = ConnectionBudget::of_this_process(config.limits.max_connections, workers);
    log::info!(
        "file descriptor limit {}: up to {} WebSocket connections, SSE streams and held polls{}",
        budget.fd_limit,
        budget.push_connections,
        if budget.push_connections < config.limits.max_connections {
            format!(
                " (max_connections {} does not fit)",
                config.limits.max_connections
            )
        } else {
            String::new()
        }
    );
    let limits = crate::config::LimitsConfig {
        max_connections: budget.push_connections,
        ..config.limits.clone()
    };
    let (shutting_down, shutdown) = watch::channel(false);
    let state = web::Data::new(AppState {
        grid: grid.clone(),
        metrics,
        listener,
        membership,
        push,
        websocket,
        shutdown,
        limits: Arc::new(limits),
        auth,
        connections: Arc::default(),
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(middleware::from_fn(observe_latency))
            .configure(configure)
    })
    .workers(workers)
    // Past this, connections wait in the backlog rather than fail accept
    // for want of descriptors (see `capacity`).
    .max_connections(budget.per_worker)
    .on_connect(crate::web::note_socket)
    // A push server writes small frames as they happen; Nagle's algorithm
    // would hold them back for up to a delayed-ACK timeout (~40 ms).
    .tcp_nodelay(true)
    // Signals are handled by the binary, which closes sessions first.
    .disable_signals()
    .shutdown_timeout(config.shutdown_grace_secs)
    .listen(tcp)
    .map_err(|e| format!("cannot listen on {address}: {e}"))?
    .run();
    log::info!("listening on http://{address}/");
    Ok(RunningNode {
        address,
        server,
        shutting_down: Arc::new(shutting_down),
        cluster,
    })
}

/// A node's core: what serves the grid and its pushes, whatever the front
/// end.
pub struct Core {
    pub grid: Grid,
    pub listener: Addr<Listener>,
    pub membership: Addr<Membership>,
}

/// Joins (or founds) the cluster `config.cluster` names, if it names one:
/// returns once this member is in the agreed topology.
async fn join_cluster(
    config: &Config,
    api: &SocketAddr,
    metrics: &Metrics,
) -> Result<Option<Arc<ClusterMember>>, String> {
    let cluster = &config.cluster;
    let Some(bind) = &cluster.bind else {
        return Ok(None);
    };
    let resolve = |address: &str| -> Result<SocketAddr, String> {
        use std::net::ToSocketAddrs;
        address
            .to_socket_addrs()
            .map_err(|e| format!("cluster address {address}: {e}"))?
            .next()
            .ok_or_else(|| format!("cluster address {address} resolves to nothing"))
    };
    let node_id = config
        .node_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let settings = Settings {
        cluster_id: cluster.cluster_id.clone(),
        node_id: node_id.clone(),
        // Higher on every start, so peers tell this run from the last.
        generation: crate::grid::now_ms(),
        link: resolve(bind)?,
        api: api.to_string(),
        seeds: cluster
            .join
            .iter()
            .map(|seed| resolve(seed))
            .collect::<Result<_, _>>()?,
        failure_timeout: Duration::from_millis(cluster.failure_timeout_ms),
        secret: cluster.secret.as_ref().map(|s| Arc::from(s.as_bytes())),
        traffic: metrics.link.clone(),
    };
    let founding = settings.seeds.is_empty();
    log::info!(
        "member {node_id}: {} the cluster {} from {bind}",
        if founding { "founding" } else { "joining" },
        cluster.cluster_id
    );
    let member = ClusterMember::start(settings).await?;
    log::info!(
        "member {node_id} is in the cluster at epoch {}",
        member.topology().borrow().epoch
    );
    Ok(Some(Arc::new(member)))
}

/// Whether this node plays the demo's matches now: always on its own; in
/// a cluster, while it is the member with the lowest id, so the cluster
/// plays one set of matches.
fn plays_demo(cluster: Option<&Arc<ClusterMember>>) -> Box<dyn Fn() -> bool> {
    let Some(cluster) = cluster else {
        return Box::new(|| true);
    };
    let (me, topology) = (cluster.id(), cluster.topology());
    Box::new(move || topology.borrow().members.keys().next() == Some(&me))
}

/// Starts the node's core inside the current actix system: the arbiters
/// partitions run on, the listener and membership actors, and the grid with
/// the configured caches. `address` is where clients reach this member.
pub async fn start_grid(config: &Config, metrics: &Metrics, address: &str) -> Result<Core, String> {
    start_member_grid(config, metrics, address, None).await
}

/// [`start_grid`] for a node that is `cluster`'s member, when it is one:
/// its caches are the cluster's, placed by the agreed owner tables, and its
/// grid replicates to and forwards to the other members.
pub async fn start_member_grid(
    config: &Config,
    metrics: &Metrics,
    address: &str,
    cluster: Option<Arc<ClusterMember>>,
) -> Result<Core, String> {
    let arbiters: Vec<_> = (0..Config::threads(config.arbiters))
        .map(|_| Arbiter::new().handle())
        .collect();
    let (watching, watched) = watch::channel(Interests::new());
    let listener = Listener::new(&config.listener, metrics.push.clone())
        .reporting_to(watching)
        .start();
    let local_member = match &cluster {
        Some(cluster) => cluster.id(),
        None => MemberId(
            config
                .node_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
                .into(),
        ),
    };
    let local = Member {
        id: local_member.clone(),
        address: address.to_string(),
    };
    let membership = match &cluster {
        Some(cluster) => Membership::clustered(local, cluster.clone()),
        None => Membership::new(local),
    }
    .start();
    log::info!(
        "node {} starting: {} arbiters for partitions, {} HTTP workers",
        local_member.0,
        arbiters.len(),
        Config::threads(config.http_workers)
    );
    let links = cluster.clone().map(MemberLinks::new);
    let leased = cluster.as_ref().map(|cluster| {
        let lease = cluster.lease().clone();
        Arc::new(move || lease.holds()) as Arc<dyn Fn() -> bool + Send + Sync>
    });
    // In a cluster, events pass through the relay, which also sends them
    // to the members whose subscribers watch their cache.
    let watchers = Arc::new(Watchers::default());
    let events = match &cluster {
        Some(cluster) => {
            let relay = Relay::new(listener.clone().recipient(), watchers.clone(), cluster.clone());
            relay.start().recipient()
        }
        None => listener.clone().recipient(),
    };
    let grid = Grid::new(GridSetup {
        arbiters,
        owner_tables: OwnerTables::kept_by(&membership),
        local_member,
        events,
        deletions: listener.clone().recipient(),
        restarts: listener.clone().recipient(),
        metrics: metrics.grid.clone(),
        limits: GridLimits {
            max_caches: config.limits.max_caches,
            max_segments: config.limits.max_segments,
        },
        replicas: links.clone().map(|l| l as Arc<dyn ReplicaSink>),
        forwarder: links.map(|l| l as Arc<dyn Forwarder>),
        leased,
    });
    listener.do_send(FillGapsFrom(grid.clone()));
    if let Some(cluster) = &cluster {
        cluster.attach(grid.clone(), listener.clone().recipient(), watchers.clone());
        let catch_up = listener.clone();
        actix::spawn(follow_topology(grid.clone(), cluster.clone(), move || {
            catch_up_now_and_later(&catch_up)
        }));
        actix::spawn(report_health(cluster.lease().clone(), listener.clone()));
        actix::spawn(keep_others_told(cluster.clone(), watched, watchers));
    }
    for (name, cache) in &config.caches {
        let name = CacheName::parse(name).map_err(|e| format!("caches.{name}: {e}"))?;
        grid.create_cache(name.clone(), cache.clone())
            .await
            .map_err(|e| format!("cannot create cache {name}: {e}"))?;
        let owners = grid.cache(name.as_str()).map_or(1, |c| c.config().owners());
        log::info!("cache {name}: {} segments, num_owners {owners}", cache.segments);
    }
    Ok(Core {
        grid,
        listener,
        membership,
    })
}

/// Tells the listener when this member loses its lease (cut off from the
/// majority: its subscribers are told) and when it holds one again (they
/// are told and caught up). A member that never held one, or that is
/// leaving, is not degraded; two missed checks in a row are needed, so a
/// renewal a moment late is not reported.
/// Has the listener read each watched segment's history past what it
/// passed on, now and again once the other members surely know again
/// what this member watches (they may have forgotten while it was out):
/// an event relayed to nobody in between, with no later one in its
/// segment to show the gap, is caught up then.
fn catch_up_now_and_later(listener: &Addr<Listener>) {
    listener.do_send(CatchUp);
    let later = listener.clone();
    actix::spawn(async move {
        tokio::time::sleep(WATCH_REFRESH * 2).await;
        later.do_send(CatchUp);
    });
}

async fn report_health(lease: Lease, listener: Addr<Listener>) {
    let mut ticks = tokio::time::interval((lease.term() / 5).max(Duration::from_millis(20)));
    let (mut held_once, mut degraded, mut missed) = (false, false, 0);
    loop {
        ticks.tick().await;
        if lease.holds() {
            missed = 0;
            held_once = true;
            if degraded {
                degraded = false;
                log::info!("this member holds a lease again: its subscribers are caught up");
                listener.do_send(HealthChanged(Health::Recovered));
                catch_up_now_and_later(&listener);
            }
        } else if held_once && !lease.is_surrendered() {
            missed += 1;
            if missed >= 2 && !degraded {
                degraded = true;
                log::warn!(
                    "this member lost its lease (cut off from the majority): its subscribers are told"
                );
                listener.do_send(HealthChanged(Health::Degraded));
            }
        }
    }
}
