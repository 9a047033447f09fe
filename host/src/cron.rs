//! Cron schedules: when a cron expression (5 fields, or 6 with seconds) next fires in an IANA
//! time zone, following daylight-saving changes — no I/O, used by the schedule service and the
//! API.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::manifest::parse_cron;

/// A parsed cron expression in its time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    schedule: cron::Schedule,
    timezone: Tz,
}

impl CronSchedule {
    /// Parses `expression` in `timezone` (an IANA name such as `Europe/Paris`; `UTC`).
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, String> {
        let schedule = parse_cron(expression)
            .map_err(|e| format!("cron expression `{expression}` is invalid: {e}"))?;
        let timezone = Tz::from_str(timezone).map_err(|_| {
            format!("unknown time zone `{timezone}`: use an IANA name such as Europe/Paris")
        })?;
        Ok(Self { schedule, timezone })
    }

    /// The first tick strictly after `after`, if the expression ever fires again.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule
            .after(&after.with_timezone(&self.timezone))
            .next()
            .map(|tick| tick.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("valid time")
            .with_timezone(&Utc)
    }

    #[test]
    fn five_and_six_fields() {
        let daily = CronSchedule::parse("30 9 * * *", "UTC").expect("valid");
        assert_eq!(
            daily.next_after(utc("2026-03-01T10:00:00Z")),
            Some(utc("2026-03-02T09:30:00Z"))
        );
        let every_second = CronSchedule::parse("* * * * * *", "UTC").expect("valid");
        assert_eq!(
            every_second.next_after(utc("2026-03-01T10:00:00Z")),
            Some(utc("2026-03-01T10:00:01Z"))
        );
    }

    #[test]
    fn local_time_follows_daylight_saving() {
        // 09:00 in New York is 14:00 UTC in winter and 13:00 UTC in summer; DST began on
        // 2026-03-08.
        let nine = CronSchedule::parse("0 9 * * *", "America/New_York").expect("valid");
        assert_eq!(
            nine.next_after(utc("2026-03-06T15:00:00Z")),
            Some(utc("2026-03-07T14:00:00Z"))
        );
        assert_eq!(
            nine.next_after(utc("2026-03-07T15:00:00Z")),
            Some(utc("2026-03-08T13:00:00Z"))
        );
        // 02:30 does not exist on the day clocks jump from 02:00 to 03:00: no tick that day.
        let half_two = CronSchedule::parse("30 2 * * *", "America/New_York").expect("valid");
        let next = half_two
            .next_after(utc("2026-03-08T05:00:00Z"))
            .expect("fires again");
        assert!(next > utc("2026-03-08T12:00:00Z"), "{next}");
    }

    #[test]
    fn bad_expressions_and_zones_are_named() {
        let error = CronSchedule::parse("61 * * * *", "UTC").expect_err("bad minute");
        assert!(error.contains("`61 * * * *`"), "{error}");
        let error = CronSchedule::parse("* * * * *", "Mars/Olympus").expect_err("bad zone");
        assert!(
            error.contains("unknown time zone `Mars/Olympus`"),
            "{error}"
        );
    }
}
