//! OCI image layouts: canonical JSON, blobs, reading a layout by tag, exporting one.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::ImageError;

pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Compact JSON with object keys sorted at every level, whatever map type serde_json was
/// built with (another crate enabling `preserve_order` must not change our digests).
pub(crate) fn canonical(value: &Value) -> Vec<u8> {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    out.insert(k.clone(), sort(&m[k]));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            v => v.clone(),
        }
    }
    // Sorting into a fresh map keeps the order for both map implementations
    // (BTreeMap sorts, IndexMap keeps insertion order, which is sorted).
    serde_json::to_vec(&sort(value)).unwrap_or_default()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[usize::from(b >> 4)] as char);
        s.push(H[usize::from(b & 15)] as char);
    }
    s
}

pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// A writer that hashes and counts what passes through.
pub(crate) struct Hashing<W> {
    pub inner: W,
    pub hasher: Sha256,
    pub len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes what passes through.
pub(crate) struct HashingReader<R> {
    pub inner: R,
    pub hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// `blobs/sha256/<hex>` for a `sha256:<hex>` digest; anything else is refused (a digest
/// from a layout must not become `../../etc/passwd`).
pub(crate) fn blob_path(layout: &Path, digest: &str) -> Result<PathBuf, ImageError> {
    let hexpart = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| ImageError::BrokenLayout {
            path: layout.to_path_buf(),
            reason: format!("unsupported digest `{digest}`"),
        })?;
    Ok(layout.join("blobs").join("sha256").join(hexpart))
}

pub(crate) fn broken(layout: &Path, reason: impl Into<String>) -> ImageError {
    ImageError::BrokenLayout {
        path: layout.to_path_buf(),
        reason: reason.into(),
    }
}

/// Read a JSON blob and check it against its digest.
pub(crate) fn read_json_blob(layout: &Path, digest: &str) -> Result<(Value, Vec<u8>), ImageError> {
    let p = blob_path(layout, digest)?;
    let bytes =
        fs::read(&p).map_err(|e| broken(layout, format!("cannot read blob `{digest}`: {e}")))?;
    if sha256_digest(&bytes) != digest {
        return Err(broken(
            layout,
            format!("blob `{digest}` does not match its digest"),
        ));
    }
    let v = serde_json::from_slice(&bytes)
        .map_err(|e| broken(layout, format!("blob `{digest}` is not JSON: {e}")))?;
    Ok((v, bytes))
}

#[derive(Debug, Clone)]
pub(crate) struct LayerRef {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

impl LayerRef {
    pub(crate) fn gzip(&self) -> bool {
        self.media_type == MEDIA_LAYER_GZIP || self.media_type == DOCKER_LAYER_GZIP
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Image {
    pub config: Value,
    pub layers: Vec<LayerRef>,
    pub diff_ids: Vec<String>,
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

pub(crate) fn arch() -> &'static str {
    host_arch()
}

/// Open `layout` and find the image tagged `tag` (by `org.opencontainers.image.ref.name`;
/// a nested index is searched for this host's platform).
pub(crate) fn read_image(layout: &Path, tag: &str) -> Result<Image, ImageError> {
    let marker = fs::read(layout.join("oci-layout"))
        .map_err(|e| broken(layout, format!("no `oci-layout` file: {e}")))?;
    let marker: Value = serde_json::from_slice(&marker)
        .map_err(|e| broken(layout, format!("`oci-layout` is not JSON: {e}")))?;
    if marker.get("imageLayoutVersion").and_then(Value::as_str) != Some("1.0.0") {
        return Err(broken(layout, "unsupported `imageLayoutVersion`"));
    }
    let index = fs::read(layout.join("index.json"))
        .map_err(|e| broken(layout, format!("cannot read `index.json`: {e}")))?;
    let index: Value = serde_json::from_slice(&index)
        .map_err(|e| broken(layout, format!("`index.json` is not JSON: {e}")))?;
    let manifests = index
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| broken(layout, "`index.json` has no `manifests`"))?;
    let desc = manifests
        .iter()
        .find(|d| {
            d.get("annotations")
                .and_then(|a| a.get(REF_NAME))
                .and_then(Value::as_str)
                == Some(tag)
        })
        .ok_or_else(|| broken(layout, format!("no image tagged `{tag}`")))?;
    let mut desc = desc.clone();
    for _ in 0..4 {
        let media = desc
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or(MEDIA_MANIFEST);
        let digest = desc
            .get("digest")
            .and_then(Value::as_str)
            .ok_or_else(|| broken(layout, "descriptor without `digest`"))?
            .to_string();
        let (doc, _) = read_json_blob(layout, &digest)?;
        if media == MEDIA_INDEX || media == DOCKER_LIST {
            let arch = host_arch();
            desc = doc
                .get("manifests")
                .and_then(Value::as_array)
                .and_then(|ms| {
                    ms.iter().find(|m| {
                        let p = m.get("platform");
                        p.and_then(|p| p.get("architecture"))
                            .and_then(Value::as_str)
                            == Some(arch)
                            && p.and_then(|p| p.get("os")).and_then(Value::as_str) == Some("linux")
                    })
                })
                .cloned()
                .ok_or_else(|| {
                    broken(layout, format!("no `linux/{arch}` image for tag `{tag}`"))
                })?;
            continue;
        }
        if media != MEDIA_MANIFEST && media != DOCKER_MANIFEST {
            return Err(broken(
                layout,
                format!("unsupported manifest type `{media}`"),
            ));
        }
        let cfg_digest = doc
            .pointer("/config/digest")
            .and_then(Value::as_str)
            .ok_or_else(|| broken(layout, "manifest has no config digest"))?;
        let (config, _) = read_json_blob(layout, cfg_digest)?;
        let mut layers = Vec::new();
        for l in doc
            .get("layers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let digest = l
                .get("digest")
                .and_then(Value::as_str)
                .ok_or_else(|| broken(layout, "layer without `digest`"))?
                .to_string();
            blob_path(layout, &digest)?;
            let media_type = l
                .get("mediaType")
                .and_then(Value::as_str)
                .unwrap_or(MEDIA_LAYER)
                .to_string();
            if !matches!(
                media_type.as_str(),
                MEDIA_LAYER
                    | MEDIA_LAYER_GZIP
                    | DOCKER_LAYER_GZIP
                    | "application/vnd.docker.image.rootfs.diff.tar"
            ) {
                return Err(broken(
                    layout,
                    format!("unsupported layer type `{media_type}`"),
                ));
            }
            layers.push(LayerRef {
                digest,
                size: l.get("size").and_then(Value::as_u64).unwrap_or(0),
                media_type,
            });
        }
        let diff_ids: Vec<String> = config
            .pointer("/rootfs/diff_ids")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if diff_ids.len() != layers.len() {
            return Err(broken(
                layout,
                format!("{} layers but {} diff_ids", layers.len(), diff_ids.len()),
            ));
        }
        return Ok(Image {
            config,
            layers,
            diff_ids,
        });
    }
    Err(broken(layout, "indexes nested too deeply"))
}

/// Copy the image tagged `tag` from `src` into a fresh layout at `dest` (only the blobs it
/// references), through a temporary directory beside `dest` and a rename.
pub fn export_layout(src: &Path, tag: &str, dest: &Path) -> Result<(), ImageError> {
    let index_bytes = fs::read(src.join("index.json"))
        .map_err(|e| broken(src, format!("cannot read `index.json`: {e}")))?;
    let index: Value = serde_json::from_slice(&index_bytes)
        .map_err(|e| broken(src, format!("`index.json` is not JSON: {e}")))?;
    let image = read_image(src, tag)?;
    let mut digests: Vec<String> = Vec::new();
    for d in index
        .get("manifests")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(dg) = d.get("digest").and_then(Value::as_str) {
            digests.push(dg.to_string());
            if let Ok((m, _)) = read_json_blob(src, dg)
                && let Some(c) = m.pointer("/config/digest").and_then(Value::as_str)
            {
                digests.push(c.to_string());
            }
        }
    }
    digests.extend(image.layers.iter().map(|l| l.digest.clone()));
    let tmp = crate::temp_sibling(dest)?;
    let res = (|| {
        let blobs = tmp.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(|e| ImageError::io("cannot create", &blobs, e))?;
        for d in &digests {
            let from = blob_path(src, d)?;
            let to = blob_path(&tmp, d)?;
            if !to.exists() {
                fs::copy(&from, &to).map_err(|e| ImageError::io("cannot copy", &from, e))?;
            }
        }
        for f in ["oci-layout", "index.json"] {
            let from = src.join(f);
            fs::copy(&from, tmp.join(f)).map_err(|e| ImageError::io("cannot copy", &from, e))?;
        }
        Ok(())
    })();
    match res {
        Ok(()) => crate::publish_dir(&tmp, dest, |d| {
            fs::read(d.join("index.json")).is_ok_and(|i| i == index_bytes)
        }),
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}
