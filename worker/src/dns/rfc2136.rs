//! RFC 2136 dynamic updates signed with TSIG (HMAC-SHA256), to any authoritative server (Knot,
//! BIND, PowerDNS): a cluster's master record moved by compare-and-swap, then read back from
//! that server until it answers the new address.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use super::{Swapped, UpdateError};
use hickory_net::{
    client::{Client, ClientHandle},
    proto::{
        op::ResponseCode,
        rr::{
            rdata::tsig::TsigAlgorithm, rdata::A, DNSClass, Name, RData, Record, RecordType,
            TSigner,
        },
    },
    runtime::TokioRuntimeProvider,
    tcp::TcpClientStream,
    xfer::DnsMultiplexer,
};

/// Where and how to update: the authoritative server, the zone, the TSIG key.
pub struct Target {
    pub server: SocketAddr,
    pub zone: String,
    pub key_name: String,
    /// The key's raw bytes (its base64 decoded).
    pub key: Vec<u8>,
}

impl Target {
    async fn client(&self) -> Result<Client<TokioRuntimeProvider>, UpdateError> {
        let fail = |e: String| UpdateError::Failed(format!("{}: {e}", self.server));
        let name = Name::from_ascii(&self.key_name).map_err(|e| fail(e.to_string()))?;
        let signer = TSigner::new(self.key.clone(), TsigAlgorithm::HmacSha256, name, 300)
            .map_err(|e| fail(format!("TSIG key: {e}")))?;
        let limit = Duration::from_secs(5);
        let (connect, handle) = TcpClientStream::new(
            self.server,
            None,
            Some(limit),
            TokioRuntimeProvider::default(),
        );
        let stream = connect.await.map_err(|e| fail(e.to_string()))?;
        let mux = DnsMultiplexer::new(stream, handle)
            .with_timeout(limit)
            .with_signer(signer);
        let (client, background) = Client::from_sender(mux);
        tokio::spawn(background);
        Ok(client)
    }

    /// The A record `name` holds now, as the server answers it.
    pub async fn current(&self, name: &str) -> Result<Option<Ipv4Addr>, UpdateError> {
        let mut c = self.client().await?;
        query(&mut c, &self.fqdn(name)?).await
    }

    fn fqdn(&self, name: &str) -> Result<Name, UpdateError> {
        let zone = self.zone_name()?;
        let n = Name::from_ascii(name)
            .map_err(|e| UpdateError::Failed(format!("record name {name:?}: {e}")))?;
        let n = if n.is_fqdn() {
            n
        } else {
            n.append_domain(&zone)
                .map_err(|e| UpdateError::Failed(e.to_string()))?
        };
        if !zone.zone_of(&n) {
            return Err(UpdateError::Failed(format!(
                "record {n} is not in zone {zone}"
            )));
        }
        Ok(n)
    }

    fn zone_name(&self) -> Result<Name, UpdateError> {
        let mut z = Name::from_ascii(&self.zone)
            .map_err(|e| UpdateError::Failed(format!("zone {:?}: {e}", self.zone)))?;
        z.set_fqdn(true);
        Ok(z)
    }

    /// Point `name` at `new` if it holds `expected` (`None`: if it holds nothing), in one
    /// update whose prerequisite is that value; then wait (10 s at most) until the server
    /// answers `new`.
    pub async fn swap(
        &self,
        name: &str,
        expected: Option<Ipv4Addr>,
        new: Ipv4Addr,
        ttl: u32,
    ) -> Result<Swapped, UpdateError> {
        let started = Instant::now();
        let fqdn = self.fqdn(name)?;
        let zone = self.zone_name()?;
        let mut c = self.client().await?;
        let record = |a: Ipv4Addr| Record::from_rdata(fqdn.clone(), ttl, RData::A(A(a)));
        let sent = match expected {
            Some(old) => c.compare_and_swap(record(old), record(new), zone).await,
            None => c.create(record(new), zone).await,
        };
        let resp = sent.map_err(|e| {
            UpdateError::Failed(format!(
                "update refused or not answered by {} (TSIG key {:?}: {e})",
                self.server, self.key_name
            ))
        })?;
        match resp.response_code {
            ResponseCode::NoError => {}
            ResponseCode::NXRRSet | ResponseCode::YXRRSet => {
                let found = query(&mut c, &fqdn).await?;
                return Err(UpdateError::Stale {
                    name: fqdn.to_string(),
                    expected: expected.map_or("nothing".into(), |a| a.to_string()),
                    found: found.map_or("nothing".into(), |a| a.to_string()),
                });
            }
            rc => {
                return Err(UpdateError::Failed(format!(
                    "{} answered the update with {rc}",
                    self.server
                )))
            }
        }
        let submitted = started.elapsed();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if query(&mut c, &fqdn).await? == Some(new) {
                return Ok(Swapped {
                    submitted,
                    visible: started.elapsed(),
                });
            }
            if Instant::now() > deadline {
                return Err(UpdateError::Failed(format!(
                    "{} accepted the update but does not answer {new} for {fqdn} after 10 s",
                    self.server
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn query(
    c: &mut Client<TokioRuntimeProvider>,
    fqdn: &Name,
) -> Result<Option<Ipv4Addr>, UpdateError> {
    let resp = c
        .query(fqdn.clone(), DNSClass::IN, RecordType::A)
        .await
        .map_err(|e| UpdateError::Failed(format!("query for {fqdn}: {e}")))?;
    match resp.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        rc => {
            return Err(UpdateError::Failed(format!(
                "query for {fqdn} answered {rc}"
            )))
        }
    }
    Ok(resp.answers.iter().find_map(|r| match &r.data {
        RData::A(a) => Some(a.0),
        _ => None,
    }))
}
