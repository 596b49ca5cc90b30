//! What a subscription wants of its cache: every key, one key, or the keys
//! under a prefix (the grid's [`KeyFilter`], which members also send each
//! other), read from a client's filter spec.

use std::sync::Arc;

use crate::grid::{check_prefix, parse_key, GridError};
use crate::protocol::ws::FilterSpec;

pub use crate::grid::KeyFilter as Filter;

/// `{}` is every key, as is an empty prefix; naming both a key and a
/// prefix is an error.
pub fn from_spec(spec: &FilterSpec) -> Result<Filter, GridError> {
    match (&spec.key, &spec.prefix) {
        (Some(_), Some(_)) => Err(GridError::BadRequest(
            "a filter has a key or a prefix, not both".into(),
        )),
        (Some(key), None) => Ok(Filter::Key(parse_key(key)?)),
        (None, Some(prefix)) if prefix.is_empty() => Ok(Filter::All),
        (None, Some(prefix)) => {
            check_prefix(prefix)?;
            Ok(Filter::Prefix(Arc::from(prefix.as_str())))
        }
        (None, None) => Ok(Filter::All),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(key: Option<&str>, prefix: Option<&str>) -> FilterSpec {
        FilterSpec {
            key: key.map(String::from),
            prefix: prefix.map(String::from),
        }
    }

    #[test]
    fn filters_match_what_they_say() {
        let prefix = from_spec(&spec(None, Some("match/"))).unwrap();
        assert!(prefix.matches("match/7") && !prefix.matches("matc") && !prefix.matches("team/1"));
        let key = from_spec(&spec(Some("match/7"), None)).unwrap();
        assert!(key.matches("match/7") && !key.matches("match/70"));
        assert_eq!(from_spec(&spec(None, Some(""))).unwrap(), Filter::All);
        assert_eq!(from_spec(&spec(None, None)).unwrap(), Filter::All);
        assert!(from_spec(&spec(Some("a"), Some("b"))).is_err());
        assert!(from_spec(&spec(Some(""), None)).is_err());
    }
}
