//! Which backups of a lineage to keep, as RightScale did it: the union of the last N, one per
//! day for D days, one per week for W weeks, one per month for M months, one per year for Y
//! years (each: the newest backup of that period). The newest committed backup is always kept;
//! an uncommitted one goes only once a newer committed one exists and its own run has ended.

use std::collections::HashSet;

use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    pub last: usize,
    pub daily: usize,
    pub weekly: usize,
    pub monthly: usize,
    pub yearly: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            last: 60,
            daily: 14,
            weekly: 6,
            monthly: 12,
            yearly: 2,
        }
    }
}

/// A backup as retention sees it.
#[derive(Clone, Debug)]
pub struct Item {
    pub id: i64,
    pub committed: bool,
    /// When it was taken (its start).
    pub at: DateTime<Utc>,
    /// Its backup action is still queued or running.
    pub running: bool,
}

/// The calendar period a time falls in (year, day/week/month number).
type Period = fn(&DateTime<Utc>) -> (i32, u32);

/// The ids to delete.
pub fn expired(items: &[Item], policy: &Policy) -> Vec<i64> {
    let mut committed: Vec<&Item> = items.iter().filter(|i| i.committed).collect();
    committed.sort_by(|a, b| b.at.cmp(&a.at).then(b.id.cmp(&a.id)));
    let mut keep: HashSet<i64> = committed
        .iter()
        .take(policy.last.max(1))
        .map(|i| i.id)
        .collect();
    let periods: [(usize, Period); 4] = [
        (policy.daily, |t| (t.year(), t.ordinal())),
        (policy.weekly, |t| {
            let w = t.iso_week();
            (w.year(), w.week())
        }),
        (policy.monthly, |t| (t.year(), t.month())),
        (policy.yearly, |t| (t.year(), 0)),
    ];
    for (count, period) in periods {
        let mut seen = HashSet::new();
        for b in &committed {
            if seen.len() >= count {
                break;
            }
            if seen.insert(period(&b.at)) {
                keep.insert(b.id);
            }
        }
    }
    let newest_committed = committed.first().map(|b| b.at);
    let mut out: Vec<i64> = items
        .iter()
        .filter(|i| !keep.contains(&i.id))
        .filter(|i| {
            i.committed || (!i.running && newest_committed.is_some_and(|newest| newest > i.at))
        })
        .map(|i| i.id)
        .collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn every(hours: i64, n: i64) -> Vec<Item> {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 5, 0).unwrap();
        (0..n)
            .map(|i| Item {
                id: i + 1,
                committed: true,
                at: start + Duration::hours(hours * i),
                running: false,
            })
            .collect()
    }

    fn kept(items: &[Item], p: &Policy) -> Vec<i64> {
        let gone = expired(items, p);
        items
            .iter()
            .map(|i| i.id)
            .filter(|id| !gone.contains(id))
            .collect()
    }

    #[test]
    fn keeps_the_last_n_and_one_per_day() {
        // Hourly backups for 3 days: the last 5, plus the newest of each of the last 2 days.
        let items = every(1, 72);
        let p = Policy {
            last: 5,
            daily: 2,
            weekly: 0,
            monthly: 0,
            yearly: 0,
        };
        // Day 3 = ids 49..=72 (newest 72, in the last 5); day 2's newest is id 48.
        assert_eq!(kept(&items, &p), vec![48, 68, 69, 70, 71, 72]);
    }

    #[test]
    fn weekly_monthly_yearly_are_the_newest_of_their_period() {
        // Daily backups for 400 days from 2026-01-01.
        let items = every(24, 400);
        let p = Policy {
            last: 1,
            daily: 0,
            weekly: 0,
            monthly: 2,
            yearly: 2,
        };
        // Newest: 2027-02-04 (id 400). Months: Feb 2027 (400), Jan 2027 (id 396 = 01-31).
        // Years: 2027 (400), 2026 (id 365 = 2026-12-31).
        assert_eq!(kept(&items, &p), vec![365, 396, 400]);
    }

    #[test]
    fn the_newest_committed_is_kept_and_uncommitted_go_only_behind_a_newer_committed_one() {
        let t = |h| Utc.with_ymd_and_hms(2026, 3, 1, h, 0, 0).unwrap();
        let items = vec![
            Item {
                id: 1,
                committed: true,
                at: t(1),
                running: false,
            },
            Item {
                id: 2,
                committed: false,
                at: t(2),
                running: false,
            }, // failed upload
            Item {
                id: 3,
                committed: true,
                at: t(3),
                running: false,
            },
            Item {
                id: 4,
                committed: false,
                at: t(4),
                running: true,
            }, // in progress
            Item {
                id: 5,
                committed: false,
                at: t(5),
                running: false,
            }, // no newer committed
        ];
        let p = Policy {
            last: 0,
            daily: 0,
            weekly: 0,
            monthly: 0,
            yearly: 0,
        };
        assert_eq!(expired(&items, &p), vec![1, 2]);
    }
}
