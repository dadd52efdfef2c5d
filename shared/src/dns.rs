//! Where a cluster's master DNS record is published. The record itself (name, address, TTL) is
//! always kept in PostgreSQL with the cluster and served by `GET /v1/clusters/{name}`; a
//! provider publishes it. One provider today, `store`: the PostgreSQL record is the published
//! one (clients, or a DNS server's backend, read it from the API). A real DNS service (Route53
//! comes next) implements [`DnsProvider`] and is picked with `SA_DNS_PROVIDER`.

use std::sync::Arc;

use futures::future::BoxFuture;
use sqlx::PgPool;

use crate::{config::ConfigError, db::clusters, Config};

/// An A record: `name` → `address`, cached by resolvers for `ttl` seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub address: String,
    pub ttl: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("DNS provider {provider}: {reason}")]
pub struct DnsError {
    pub provider: &'static str,
    pub reason: String,
}

pub trait DnsProvider: Send + Sync {
    fn name(&self) -> &'static str;
    /// Make `record` the answer for its name; done when the provider has accepted it.
    fn publish<'a>(
        &'a self,
        cluster: &'a str,
        record: &'a Record,
    ) -> BoxFuture<'a, Result<(), DnsError>>;
}

/// The provider `SA_DNS_PROVIDER` names.
pub fn provider(cfg: &Config, pool: PgPool) -> Result<Arc<dyn DnsProvider>, ConfigError> {
    match cfg.dns_provider.as_str() {
        "store" => Ok(Arc::new(Postgres(pool))),
        other => Err(ConfigError::Invalid {
            var: "SA_DNS_PROVIDER",
            value: other.into(),
            reason: "unknown DNS provider (supported: store)".into(),
        }),
    }
}

/// The record kept in PostgreSQL is the published one.
pub struct Postgres(pub PgPool);

impl DnsProvider for Postgres {
    fn name(&self) -> &'static str {
        "store"
    }

    fn publish<'a>(
        &'a self,
        cluster: &'a str,
        record: &'a Record,
    ) -> BoxFuture<'a, Result<(), DnsError>> {
        Box::pin(async move {
            clusters::set_dns(&self.0, cluster, &record.address)
                .await
                .map_err(|e| DnsError {
                    provider: "store",
                    reason: e.to_string(),
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unknown_provider_is_a_configuration_error() {
        let pool = PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").unwrap();
        let cfg = Config {
            dns_provider: "route66".into(),
            ..Config::default()
        };
        let err = provider(&cfg, pool.clone()).err().expect("refused");
        assert!(err.to_string().contains("SA_DNS_PROVIDER"), "{err}");
        assert_eq!(provider(&Config::default(), pool).unwrap().name(), "store");
    }
}
