//! How many connections the node can hold. Every socket is a file
//! descriptor, so the limit that matters is the process's descriptor limit:
//! the node raises its soft limit to the hard one, keeps a reserve for
//! everything that is not a client (logs, the listening socket, the actor
//! threads' wakers, links to other nodes), stops accepting past the rest
//! (so `accept` never fails for want of descriptors), and lets long-lived
//! push connections (WebSockets, SSE streams, held polls) take all of that
//! but a share kept for plain requests: a node full of subscribers still
//! answers `/healthz`, `/metrics` and a new handshake's 503.

/// What the descriptor limit leaves for clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionBudget {
    /// The process's descriptor limit.
    pub fd_limit: u64,
    /// Connections each HTTP worker accepts at most; past them, new ones
    /// wait in the kernel's backlog instead of failing `accept`.
    pub per_worker: usize,
    /// Push connections the node holds at once: the configured
    /// `max_connections`, or less when descriptors are short.
    pub push_connections: usize,
}

/// Descriptors kept for what is not a client connection, at most.
const RESERVE: u64 = 256;
/// Accepted connections kept for plain requests, at least.
const REQUEST_ROOM: usize = 16;

impl ConnectionBudget {
    /// Splits `fd_limit` for `workers` HTTP workers and a configured
    /// `max_connections`.
    pub fn plan(fd_limit: u64, max_connections: usize, workers: usize) -> ConnectionBudget {
        let reserve = RESERVE.min(fd_limit / 4);
        let accepted = usize::try_from(fd_limit - reserve).unwrap_or(usize::MAX);
        let workers = workers.max(1);
        let per_worker = (accepted / workers).max(1);
        // A sixteenth of what is accepted, so plain requests keep a share
        // that grows with the node.
        let room = (accepted / 16).max(REQUEST_ROOM);
        let push_connections = max_connections.min(accepted.saturating_sub(room)).max(1);
        ConnectionBudget {
            fd_limit,
            per_worker,
            push_connections,
        }
    }

    /// The budget of this process: its soft descriptor limit raised as far
    /// as the hard one allows.
    pub fn of_this_process(max_connections: usize, workers: usize) -> ConnectionBudget {
        let fd_limit = match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(limit) => limit,
            Err(err) => {
                log::warn!("could not raise the file descriptor limit: {err}");
                rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
            }
        };
        ConnectionBudget::plan(fd_limit, max_connections, workers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_limit_leaves_the_configured_maximum() {
        let budget = ConnectionBudget::plan(1 << 20, 100_000, 2);
        assert_eq!(budget.push_connections, 100_000);
        assert_eq!(budget.per_worker, ((1 << 20) - 256) / 2);
    }

    #[test]
    fn a_short_limit_caps_push_connections_below_what_is_accepted() {
        let budget = ConnectionBudget::plan(20_000, 100_000, 2);
        let accepted = 2 * budget.per_worker;
        assert_eq!(accepted, 20_000 - 256);
        assert_eq!(budget.push_connections, accepted - accepted / 16);
        assert!(
            accepted as u64 + 256 <= 20_000,
            "accept never runs out of descriptors"
        );
    }

    #[test]
    fn a_tiny_limit_still_keeps_room_for_requests() {
        let budget = ConnectionBudget::plan(256, 100_000, 2);
        // 64 reserved, 192 accepted, 16 of them for plain requests.
        assert_eq!((budget.per_worker, budget.push_connections), (96, 176));
        let budget = ConnectionBudget::plan(8, 100_000, 4);
        assert!(budget.push_connections >= 1 && budget.per_worker >= 1);
    }
}
