//! Backups' object store: any S3 API (AWS, moto on the test bed, S3-compatible stores) through
//! aws-sdk-s3. A backup is a series of objects, its chunks: `<key>.000001`, `<key>.000002`...,
//! whose concatenation is the backup (`cat <key>.*` by hand). Chunks are cut from the source as
//! it is read and put while the next ones are read (a bounded number in flight), so memory stays
//! bounded whatever the size; each chunk is whole once its PUT returns, so there is no completion
//! step at the end (an S3 multipart upload's completion copies the whole object: minutes on AWS
//! for big ones, seconds per GiB on the emulator) and no size ceiling (a multipart upload stops
//! at 10,000 parts). A failed upload deletes the chunks it wrote.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{db::backups::chunk_key, errors::chain, Config};
use aws_sdk_s3::{
    config::{
        retry::RetryConfig, Credentials, Region, RequestChecksumCalculation,
        ResponseChecksumValidation,
    },
    operation::get_object::GetObjectOutput,
    primitives::ByteStream,
    types::{Delete, ObjectIdentifier},
    Client,
};
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncRead, AsyncReadExt},
    task::JoinSet,
};

/// Chunks being put at once while the next one is read.
const IN_FLIGHT: usize = 3;
/// Chunks fetched ahead of the one being read, on download.
const PREFETCH: usize = 2;
/// Attempts per S3 request (the SDK's retry, with its backoff).
const S3_ATTEMPTS: u32 = 3;
/// How long a failed upload waits for its PUTs under way before it deletes its chunks.
const PUT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

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
pub struct Bucket {
    client: Client,
    pub name: String,
    /// A chunk's size (`SA_S3_CHUNK_MIB`): memory ≈ (IN_FLIGHT + 1) chunks per upload.
    pub chunk: usize,
}

/// What an upload wrote.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub bytes: u64,
    pub sha256: String,
    /// Chunk objects: `chunk_key(key, 1..=chunks)`.
    pub chunks: usize,
}

