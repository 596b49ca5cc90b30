//! Failure detection by gossip, with chitchat (Quickwit's scuttlebutt and
//! phi-accrual detector): every member gossips over UDP from its cluster
//! address and learns which runs of which members are live. Gossip only
//! discovers and suspects; what the topology is stays the topology log's
//! to decide (the leader proposes a `Leave` for a member gossip has given
//! up on, see `member`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use chitchat::transport::UdpTransport;
use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use tokio::sync::watch;

/// One run of one member: its node id and generation.
pub type Run = (String, u64);

pub struct Gossip {
    handle: ChitchatHandle,
    live: watch::Receiver<BTreeSet<Run>>,
}

impl Gossip {
    /// Gossips from `address` (UDP) with the members at `seeds`; a member
    /// silent for about `failure_timeout` drops out of [`Gossip::live`].
    pub async fn start(
        cluster_id: &str,
        run: Run,
        address: SocketAddr,
        seeds: &[SocketAddr],
        failure_timeout: Duration,
    ) -> Result<Self, String> {
        let interval = (failure_timeout / 10).max(Duration::from_millis(10));
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(run.0.as_str(), run.1, address),
            cluster_id: cluster_id.to_string(),
            gossip_interval: interval,
            listen_addr: address,
            seed_nodes: seeds.iter().map(ToString::to_string).collect(),
            // phi is the silence over the mean heartbeat interval: 6 of
            // them, about 60% of the failure timeout, leaves the rest for
            // the news to reach the leader and be agreed.
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: 6.0,
                sampling_window_size: 100,
                max_interval: failure_timeout,
                initial_interval: interval,
                dead_node_grace_period: failure_timeout * 20,
            },
            marked_for_deletion_grace_period: failure_timeout * 20,
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V1,
        };
        let handle = spawn_chitchat(config, Vec::new(), &UdpTransport)
            .await
            .map_err(|e| format!("gossip on {address}: {e}"))?;
        let mut nodes = handle.chitchat().lock().await.live_nodes_watcher();
        let (publish, live) = watch::channel(BTreeSet::new());
        tokio::spawn(async move {
            loop {
                let runs = nodes
                    .borrow_and_update()
                    .keys()
                    .map(|id| (id.node_id.to_string(), id.generation_id))
                    .collect();
                publish.send_replace(runs);
                if nodes.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Gossip { handle, live })
    }

    /// The runs of members gossip hears from now, this one included.
    pub fn live(&self) -> watch::Receiver<BTreeSet<Run>> {
        self.live.clone()
    }

    pub async fn stop(self) {
        let _ = self.handle.shutdown().await;
    }
}
