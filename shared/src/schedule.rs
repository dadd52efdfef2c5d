//! When a schedule's slots fall: a cron expression (5 fields, or 6–7 with seconds first and
//! years last) or a fixed interval aligned to the epoch (`every_s = 600` fires at :00, :10...).
//! A slot is identified by its nominal time; jitter only delays when it fires.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};

use crate::validate::FieldError;

#[derive(Clone, Debug)]
pub enum Timing {
    Cron(Box<cron::Schedule>),
    Every(i64),
}

impl Timing {
    pub fn parse(cron_expr: Option<&str>, every_s: Option<i64>) -> Result<Timing, FieldError> {
        match (cron_expr, every_s) {
            (Some(_), Some(_)) => Err(FieldError::new("cron", "give cron or every_s, not both")),
            (None, None) => Err(FieldError::new("cron", "give cron or every_s")),
            (None, Some(s)) if s > 0 && s <= 366 * 86400 => Ok(Timing::Every(s)),
            (None, Some(_)) => Err(FieldError::new(
                "every_s",
                "must be between 1 and 31622400 seconds",
            )),
            (Some(expr), None) => {
                let fields = expr.split_whitespace().count();
                let full = match fields {
                    5 => format!("0 {expr}"),
                    6 | 7 => expr.to_string(),
                    _ => {
                        return Err(FieldError::new(
                            "cron",
                            "must have 5 fields (min hour day month weekday), or 6-7 with seconds first",
                        ))
                    }
                };
                let s = cron::Schedule::from_str(&full)
                    .map_err(|e| FieldError::new("cron", format!("not a cron expression: {e}")))?;
                if s.upcoming(Utc).next().is_none() {
                    return Err(FieldError::new("cron", "never fires"));
                }
                Ok(Timing::Cron(Box::new(s)))
            }
        }
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Timing::Every(s) => {
                let k = t.timestamp().div_euclid(*s) + 1;
                Utc.timestamp_opt(k * s, 0).single()
            }
            Timing::Cron(c) => c.after(&t).next(),
        }
    }

    /// The last slot at or before `now`, starting the search at slot `from` (a slot itself).
    /// `from` when no later slot has passed.
    pub fn last_at_or_before(&self, from: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Timing::Every(s) => {
                let k = now.timestamp().div_euclid(*s);
                Utc.timestamp_opt(k * s, 0)
                    .single()
                    .unwrap_or(from)
                    .max(from)
            }
            Timing::Cron(c) => {
                let mut last = from;
                // Bounded: a per-second schedule after a day of downtime is 86,400 steps.
                for t in c.after(&from).take(1_000_000) {
                    if t > now {
                        break;
                    }
                    last = t;
                }
                last
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn intervals_are_aligned_to_the_epoch() {
        let t = Timing::parse(None, Some(600)).unwrap();
        assert_eq!(
            t.next_after(at("2026-11-28T16:03:00Z")),
            Some(at("2026-11-28T16:10:00Z"))
        );
        assert_eq!(
            t.next_after(at("2026-11-28T16:10:00Z")),
            Some(at("2026-11-28T16:20:00Z"))
        );
        assert_eq!(
            t.last_at_or_before(at("2026-11-28T16:10:00Z"), at("2026-11-28T17:55:00Z")),
            at("2026-11-28T17:50:00Z")
        );
    }

    #[test]
    fn cron_with_and_without_seconds() {
        let five = Timing::parse(Some("7 3 * * *"), None).unwrap();
        assert_eq!(
            five.next_after(at("2026-11-28T16:00:00Z")),
            Some(at("2026-11-29T03:07:00Z"))
        );
        let secs = Timing::parse(Some("*/1 * * * * *"), None).unwrap();
        assert_eq!(
            secs.next_after(at("2026-11-28T16:00:00Z")),
            Some(at("2026-11-28T16:00:01Z"))
        );
        assert_eq!(
            secs.last_at_or_before(at("2026-11-28T16:00:01Z"), at("2026-11-28T16:00:10.5Z")),
            at("2026-11-28T16:00:10Z")
        );
        assert_eq!(
            secs.last_at_or_before(at("2026-11-28T16:00:11Z"), at("2026-11-28T16:00:10.5Z")),
            at("2026-11-28T16:00:11Z"),
            "no later slot has passed"
        );
    }

    #[test]
    fn bad_timings_name_the_field() {
        assert_eq!(
            Timing::parse(Some("* * *"), None).unwrap_err().field,
            "cron"
        );
        assert_eq!(
            Timing::parse(Some("61 * * * *"), None).unwrap_err().field,
            "cron"
        );
        assert_eq!(Timing::parse(None, Some(0)).unwrap_err().field, "every_s");
        assert_eq!(
            Timing::parse(Some("* * * * *"), Some(5)).unwrap_err().field,
            "cron"
        );
    }
}
