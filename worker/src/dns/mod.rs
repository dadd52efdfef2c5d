//! The DNS providers a cluster may name for its master record, beyond the store: `rfc2136`
//! (any authoritative server, TSIG-signed dynamic updates) and `route53`. Each changes the
//! record by compare-and-swap from the address last published and waits until the change is
//! visible.

pub mod rfc2136;
pub mod route53;

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The record no longer holds the address this change expected: someone else moved it.
    #[error("{name} no longer points at {expected} (it points at {found}): a newer change won; not overwritten")]
    Stale {
        name: String,
        expected: String,
        found: String,
    },
    #[error("{0}")]
    Failed(String),
}

/// How long the change took: accepted by the provider, then visible.
pub struct Swapped {
    pub submitted: Duration,
    pub visible: Duration,
}

/// A cluster's own provider, ready to change its record.
pub enum Provider {
    Rfc2136(rfc2136::Target),
    Route53(route53::Target),
}

impl Provider {
    pub fn name(&self) -> &'static str {
        match self {
            Provider::Rfc2136(_) => "rfc2136",
            Provider::Route53(_) => "route53",
        }
    }

    /// The address `name` holds now, as the provider answers it.
    pub async fn current(&self, name: &str) -> Result<Option<std::net::Ipv4Addr>, UpdateError> {
        match self {
            Provider::Rfc2136(t) => t.current(name).await,
            Provider::Route53(t) => t.current(name).await,
        }
    }

    /// Point `name` at `new` if it holds `expected` (`None`: nothing), then wait until the
    /// change is visible.
    pub async fn swap(
        &self,
        name: &str,
        expected: Option<std::net::Ipv4Addr>,
        new: std::net::Ipv4Addr,
        ttl: u32,
    ) -> Result<Swapped, UpdateError> {
        match self {
            Provider::Rfc2136(t) => t.swap(name, expected, new, ttl).await,
            Provider::Route53(t) => t.swap(name, expected, new, ttl).await,
        }
    }
}
