//! Backups' object store: any S3 API (AWS, moto on the test bed, S3-compatible stores) through
//! aws-sdk-s3. Uploads stream: parts are cut from the source as it is read and uploaded while
//! the next ones are read (a bounded number in flight), so memory stays bounded whatever the
//! size, and a failed upload is aborted (no half object stays behind).

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use aws_sdk_s3::{
    config::{Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation},
    primitives::ByteStream,
    types::{CompletedMultipartUpload, CompletedPart},
    Client,
};
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use shared::Config;
use tokio::{
    io::{AsyncRead, AsyncReadExt},
    task::JoinSet,
};

/// Parts are 8 MiB (S3's minimum is 5 MiB), 32 MiB after 1,000 parts (S3 allows 10,000).
const PART: usize = 8 << 20;
const BIG_PART: usize = 32 << 20;
/// Parts uploading at once while the next one is read: memory ≈ (IN_FLIGHT + 1) × part size.
const IN_FLIGHT: usize = 3;
const PART_TRIES: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("no backup bucket configured (SA_S3_BUCKET)")]
    NoBucket,
    #[error("S3 {op} s3://{bucket}/{key}: {reason}")]
    Request {
        op: &'static str,
        bucket: String,
        key: String,
        reason: String,
    },
    #[error("reading the backup stream: {0}")]
    Source(std::io::Error),
    /// The source said its stream is not good (its command failed): the upload was aborted.
    #[error("the source of the upload failed")]
    Rejected,
}

#[derive(Clone)]
pub struct Store {
    client: Client,
    pub bucket: String,
}

/// What an upload wrote.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub bytes: u64,
    pub sha256: String,
    pub parts: usize,
}

impl Store {
    /// The configured store, or `None` without `SA_S3_BUCKET`.
    pub async fn from_config(cfg: &Config) -> Option<Store> {
        let bucket = cfg.s3_bucket.clone()?;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new(cfg.s3_region.clone()));
        if let (Some(id), Some(secret)) = (&cfg.s3_access_key_id, &cfg.s3_secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                id.clone(),
                secret.clone(),
                None,
                None,
                "serveractions-config",
            ));
        }
        let base = loader.load().await;
        let mut b = aws_sdk_s3::config::Builder::from(&base)
            .force_path_style(true)
            // S3-compatible stores may reject the SDK's default CRC checksums.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(ep) = &cfg.s3_endpoint {
            b = b.endpoint_url(ep);
        }
        Some(Store {
            client: Client::from_conf(b.build()),
            bucket,
        })
    }

    fn err(&self, op: &'static str, key: &str, e: impl std::fmt::Display) -> S3Error {
        S3Error::Request {
            op,
            bucket: self.bucket.clone(),
            key: key.to_string(),
            reason: e.to_string(),
        }
    }

    /// Upload everything `src` yields as `key` (multipart); `progress` counts the bytes read.
    /// Once `src` ended, `confirm` says whether the stream is good: only then is the object
    /// completed (else the upload is aborted: `Rejected`); `trailer` gives the bytes appended
    /// after the stream (they are not in the returned size and sha256).
    pub async fn upload<T>(
        &self,
        key: &str,
        mut src: impl AsyncRead + Unpin,
        progress: &AtomicU64,
        confirm: impl std::future::Future<Output = (bool, T)>,
        trailer: impl FnOnce(&Uploaded, &T) -> Vec<u8>,
    ) -> Result<(Uploaded, T), S3Error> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.err("CreateMultipartUpload", key, describe(&e)))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let result = async {
            let (parts, uploaded, extra) = self
                .upload_parts(key, &upload_id, &mut src, progress, confirm, trailer)
                .await?;
            self.complete(key, &upload_id, parts).await?;
            Ok((uploaded, extra))
        }
        .await;
        if result.is_err() {
            // Nothing half-written stays: the parts are discarded.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    /// Full parts are uploaded as they are read; the short one that ends the stream waits for
    /// `confirm` and takes the trailer.
    async fn upload_parts<T>(
        &self,
        key: &str,
        upload_id: &str,
        src: &mut (impl AsyncRead + Unpin),
        progress: &AtomicU64,
        confirm: impl std::future::Future<Output = (bool, T)>,
        trailer: impl FnOnce(&Uploaded, &T) -> Vec<u8>,
    ) -> Result<(Vec<CompletedPart>, Uploaded, T), S3Error> {
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut done = Parts::default();
        let mut running: JoinSet<Result<(CompletedPart, Bytes), S3Error>> = JoinSet::new();
        let mut number = 0i32;
        let mut spawn = async |number: i32, part: Bytes, done: &mut Parts| {
            while running.len() >= IN_FLIGHT {
                done.add(joined(running.join_next().await)?);
            }
            let (store, key, id) = (self.clone(), key.to_string(), upload_id.to_string());
            running.spawn(async move {
                let p = store.upload_part(&key, &id, number, part.clone()).await?;
                Ok((p, part))
            });
            Ok::<_, S3Error>(())
        };
        let last = loop {
            let size = if number < 1000 { PART } else { BIG_PART };
            let buf = done.spare.pop().unwrap_or_default();
            let part = read_part(src, buf, size).await.map_err(S3Error::Source)?;
            hasher.update(&part);
            total += part.len() as u64;
            progress.store(total, Ordering::Relaxed);
            number += 1;
            if part.len() < size {
                break part;
            }
            spawn(number, part, &mut done).await?;
        };
        let (good, extra) = confirm.await;
        if !good {
            return Err(S3Error::Rejected);
        }
        let uploaded = Uploaded {
            bytes: total,
            sha256: hex(&hasher.finalize()),
            parts: number as usize,
        };
        let trailer = trailer(&uploaded, &extra);
        let last = if trailer.is_empty() {
            last
        } else {
            Bytes::from([&last[..], &trailer].concat())
        };
        // A stream of whole parts ends with an empty read: no empty part after full ones.
        if !last.is_empty() || number == 1 {
            spawn(number, last, &mut done).await?;
        }
        while let Some(r) = running.join_next().await {
            done.add(joined(Some(r))?);
        }
        let mut done = done.completed;
        done.sort_by_key(|p| p.part_number());
        let uploaded = Uploaded {
            parts: done.len(),
            ..uploaded
        };
        Ok((done, uploaded, extra))
    }

    async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        done: Vec<CompletedPart>,
    ) -> Result<(), S3Error> {
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.err("CompleteMultipartUpload", key, describe(&e)))?;
        Ok(())
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<CompletedPart, S3Error> {
        let mut tries = 0;
        loop {
            tries += 1;
            let sent = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(body.clone()))
                // The whole object's sha256 is ours to check (manifest, restore, verify):
                // hashing every part again for the signature doubled the worker's CPU.
                .customize()
                .disable_payload_signing()
                .send()
                .await;
            match sent {
                Ok(out) => {
                    return Ok(CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .build())
                }
                Err(e) if tries >= PART_TRIES => {
                    return Err(self.err("UploadPart", key, describe(&e)))
                }
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(tries)))
                        .await
                }
            }
        }
    }

    pub async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), S3Error> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.err("PutObject", key, describe(&e)))?;
        Ok(())
    }

    /// The object's bytes as a stream.
    pub async fn get(&self, key: &str) -> Result<impl AsyncRead + Unpin + Send, S3Error> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.err("GetObject", key, describe(&e)))?;
        Ok(out.body.into_async_read())
    }

    /// The object's last `n` bytes (all of it if it is shorter): where its manifest is.
    pub async fn tail(&self, key: &str, n: u64) -> Result<Vec<u8>, S3Error> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes=-{n}"))
            .send()
            .await
            .map_err(|e| self.err("GetObject", key, describe(&e)))?;
        let body = out.body.collect().await;
        let body = body.map_err(|e| self.err("GetObject", key, describe(&e)))?;
        Ok(body.into_bytes().to_vec())
    }

    /// The manifest inside a backup object (see [`crate::trailer`]), if it has one.
    pub async fn manifest_inside(&self, key: &str) -> Result<Option<serde_json::Value>, S3Error> {
        Ok(crate::trailer::decode(&self.tail(key, 4 << 20).await?))
    }

    pub async fn delete(&self, key: &str) -> Result<(), S3Error> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.err("DeleteObject", key, describe(&e)))?;
        Ok(())
    }

    /// Keys under `prefix` (for tests and checks: every backup object is also in PostgreSQL).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, S3Error> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("ListObjectsV2", prefix, describe(&e)))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
        }
        Ok(keys)
    }
}

