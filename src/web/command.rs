//! A client's WebSocket op as a command: the pure step between decoding a
//! frame and running it. It checks the connection's access and the op's
//! fields (key, precondition, filter, resume positions), so the session
//! runs only what is valid; the fuzz entry point runs the same step. A grid
//! command is then queued at its partition by [`GridCommand::send`], and its
//! outcome becomes the reply by [`Outcome::message`].

use std::future::Future;
use std::pin::Pin;

use crate::auth::Access;
use crate::grid::segment::PutRequest;
use crate::grid::{parse_key, EntryView, Grid, GridError, JsonValue, Key, OpId, Precondition, Version};
use crate::protocol::ws::{ClientOp, RequestId, ServerMessage};
use crate::protocol::ErrorDetail;
use crate::push::filter::{self, Filter};
use crate::push::subscription::StartFrom;

/// What a valid op asks for.
#[derive(Debug)]
pub enum Command {
    Ping,
    /// Present a token; its grants replace the connection's.
    Auth {
        token: String,
    },
    Grid(GridCommand),
    Subscribe {
        cache: String,
        filter: Filter,
        from: StartFrom,
    },
    Unsubscribe {
        sub: String,
    },
}

/// A read or write of one entry.
#[derive(Debug)]
pub enum GridCommand {
    Get {
        cache: String,
        key: Key,
    },
    Put {
        cache: String,
        key: Key,
        value: JsonValue,
        precondition: Precondition,
        lifespan_ms: Option<u64>,
        op: Option<OpId>,
    },
    Remove {
        cache: String,
        key: Key,
        precondition: Precondition,
        op: Option<OpId>,
    },
}

/// What a grid command came to.
#[derive(Debug)]
pub enum Outcome {
    Entry(EntryView),
    Written { version: Version, created: Option<bool> },
}

impl Command {
    /// Checks `op` against the contract and what `access` allows.
    pub fn from_op(op: ClientOp, access: &Access) -> Result<Command, ErrorDetail> {
        Ok(match op {
            ClientOp::Ping {} => Command::Ping,
            ClientOp::Auth { token } => Command::Auth { token },
            ClientOp::Get { cache, key } => {
                access.check_read(&cache)?;
                let key = parse_key(&key)?;
                Command::Grid(GridCommand::Get { cache, key })
            }
            ClientOp::Put {
                cache,
                key,
                value,
                if_version,
                if_absent,
                lifespan_ms,
                op_id,
            } => {
                access.check_write(&cache)?;
                let precondition = match (if_version, if_absent) {
                    (Some(_), true) => {
                        return Err(
                            GridError::BadRequest("use if_version or if_absent, not both".into()).into(),
                        )
                    }
                    (Some(v), false) => Precondition::IfVersion(Version(v)),
                    (None, true) => Precondition::IfAbsent,
                    (None, false) => Precondition::None,
                };
                let key = parse_key(&key)?;
                Command::Grid(GridCommand::Put {
                    cache,
                    key,
                    value,
                    precondition,
                    lifespan_ms,
                    op: op_id,
                })
            }
            ClientOp::Remove {
                cache,
                key,
                if_version,
                op_id,
            } => {
                access.check_write(&cache)?;
                let key = parse_key(&key)?;
                let precondition =
                    if_version.map_or(Precondition::None, |v| Precondition::IfVersion(Version(v)));
                Command::Grid(GridCommand::Remove {
                    cache,
                    key,
                    precondition,
                    op: op_id,
                })
            }
            ClientOp::Subscribe {
                cache,
                filter,
                snapshot,
                resume,
            } => {
                access.check_read(&cache)?;
                let filter = filter::from_spec(&filter)?;
                let from = match resume {
                    Some(resume) => StartFrom::Resume {
                        positions: resume.parse_positions().map_err(GridError::BadRequest)?,
                        incarnation: resume.incarnation,
                    },
                    None if snapshot => StartFrom::Snapshot,
                    None => StartFrom::Now,
                };
                Command::Subscribe { cache, filter, from }
            }
            ClientOp::Unsubscribe { sub } => Command::Unsubscribe { sub },
        })
    }
}

/// A grid command's reply, still to come.
pub type Pending = Pin<Box<dyn Future<Output = Result<Outcome, GridError>>>>;