impl Bucket {
    /// The configured store, or `None` without `SA_S3_BUCKET`.
    pub async fn from_config(cfg: &Config) -> Option<Bucket> {
        let bucket = cfg.s3_bucket.clone()?;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new(cfg.s3_region.clone()));
        if let (Some(id), Some(secret)) = (&cfg.s3_access_key_id, &cfg.s3_secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                id.clone(),
                secret.expose_secret(),
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
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // Transient failures (timeouts, 5xx, throttling) are retried by the SDK, with
            // backoff; a chunk's body is in memory, so it can be sent again.
            .retry_config(RetryConfig::standard().with_max_attempts(S3_ATTEMPTS))
            // Every call has a deadline: a store that stops answering fails the attempt.
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(std::time::Duration::from_secs(10))
                    .operation_attempt_timeout(std::time::Duration::from_secs(300))
                    .build(),
            );
        if let Some(ep) = &cfg.s3_endpoint {
            b = b.endpoint_url(ep);
        }
        Some(Bucket {
            client: Client::from_conf(b.build()),
            name: bucket,
            chunk: cfg.s3_chunk_mib << 20,
        })
    }

    fn err(&self, op: &'static str, key: &str, e: impl std::fmt::Display) -> S3Error {
        S3Error::Request {
            op,
            bucket: self.name.clone(),
            key: key.to_string(),
            reason: e.to_string(),
        }
    }

    /// The client, for what this type does not wrap (the benchmark's multipart baseline).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Upload everything `src` yields as the chunks of `key`; `progress` counts the bytes read.
    /// Once `src` ended, `confirm` says whether the stream is good: only then is the last chunk
    /// put (else the chunks written are deleted: `Rejected`); `trailer` gives the bytes appended
    /// after the stream, in the last chunk (they are not in the returned size and sha256).
    /// `stop` ending before that stops the upload where it is (`Rejected`, chunks deleted).
    pub async fn upload<T>(
        &self,
        key: &str,
        mut src: impl AsyncRead + Unpin,
        progress: &AtomicU64,
        stop: impl std::future::Future<Output = ()>,
        confirm: impl std::future::Future<Output = (bool, T)>,
        trailer: impl FnOnce(&Uploaded, &T) -> Vec<u8>,
    ) -> Result<(Uploaded, T), S3Error> {
        let mut puts = Puts::default();
        let result = tokio::select! {
            r = self.upload_chunks(key, &mut src, progress, confirm, trailer, &mut puts) => r,
            () = stop => Err(S3Error::Rejected),
        };
        if result.is_err() {
            // Nothing half-written stays: the PUTs under way end first (one cancelled after its
            // request went out could still land after the delete), within PUT_WAIT; then the
            // chunks started so far are deleted (deleting a missing key is no error). If the
            // store cannot be reached now, the backup's row stays uncommitted and retention
            // deletes what is left of it later.
            let _ = tokio::time::timeout(PUT_WAIT, async {
                while puts.running.join_next().await.is_some() {}
            })
            .await;
            puts.running.shutdown().await;
            let keys: Vec<String> = (1..=puts.started).map(|i| chunk_key(key, i)).collect();
            let _ = self.delete_all(&keys).await;
        }
        result
    }

    /// Full chunks are put as they are read (by tasks in `puts`); the short one that ends the
    /// stream waits for `confirm` and takes the trailer.
    async fn upload_chunks<T>(
        &self,
        key: &str,
        src: &mut (impl AsyncRead + Unpin),
        progress: &AtomicU64,
        confirm: impl std::future::Future<Output = (bool, T)>,
        trailer: impl FnOnce(&Uploaded, &T) -> Vec<u8>,
        puts: &mut Puts,
    ) -> Result<(Uploaded, T), S3Error> {
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut spare: Vec<BytesMut> = Vec::new();
        let mut number = 0usize;
        let mut spawn = async |number: usize, chunk: Bytes, spare: &mut Vec<BytesMut>| {
            while puts.running.len() >= IN_FLIGHT {
                recycle(spare, joined(puts.running.join_next().await)?);
            }
            puts.started = number;
            let (bucket, key) = (self.clone(), chunk_key(key, number));
            puts.running.spawn(async move {
                bucket.put_chunk(&key, chunk.clone()).await?;
                Ok(chunk)
            });
            Ok::<_, S3Error>(())
        };
        let last = loop {
            let buf = spare.pop().unwrap_or_default();
            let chunk = read_chunk(src, buf, self.chunk)
                .await
                .map_err(S3Error::Source)?;
            hasher.update(&chunk);
            total += chunk.len() as u64;
            progress.store(total, Ordering::Relaxed);
            number += 1;
            if chunk.len() < self.chunk {
                break chunk;
            }
            spawn(number, chunk, &mut spare).await?;
        };
        let (good, extra) = confirm.await;
        if !good {
            return Err(S3Error::Rejected);
        }
        let mut uploaded = Uploaded {
            bytes: total,
            sha256: hex(&hasher.finalize()),
            chunks: number,
        };
        let trailer = trailer(&uploaded, &extra);
        let last = if trailer.is_empty() {
            last
        } else {
            Bytes::from([&last[..], &trailer].concat())
        };
        // A stream of whole chunks ends with an empty read: no empty chunk after full ones,
        // unless the trailer goes there.
        if last.is_empty() && number > 1 {
            uploaded.chunks -= 1;
        } else {
            spawn(number, last, &mut spare).await?;
        }
        while let Some(r) = puts.running.join_next().await {
            joined(Some(r))?;
        }
        Ok((uploaded, extra))
    }

    /// One chunk (the SDK retries transient failures: `retry_config`).
    async fn put_chunk(&self, key: &str, body: Bytes) -> Result<(), S3Error> {
        self.client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .body(ByteStream::from(body))
            // The whole backup's sha256 is ours to check (manifest, restore, verify):
            // hashing every chunk again for the signature doubled the worker's CPU.
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("PutObject", key, chain(&e)))
    }

    /// The concatenation of the objects `keys`, as a stream. Chunks are fetched whole, the next
    /// few while one is read; a bigger object (a backup stored as one object, as they were
    /// before chunks) is streamed, not held in memory.
    pub fn get_all(&self, keys: Vec<String>) -> impl AsyncRead + Unpin + Send {
        let bucket = self.clone();
        let bodies = futures::stream::iter(keys)
            .map(move |key| {
                let bucket = bucket.clone();
                async move { bucket.fetch(&key).await }
            })
            .buffered(PREFETCH + 1)
            .map_ok(|body| match body {
                Body::Whole(whole) => futures::stream::once(async { Ok(whole) }).boxed(),
                Body::Open(open) => futures::stream::unfold(open, |mut open| async move {
                    let next = open.try_next().await.map_err(std::io::Error::other);
                    next.transpose().map(|n| (n, open))
                })
                .boxed(),
            })
            .map_err(std::io::Error::other)
            .try_flatten();
        tokio_util::io::StreamReader::new(Box::pin(bodies))
    }

    /// The object at `key`: whole if it is no bigger than a chunk and its trailer, else open.
    async fn fetch(&self, key: &str) -> Result<Body, S3Error> {
        let out = self.get_object(key, None).await?;
        if out.content_length().unwrap_or(i64::MAX) > 2 * self.chunk as i64 {
            return Ok(Body::Open(out.body));
        }
        Ok(Body::Whole(self.read_body(key, out.body).await?))
    }

    /// GetObject of `key`, or of its `range` (an HTTP Range value).
    async fn get_object(
        &self,
        key: &str,
        range: Option<String>,
    ) -> Result<GetObjectOutput, S3Error> {
        self.client
            .get_object()
            .bucket(&self.name)
            .key(key)
            .set_range(range)
            .send()
            .await
            .map_err(|e| self.err("GetObject", key, chain(&e)))
    }

    /// All of an object's `body`.
    async fn read_body(&self, key: &str, body: ByteStream) -> Result<Bytes, S3Error> {
        let body = body.collect().await;
        let body = body.map_err(|e| self.err("GetObject", key, chain(&e)))?;
        Ok(body.into_bytes())
    }

    /// The chunks of the backup at `key`, in order (empty for a backup stored as one object,
    /// as they were before chunks).
    pub async fn chunks_of(&self, key: &str) -> Result<Vec<String>, S3Error> {
        Ok(chunks_among(key, self.list(&format!("{key}.")).await?))
    }

    /// Delete `keys` (missing ones are no error), a thousand per request.
    pub async fn delete_all(&self, keys: &[String]) -> Result<(), S3Error> {
        for batch in keys.chunks(1000) {
            let Some(first) = batch.first() else {
                continue;
            };
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.err("DeleteObjects", first, e))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| self.err("DeleteObjects", first, e))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.name)
                .delete(delete)
                .send()
                .await
                .map_err(|e| self.err("DeleteObjects", first, chain(&e)))?;
            if let Some(e) = out.errors().first() {
                let key = e.key().unwrap_or(first);
                return Err(self.err("DeleteObjects", key, e.message().unwrap_or("failed")));
            }
        }
        Ok(())
    }

    /// A file as one object (streamed from disk; up to the store's single-PUT limit).
    pub async fn put_file(&self, key: &str, path: &std::path::Path) -> Result<(), S3Error> {
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| self.err("PutObject", key, chain(&e)))?;
        self.client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .body(body)
            .send()
            .await
            .map_err(|e| self.err("PutObject", key, chain(&e)))?;
        Ok(())
    }

    pub async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), S3Error> {
        self.client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.err("PutObject", key, chain(&e)))?;
        Ok(())
    }

    /// The object's last `n` bytes (all of it if it is shorter): where its manifest is.
    pub async fn tail(&self, key: &str, n: u64) -> Result<Vec<u8>, S3Error> {
        let out = self.get_object(key, Some(format!("bytes=-{n}"))).await?;
        Ok(self.read_body(key, out.body).await?.to_vec())
    }

    /// The manifest inside a backup object (see [`crate::trailer`]), if it has one.
    pub async fn manifest_inside(&self, key: &str) -> Result<Option<serde_json::Value>, S3Error> {
        Ok(crate::trailer::decode(&self.tail(key, 4 << 20).await?))
    }

    pub async fn delete(&self, key: &str) -> Result<(), S3Error> {
        self.client
            .delete_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
            .map_err(|e| self.err("DeleteObject", key, chain(&e)))?;
        Ok(())
    }

    /// Keys under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, S3Error> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.name)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("ListObjectsV2", prefix, chain(&e)))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
        }
        Ok(keys)
    }
}

