//! What a subscription wants of its cache: every key, one key, or the keys
//! under a prefix.

use std::sync::Arc;

use crate::grid::{check_prefix, parse_key, GridError, Key};
use crate::protocol::ws::FilterSpec;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    All,
    Key(Key),
    Prefix(Arc<str>),
}

impl Filter {
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

    pub fn matches(&self, key: &str) -> bool {
        match self {
            Filter::All => true,
            Filter::Key(k) => **k == *key,
            Filter::Prefix(p) => key.starts_with(&**p),
        }
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
        let prefix = Filter::from_spec(&spec(None, Some("match/"))).unwrap();
        assert!(prefix.matches("match/7") && !prefix.matches("matc") && !prefix.matches("team/1"));
        let key = Filter::from_spec(&spec(Some("match/7"), None)).unwrap();
        assert!(key.matches("match/7") && !key.matches("match/70"));
        assert_eq!(Filter::from_spec(&spec(None, Some(""))).unwrap(), Filter::All);
        assert_eq!(Filter::from_spec(&spec(None, None)).unwrap(), Filter::All);
        assert!(Filter::from_spec(&spec(Some("a"), Some("b"))).is_err());
        assert!(Filter::from_spec(&spec(Some(""), None)).is_err());
    }
}