/// The parts an upload completed, and the buffers of finished ones, which the next parts are
/// read into: memory stays at the parts in flight instead of growing with the allocator's
/// leftovers of one fresh 8 MiB buffer per part.
#[derive(Default)]
struct Parts {
    completed: Vec<CompletedPart>,
    spare: Vec<BytesMut>,
}

impl Parts {
    fn add(&mut self, (part, body): (CompletedPart, Bytes)) {
        self.completed.push(part);
        // The SDK has dropped its copies once the part is acknowledged; if not, it is freed.
        if let Ok(mut buf) = body.try_into_mut() {
            buf.clear();
            self.spare.push(buf);
        }
    }
}

fn joined<T>(r: Option<Result<Result<T, S3Error>, tokio::task::JoinError>>) -> Result<T, S3Error> {
    match r {
        Some(Ok(r)) => r,
        Some(Err(e)) => Err(S3Error::Source(std::io::Error::other(e))),
        None => Err(S3Error::Source(std::io::Error::other("no part"))),
    }
}

/// Read up to `size` bytes into `buf` (fewer only at the end of the stream).
async fn read_part(
    src: &mut (impl AsyncRead + Unpin),
    mut buf: BytesMut,
    size: usize,
) -> std::io::Result<Bytes> {
    buf.reserve(size);
    while buf.len() < size {
        let want = size - buf.len();
        let n = (&mut *src).take(want as u64).read_buf(&mut buf).await?;
        if n == 0 {
            break;
        }
    }
    Ok(buf.freeze())
}

/// The error with its sources (the SDK's top-level message is often just "service error").
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let m = s.to_string();
        if !msg.contains(&m) {
            msg.push_str(": ");
            msg.push_str(&m);
        }
        src = s.source();
    }
    msg
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A reader that hashes what passes through it.
pub struct HashingReader<R> {
    inner: R,
    pub hasher: Sha256,
    pub bytes: Arc<AtomicU64>,
}

impl<R> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: Arc::default(),
        }
    }

    pub fn sha256(&self) -> String {
        hex(&self.hasher.clone().finalize())
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for HashingReader<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let new = &buf.filled()[before..];
        if !new.is_empty() {
            let n = new.len() as u64;
            self.hasher.update(new);
            self.bytes.fetch_add(n, Ordering::Relaxed);
        }
        r
    }
}