/// The chunk keys of `key` among `keys` (`<key>.` and at least six digits), in number order
/// (a millionth chunk has seven digits).
fn chunks_among(key: &str, keys: Vec<String>) -> Vec<String> {
    let mut chunks: Vec<String> = keys
        .into_iter()
        .filter(|k| {
            k.strip_prefix(key)
                .and_then(|k| k.strip_prefix('.'))
                .is_some_and(|n| n.len() >= 6 && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    chunks.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
    chunks
}

/// An object being downloaded: read whole, or its body still to be read.
enum Body {
    Whole(Bytes),
    Open(ByteStream),
}

/// The PUTs of an upload's chunks: those running, and how many began.
#[derive(Default)]
struct Puts {
    running: JoinSet<Result<Bytes, S3Error>>,
    started: usize,
}

/// Reuse an uploaded chunk's buffer for the next chunk: memory stays at the chunks in flight
/// instead of growing with the allocator's leftovers of one fresh buffer per chunk.
fn recycle(spare: &mut Vec<BytesMut>, body: Bytes) {
    // The SDK has dropped its copies once the chunk is acknowledged; if not, it is freed.
    if let Ok(mut buf) = body.try_into_mut() {
        buf.clear();
        spare.push(buf);
    }
}

fn joined<T>(r: Option<Result<Result<T, S3Error>, tokio::task::JoinError>>) -> Result<T, S3Error> {
    match r {
        Some(Ok(r)) => r,
        Some(Err(e)) => Err(S3Error::Source(std::io::Error::other(e))),
        None => Err(S3Error::Source(std::io::Error::other("no chunk"))),
    }
}

/// Read up to `size` bytes into `buf` (fewer only at the end of the stream).
async fn read_chunk(
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

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunks_are_found_in_number_order() {
        let keys = [
            "k.000002",
            "k.1000000",
            "k.000010",
            "k.000001",
            "k.json",
            "k.00001",
            "k.000001.x",
            "kk.000003",
        ];
        assert_eq!(
            super::chunks_among("k", keys.map(String::from).to_vec()),
            ["k.000001", "k.000002", "k.000010", "k.1000000"]
        );
    }
}
