//! Secret values at rest: AES-256-GCM with the key in `SA_SECRET_KEY_FILE` (made by the api on
//! its first start, mode 0600, read by the workers too), a fresh 96-bit nonce per value.

use std::path::{Path, PathBuf};

use aes_gcm::{
    aead::{Aead, AeadCore, KeyInit, OsRng},
    Aes256Gcm, Key, Nonce,
};
use anyhow::Context;
use base64::Engine;

/// The text that stands for a secret value everywhere it would be shown.
pub const MASK: &str = "***";

/// A sealed value: its nonce and ciphertext (with the GCM tag).
#[derive(Clone, Debug)]
pub struct Sealed {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

pub struct Keyring {
    cipher: Aes256Gcm,
    path: PathBuf,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring({})", self.path.display())
    }
}

impl Keyring {
    /// The key in `path` (base64 of 32 bytes); with `create`, a new one when the file is missing.
    pub fn load(path: &Path, create: bool) -> anyhow::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let key = Aes256Gcm::generate_key(OsRng);
                let text = base64::engine::general_purpose::STANDARD.encode(key);
                write_private(path, &text).with_context(|| {
                    format!("SA_SECRET_KEY_FILE: cannot create {}", path.display())
                })?;
                tracing::info!(file = %path.display(), "made a new key for secret values");
                text
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("SA_SECRET_KEY_FILE: cannot read {}", path.display()))
            }
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()
            .filter(|b| b.len() == 32)
            .with_context(|| {
                format!(
                    "SA_SECRET_KEY_FILE: {} does not hold a key (base64 of 32 bytes)",
                    path.display()
                )
            })?;
        Ok(Self {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
            path: path.to_path_buf(),
        })
    }

    pub fn seal(&self, value: &str) -> Sealed {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = self
            .cipher
            .encrypt(&nonce, value.as_bytes())
            .expect("AES-GCM encryption of an in-memory value");
        Sealed {
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    /// The value, or an error naming the key file (another key sealed it, or it was altered).
    pub fn open(&self, sealed: &Sealed) -> anyhow::Result<String> {
        anyhow::ensure!(sealed.nonce.len() == 12, "a sealed secret with a bad nonce");
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(&sealed.nonce), sealed.ciphertext.as_ref())
            .map_err(|_| {
                anyhow::anyhow!(
                    "the key in {} does not open the stored secrets (SA_SECRET_KEY_FILE is not the \
                     key they were sealed with)",
                    self.path.display()
                )
            })?;
        String::from_utf8(plain).context("a sealed secret that is not UTF-8")
    }
}

/// Write `text` to a new file of mode 0600 (its directory made if missing); never over a file.
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "{text}")?;
    Ok(())
}

/// The forms of `value` a script could print: itself, base64 (standard, URL-safe, with and
/// without padding) and URL-encoded, plus each line of a multi-line value. Short strings are
/// left out (masking every "a" would garble the log and hide nothing).
pub fn forms(value: &str) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let url = base64::engine::general_purpose::URL_SAFE;
    let mut out = vec![
        value.to_string(),
        b64.encode(value),
        b64.encode(value).trim_end_matches('=').to_string(),
        url.encode(value),
        url.encode(value).trim_end_matches('=').to_string(),
        url_encode(value),
    ];
    out.extend(value.lines().map(str::to_string));
    out.retain(|f| f.len() >= 4);
    out.sort_by_key(|f| std::cmp::Reverse(f.len()));
    out.dedup();
    out
}

fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The secret values a log must never show, in every form (see [`forms`]). Clones share them.
#[derive(Clone, Debug, Default)]
pub struct Masks(std::sync::Arc<std::sync::RwLock<Vec<String>>>);

impl Masks {
    pub fn add(&self, value: &str) {
        let mut all = self.0.write().expect("masks");
        for f in forms(value) {
            if !all.contains(&f) {
                all.push(f);
            }
        }
        all.sort_by_key(|f| std::cmp::Reverse(f.len()));
    }

    /// `line` masked, or `None` when it shows none of them.
    pub fn apply(&self, line: &str) -> Option<String> {
        let all = self.0.read().expect("masks");
        all.iter()
            .any(|m| line.contains(m.as_str()))
            .then(|| mask(line, &all))
    }
}

/// `line` with every form in `masks` (longest first) replaced by `***`.
pub fn mask(line: &str, masks: &[String]) -> String {
    let mut out = line.to_string();
    for m in masks {
        if out.contains(m.as_str()) {
            out = out.replace(m.as_str(), MASK);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_with_its_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = Keyring::load(&dir.path().join("k1"), true).unwrap();
        let k2 = Keyring::load(&dir.path().join("k2"), true).unwrap();
        let s = k1.seal("hunter2");
        assert_ne!(s.ciphertext, b"hunter2");
        assert_eq!(k1.open(&s).unwrap(), "hunter2");
        assert!(k2
            .open(&s)
            .unwrap_err()
            .to_string()
            .contains("does not open"));
        assert!(Keyring::load(&dir.path().join("missing"), false).is_err());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("k1"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn every_printable_form_of_a_secret_is_masked() {
        let masks = forms("s3cr et/pw");
        for shown in [
            "pw is s3cr et/pw!",
            "b64 czNjciBldC9wdw==",
            "url s3cr%20et%2Fpw",
        ] {
            assert!(!mask(shown, &masks).contains("s3cr"), "{shown}");
            assert!(mask(shown, &masks).contains(MASK));
        }
        assert_eq!(mask("nothing here", &masks), "nothing here");
    }
}
