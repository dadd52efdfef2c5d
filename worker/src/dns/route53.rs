//! Route 53: a record changed by one `ChangeResourceRecordSets` batch that deletes the old value
//! and creates the new one. The batch is atomic, and Route 53 fails it when the DELETE does not
//! match the current value, so a stale updater changes nothing; the current value is also read
//! first (emulators such as moto do not check the DELETE). Then `GetChange` is polled every
//! second until `INSYNC` (the SDK's waiter polls every 30 s).

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use aws_sdk_route53::{
    config::{Credentials, Region},
    types::{
        Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord, ResourceRecordSet, RrType,
    },
    Client,
};

use super::{Swapped, UpdateError};

pub struct Target {
    client: Client,
    zone_id: String,
}

fn stale(name: &str, expected: Option<Ipv4Addr>, found: String) -> UpdateError {
    UpdateError::Stale {
        name: fqdn(name),
        expected: expected.map_or("nothing".into(), |a| a.to_string()),
        found,
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> UpdateError {
    UpdateError::Failed(format!("route53 {what}: {e}"))
}

/// `name` with its final dot, as Route 53 lists names.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

impl Target {
    /// A client for hosted zone `zone_id`: at `endpoint` if given (an emulator), with these
    /// credentials (access key id, secret) or the AWS default chain.
    pub async fn new(
        endpoint: Option<&str>,
        region: &str,
        credentials: Option<(String, String)>,
        zone_id: &str,
    ) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new(region.to_string()));
        if let Some((id, secret)) = credentials {
            loader = loader.credentials_provider(Credentials::new(
                id,
                secret,
                None,
                None,
                "serveractions-cluster",
            ));
        }
        let base = loader.load().await;
        let mut b = aws_sdk_route53::config::Builder::from(&base).timeout_config(
            aws_sdk_route53::config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(20))
                .build(),
        );
        if let Some(ep) = endpoint {
            b = b.endpoint_url(ep);
        }
        Target {
            client: Client::from_conf(b.build()),
            zone_id: zone_id.to_string(),
        }
    }

    pub async fn current(&self, name: &str) -> Result<Option<Ipv4Addr>, UpdateError> {
        let name = fqdn(name);
        let out = self
            .client
            .list_resource_record_sets()
            .hosted_zone_id(&self.zone_id)
            .start_record_name(&name)
            .start_record_type(RrType::A)
            .max_items(1)
            .send()
            .await
            .map_err(|e| {
                failed(
                    "ListResourceRecordSets",
                    aws_sdk_route53::error::DisplayErrorContext(e),
                )
            })?;
        Ok(out
            .resource_record_sets()
            .iter()
            .find(|s| fqdn(s.name()) == name && *s.r#type() == RrType::A)
            .and_then(|s| s.resource_records().first())
            .and_then(|r| r.value().parse().ok()))
    }

    pub async fn swap(
        &self,
        name: &str,
        expected: Option<Ipv4Addr>,
        new: Ipv4Addr,
        ttl: u32,
    ) -> Result<Swapped, UpdateError> {
        let started = Instant::now();
        let found = self.current(name).await?;
        if found != expected {
            let found = found.map_or("nothing".into(), |a| a.to_string());
            return Err(stale(name, expected, found));
        }
        let set = |a: Ipv4Addr| {
            let record = ResourceRecord::builder()
                .value(a.to_string())
                .build()
                .map_err(|e| failed("record", e))?;
            ResourceRecordSet::builder()
                .name(fqdn(name))
                .r#type(RrType::A)
                .ttl(i64::from(ttl))
                .resource_records(record)
                .build()
                .map_err(|e| failed("record set", e))
        };
        let change = |action: ChangeAction, a: Ipv4Addr| {
            Change::builder()
                .action(action)
                .resource_record_set(set(a)?)
                .build()
                .map_err(|e| failed("change", e))
        };
        let mut batch = ChangeBatch::builder().comment("ServerActions: master record");
        if let Some(old) = expected {
            batch = batch.changes(change(ChangeAction::Delete, old)?);
        }
        let batch = batch
            .changes(change(ChangeAction::Create, new)?)
            .build()
            .map_err(|e| failed("change batch", e))?;
        let out = self
            .client
            .change_resource_record_sets()
            .hosted_zone_id(&self.zone_id)
            .change_batch(batch)
            .send()
            .await
            .map_err(|e| {
                let invalid = e
                    .as_service_error()
                    .is_some_and(|s| s.is_invalid_change_batch());
                if invalid {
                    stale(
                        name,
                        expected,
                        "another value (Route 53 refused the batch)".into(),
                    )
                } else {
                    failed(
                        "ChangeResourceRecordSets",
                        aws_sdk_route53::error::DisplayErrorContext(e),
                    )
                }
            })?;
        let submitted = started.elapsed();
        let id = out
            .change_info()
            .map(|c| c.id().to_string())
            .ok_or_else(|| failed("ChangeResourceRecordSets", "no change id"))?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let change =
                self.client.get_change().id(&id).send().await.map_err(|e| {
                    failed("GetChange", aws_sdk_route53::error::DisplayErrorContext(e))
                })?;
            if change
                .change_info()
                .is_some_and(|c| *c.status() == ChangeStatus::Insync)
            {
                return Ok(Swapped {
                    submitted,
                    visible: started.elapsed(),
                });
            }
            if Instant::now() > deadline {
                return Err(failed(
                    "GetChange",
                    format!("change {id} not INSYNC after 120 s"),
                ));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