impl GridCommand {
    /// Queues the command at its partition now (so one connection's
    /// commands reach a partition in the order it sent them, however their
    /// futures are polled) and returns its outcome to await.
    pub fn send(self, grid: &Grid) -> Pending {
        match self {
            GridCommand::Get { cache, key } => {
                let get = grid.get(&cache, key);
                Box::pin(async move { get.await.map(Outcome::Entry) })
            }
            GridCommand::Put {
                cache,
                key,
                value,
                precondition,
                lifespan_ms,
                op,
            } => {
                let request = PutRequest {
                    key,
                    value,
                    precondition,
                    lifespan_ms,
                    op,
                };
                let put = grid.put_request(&cache, request);
                Box::pin(async move {
                    let outcome = put.await?;
                    Ok(Outcome::Written {
                        version: outcome.version,
                        created: Some(outcome.created),
                    })
                })
            }
            GridCommand::Remove {
                cache,
                key,
                precondition,
                op,
            } => {
                let remove = grid.remove_once(&cache, key, precondition, op);
                Box::pin(async move {
                    let version = remove.await?;
                    Ok(Outcome::Written {
                        version,
                        created: None,
                    })
                })
            }
        }
    }
}

impl Outcome {
    /// The reply to the request `id`.
    pub fn message<'a>(&'a self, id: Option<&'a RequestId>) -> ServerMessage<'a> {
        match self {
            Outcome::Entry(entry) => ServerMessage::Entry {
                id,
                key: &entry.key,
                value: &entry.value,
                version: entry.version,
            },
            Outcome::Written { version, created } => ServerMessage::Ok {
                id,
                version: *version,
                created: *created,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthConfig, Authenticator, TokenConfig};
    use crate::protocol::codec::Format;
    use crate::protocol::decode::decode_request;
    use crate::protocol::ErrorCode;

    fn op(frame: &str) -> ClientOp {
        decode_request(Format::Json, frame.as_bytes(), 64).unwrap().op
    }

    fn reader_of(cache: &str) -> Access {
        let config = AuthConfig {
            tokens: vec![TokenConfig {
                token: "t".into(),
                read: vec![cache.into()],
                write: vec![],
            }],
            jwt_secret: None,
        };
        Authenticator::new(&config).authenticate(Some("t")).unwrap()
    }

    #[test]
    fn a_put_becomes_a_grid_write_with_its_precondition() {
        let command = Command::from_op(
            op(r#"{"op":"put","cache":"c","key":"k","value":1,"if_version":3}"#),
            &Access::Open,
        )
        .unwrap();
        assert!(matches!(
            command,
            Command::Grid(GridCommand::Put {
                precondition: Precondition::IfVersion(Version(3)),
                ..
            })
        ));
        let absent = Command::from_op(
            op(r#"{"op":"put","cache":"c","key":"k","value":1,"if_absent":true}"#),
            &Access::Open,
        );
        assert!(matches!(
            absent,
            Ok(Command::Grid(GridCommand::Put {
                precondition: Precondition::IfAbsent,
                ..
            }))
        ));
    }

    #[test]
    fn bad_fields_are_bad_requests() {
        for frame in [
            r#"{"op":"put","cache":"c","key":"k","value":1,"if_version":3,"if_absent":true}"#,
            r#"{"op":"get","cache":"c","key":""}"#,
            r#"{"op":"subscribe","cache":"c","filter":{"key":"a","prefix":"b"}}"#,
            r#"{"op":"subscribe","cache":"c","resume":{"positions":{"x":1}}}"#,
        ] {
            let err = Command::from_op(op(frame), &Access::Open).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadRequest, "{frame}");
        }
    }

    #[test]
    fn access_is_checked_before_anything_else() {
        let reader = reader_of("c");
        assert!(Command::from_op(op(r#"{"op":"get","cache":"c","key":"k"}"#), &reader).is_ok());
        for frame in [
            r#"{"op":"put","cache":"c","key":"k","value":1}"#,
            r#"{"op":"remove","cache":"c","key":""}"#,
            r#"{"op":"get","cache":"d","key":"k"}"#,
            r#"{"op":"subscribe","cache":"d"}"#,
        ] {
            let err = Command::from_op(op(frame), &reader).unwrap_err();
            assert_eq!(err.code, ErrorCode::Unauthorized, "{frame}");
        }
    }

    #[test]
    fn a_subscription_starts_where_it_asks() {
        let start = |frame| match Command::from_op(op(frame), &Access::Open).unwrap() {
            Command::Subscribe { from, .. } => from,
            other => panic!("{other:?}"),
        };
        assert!(matches!(
            start(r#"{"op":"subscribe","cache":"c"}"#),
            StartFrom::Snapshot
        ));
        assert!(matches!(
            start(r#"{"op":"subscribe","cache":"c","snapshot":false}"#),
            StartFrom::Now
        ));
        let resumed =
            start(r#"{"op":"subscribe","cache":"c","snapshot":false,"resume":{"positions":{"7":4}}}"#);
        assert!(
            matches!(resumed, StartFrom::Resume { positions: p, incarnation: None } if p[&crate::grid::SegmentId(7)].version == Version(4))
        );
    }
}
