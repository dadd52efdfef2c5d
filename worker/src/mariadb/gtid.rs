//! MariaDB GTID positions (`0-1-105,1-2-7`): per replication domain, the last transaction's
//! origin server id and sequence number. Positions of one cluster are compared domain by
//! domain: one covers another when it has at least its sequence number in every domain, from
//! the same origin when the numbers are equal.

use std::{collections::BTreeMap, fmt};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Position(BTreeMap<u32, (u32, u64)>);

/// One GTID: domain, origin server, sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

impl Position {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut it = part.splitn(3, '-').map(str::parse::<u64>);
            let (Some(Ok(d)), Some(Ok(srv)), Some(Ok(seq))) = (it.next(), it.next(), it.next())
            else {
                return Err(format!("not a GTID position: {s:?}"));
            };
            let (Ok(d), Ok(srv)) = (u32::try_from(d), u32::try_from(srv)) else {
                return Err(format!("not a GTID position: {s:?}"));
            };
            map.insert(d, (srv, seq));
        }
        Ok(Self(map))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What `self` has that `other` does not: per domain, its last GTID where it is further
    /// on, or where it is at the same number from another origin (divergence).
    pub fn beyond(&self, other: &Position) -> Vec<Gtid> {
        self.gtids()
            .filter(|g| match other.0.get(&g.domain) {
                None => true,
                Some(&(srv, seq)) => g.seq > seq || (g.seq == seq && g.server != srv),
            })
            .collect()
    }

    /// `self` has everything `other` has.
    pub fn covers(&self, other: &Position) -> bool {
        other.beyond(self).is_empty()
    }

    /// How far along, summed over domains: orders positions that cover one another.
    pub fn total(&self) -> u64 {
        self.0.values().map(|&(_, seq)| seq).sum()
    }

    fn gtids(&self) -> impl Iterator<Item = Gtid> + '_ {
        self.0.iter().map(|(&domain, &(server, seq))| Gtid {
            domain,
            server,
            seq,
        })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(empty)");
        }
        let parts: Vec<String> = self.gtids().map(|g| g.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

/// `a, b, c` of GTIDs.
pub fn list(gtids: &[Gtid]) -> String {
    gtids
        .iter()
        .map(Gtid::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Position {
        Position::parse(s).unwrap()
    }

    #[test]
    fn positions_parse_and_print_back() {
        assert_eq!(p("0-1-105,1-2-7").to_string(), "0-1-105,1-2-7");
        assert_eq!(p(" 1-2-7 , 0-1-105").to_string(), "0-1-105,1-2-7");
        assert!(p("").is_empty());
        assert_eq!(p("").to_string(), "(empty)");
        for bad in ["0-1", "a-b-c", "0-1-2-3x", "-1-2", "99999999999-1-1"] {
            assert!(Position::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_position_further_on_covers_one_behind_and_not_the_other_way() {
        let (ahead, behind) = (p("0-1-120"), p("0-1-100"));
        assert!(ahead.covers(&behind));
        assert!(!behind.covers(&ahead));
        assert_eq!(list(&ahead.beyond(&behind)), "0-1-120");
        assert!(behind.beyond(&ahead).is_empty());
        assert!(ahead.total() > behind.total());
        // A domain the other lacks is beyond it.
        assert_eq!(list(&p("0-1-5,1-3-2").beyond(&p("0-1-5"))), "1-3-2");
    }

    #[test]
    fn the_same_number_from_another_origin_is_divergence_both_ways() {
        let (a, b) = (p("0-1-101"), p("0-3-101"));
        assert!(!a.covers(&b) && !b.covers(&a));
        assert_eq!(list(&b.beyond(&a)), "0-3-101");
        assert!(p("0-1-101").covers(&p("0-1-101")));
    }
}
