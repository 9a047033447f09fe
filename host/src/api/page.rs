//! Keyset pagination: `?limit=&cursor=`, where the cursor is an opaque hex string of the
//! (creation time, key) of the last row returned; lists are newest first.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;

use super::error::ApiError;
use crate::db::PageParams;

/// Rows per page unless asked.
pub const DEFAULT_LIMIT: i64 = 50;
/// Most rows per page.
pub const MAX_LIMIT: i64 = 1_000;

/// `?limit=&cursor=`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Rows per page, 1..=1000.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The page asked for, with one extra row to learn whether another page follows.
    pub fn params<K: std::str::FromStr>(&self) -> Result<PageParams<K>, ApiError> {
        let limit = self.limit()?;
        let before = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(cursor) => Some(decode(cursor)?),
        };
        Ok(PageParams {
            limit: limit + 1,
            before,
        })
    }

    /// The limit asked for.
    pub fn limit(&self) -> Result<i64, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if (1..=MAX_LIMIT).contains(&limit) {
            Ok(limit)
        } else {
            Err(ApiError::bad_request(
                "invalid_query",
                format!("limit must be between 1 and {MAX_LIMIT}, got {limit}"),
            ))
        }
    }
}

/// Cuts the extra row off `rows` and returns the cursor of the next page, if there is one.
pub fn finish<T>(
    rows: &mut Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> (DateTime<Utc>, String),
) -> Option<String> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() <= limit {
        return None;
    }
    rows.truncate(limit);
    rows.last().map(|row| {
        let (at, key) = key(row);
        encode(at, &key)
    })
}

/// The cursor of a row.
pub fn encode(at: DateTime<Utc>, key: &str) -> String {
    hex::encode(format!(
        "{}|{key}",
        at.to_rfc3339_opts(SecondsFormat::Micros, true)
    ))
}

fn decode<K: std::str::FromStr>(cursor: &str) -> Result<(DateTime<Utc>, K), ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "invalid_cursor",
            "invalid cursor: pass the `next_cursor` of the previous page unchanged",
        )
    };
    let text = hex::decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(invalid)?;
    let (at, key) = text.split_once('|').ok_or_else(invalid)?;
    let at = DateTime::parse_from_rfc3339(at).map_err(|_| invalid())?;
    let key = key.parse().map_err(|_| invalid())?;
    Ok((at.with_timezone(&Utc), key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips() {
        let at = DateTime::parse_from_rfc3339("2025-01-02T03:04:05.123456Z")
            .expect("time")
            .with_timezone(&Utc);
        let id = uuid::Uuid::now_v7();
        let query = PageQuery {
            limit: Some(10),
            cursor: Some(encode(at, &id.to_string())),
        };
        let params: PageParams<uuid::Uuid> = query.params().expect("valid");
        assert_eq!(params.before, Some((at, id)));
        assert_eq!(params.limit, 11);
    }

    #[test]
    fn bad_cursors_and_limits_are_rejected() {
        let bad = PageQuery {
            limit: None,
            cursor: Some("zz".into()),
        };
        assert_eq!(
            bad.params::<String>().expect_err("bad").code,
            "invalid_cursor"
        );
        let zero = PageQuery {
            limit: Some(0),
            cursor: None,
        };
        assert_eq!(
            zero.params::<String>().expect_err("bad").code,
            "invalid_query"
        );
    }

    #[test]
    fn the_extra_row_becomes_the_next_cursor() {
        let at = Utc::now();
        let mut rows = vec![1, 2, 3];
        let next = finish(&mut rows, 2, |n| (at, n.to_string()));
        assert_eq!(rows, vec![1, 2]);
        assert_eq!(next, Some(encode(at, "2")));
        assert_eq!(finish(&mut rows, 2, |n| (at, n.to_string())), None);
    }
}
