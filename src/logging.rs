//! The node's logger: `env_logger` with its filter, behind a throttle for
//! messages that repeat on a timer while a condition lasts. The HTTP
//! server logs a failed `accept` (out of descriptors, say) every time it
//! retries, twice a second; the throttle lets the first through, then at
//! most one every [`REPEAT_EVERY`], saying how many it held back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::{Log, Metadata, Record};

/// Targets whose errors repeat on a timer while their cause lasts.
const THROTTLED_TARGETS: [&str; 1] = ["actix_server::accept"];
/// How often a throttled message may repeat.
pub const REPEAT_EVERY: Duration = Duration::from_secs(10);

/// `--log-level` wins over `RUST_LOG`, which wins over the config file.
pub fn init(level: &str, from_flag: bool) {
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level));
    if from_flag {
        builder.parse_filters(level);
    }
    let inner = builder.build();
    let max_level = inner.filter();
    let logger = ThrottledLogger {
        inner,
        throttle: Mutex::new(Throttle::default()),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(max_level);
    }
}

struct ThrottledLogger {
    inner: env_logger::Logger,
    throttle: Mutex<Throttle>,
}

impl Log for ThrottledLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !THROTTLED_TARGETS.iter().any(|t| record.target().starts_with(t)) {
            return self.inner.log(record);
        }
        let verdict = self
            .throttle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(Instant::now());
        match verdict {
            Some(0) => self.inner.log(record),
            Some(held) => self.inner.log(
                &Record::builder()
                    .args(format_args!(
                        "{} ({held} more like it in the last {REPEAT_EVERY:?})",
                        record.args()
                    ))
                    .level(record.level())
                    .target(record.target())
                    .build(),
            ),
            None => {}
        }
    }

    fn flush(&self) {
        self.inner.flush()
    }
}

/// Lets one message through per [`REPEAT_EVERY`].
#[derive(Default)]
pub struct Throttle {
    last: Option<Instant>,
    held: u64,
}

impl Throttle {
    /// `Some(held)`: log it, with how many were held back since the last
    /// one logged; `None`: hold it back.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < REPEAT_EVERY => {
                self.held += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_per_period_with_the_count_held_back() {
        let mut throttle = Throttle::default();
        let start = Instant::now();
        assert_eq!(throttle.admit(start), Some(0));
        for i in 1..=19 {
            assert_eq!(throttle.admit(start + Duration::from_millis(500 * i)), None);
        }
        assert_eq!(throttle.admit(start + REPEAT_EVERY), Some(19));
        assert_eq!(
            throttle.admit(start + REPEAT_EVERY + Duration::from_secs(1)),
            None
        );
    }
}
