//! A tiny npm registry under `/npm/`, so that `npm install --package-lock-only` (the
//! runner's upgrade recipe) works with no network: packuments at `/npm/{name}` (scoped:
//! `/npm/@scope%2fname`) and real gzipped tarballs at `/npm/{name}/-/{base}-{version}.tgz`,
//! with the `sha512` integrity npm checks. Packages are tiny fakes: a `package.json` and
//! an `index.js` exporting the version.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use serde_json::{Value, json};
use sha1::Digest as _;

use super::server::Shared;

/// Tarball timestamps: npm's own fixed date (1985-10-26), so builds are reproducible.
const TARBALL_MTIME: u64 = 499_162_500;

#[derive(Debug, thiserror::Error)]
pub enum NpmError {
    #[error("{0:?} is not an npm package name this registry serves")]
    BadName(String),
    #[error("{0:?} is not a plain version")]
    BadVersion(String),
    #[error("cannot build the tarball: {0}")]
    Tarball(#[from] std::io::Error),
}

struct Published {
    tarball: Vec<u8>,
    integrity: String,
    shasum: String,
}

/// The registry's packages: name → version → tarball.
#[derive(Default)]
pub(crate) struct NpmRegistry {
    packages: Mutex<BTreeMap<String, BTreeMap<String, Published>>>,
}

impl NpmRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, BTreeMap<String, Published>>> {
        self.packages.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes `name@version` (replacing it if present).
    pub fn publish(&self, name: &str, version: &str) -> Result<(), NpmError> {
        if !valid_name(name) {
            return Err(NpmError::BadName(name.to_owned()));
        }
        if version.is_empty()
            || !version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-+".contains(c))
            || version_key(version).is_none()
        {
            return Err(NpmError::BadVersion(version.to_owned()));
        }
        let tarball = build_tarball(name, version)?;
        let integrity = format!(
            "sha512-{}",
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(&tarball))
        );
        let shasum = hex::encode(sha1::Sha1::digest(&tarball));
        self.lock().entry(name.to_owned()).or_default().insert(
            version.to_owned(),
            Published {
                tarball,
                integrity,
                shasum,
            },
        );
        Ok(())
    }

    fn packument(&self, name: &str, registry_url: &str) -> Option<Value> {
        let packages = self.lock();
        let versions = packages.get(name)?;
        let latest = versions
            .keys()
            .filter(|v| !v.contains('-'))
            .max_by_key(|v| version_key(v))
            .or_else(|| versions.keys().max_by_key(|v| version_key(v)))?;
        let base = tarball_base(name);
        let versions: serde_json::Map<String, Value> = versions
            .iter()
            .map(|(version, published)| {
                (
                    version.clone(),
                    json!({
                        "name": name,
                        "version": version,
                        "main": "index.js",
                        "dist": {
                            "tarball": format!("{registry_url}{name}/-/{base}-{version}.tgz"),
                            "integrity": published.integrity,
                            "shasum": published.shasum,
                        },
                    }),
                )
            })
            .collect();
        Some(json!({
            "_id": name,
            "name": name,
            "dist-tags": { "latest": latest },
            "versions": versions,
        }))
    }

    fn tarball(&self, name: &str, file: &str) -> Option<Vec<u8>> {
        let base = tarball_base(name);
        let packages = self.lock();
        packages.get(name)?.iter().find_map(|(version, published)| {
            (file == format!("{base}-{version}.tgz")).then(|| published.tarball.clone())
        })
    }
}

/// lowercase, URL-safe, optionally `@scope/`.
fn valid_name(name: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && !p.starts_with(['.', '_'])
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._~".contains(c))
    };
    match name.strip_prefix('@') {
        Some(scoped) => scoped
            .split_once('/')
            .is_some_and(|(scope, base)| part(scope) && part(base)),
        None => part(name),
    }
}

/// The tarball's file name stem: the name without its scope.
fn tarball_base(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// Numeric `major.minor.patch` for ordering; `None` if not a version.
fn version_key(version: &str) -> Option<(u64, u64, u64)> {
    let core = version.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    let key = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(key)
}

fn build_tarball(name: &str, version: &str) -> Result<Vec<u8>, std::io::Error> {
    let manifest = serde_json::to_vec_pretty(&json!({
        "name": name,
        "version": version,
        "main": "index.js",
        "license": "MIT",
    }))?;
    let index = format!("module.exports = {{ VERSION: {version:?} }};\n");
    let gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut archive = tar::Builder::new(gzip);
    for (path, data) in [
        ("package/package.json", manifest.as_slice()),
        ("package/index.js", index.as_bytes()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(TARBALL_MTIME);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        archive.append_data(&mut header, path, data)?;
    }
    let mut gzip = archive.into_inner()?;
    gzip.flush()?;
    gzip.finish()
}

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new().route("/{*path}", get(serve))
}

/// `GET /npm/{name}` (name percent-encoded or not) or `/npm/{name}/-/{file}.tgz`.
async fn serve(State(shared): State<Arc<Shared>>, Path(path): Path<String>) -> Response {
    // The extractor has decoded `%2f` in scoped names already.
    let registry_url = format!("{}/npm/", shared.base_url);
    match path.split_once("/-/") {
        Some((name, file)) => match shared.npm.tarball(name, file) {
            Some(bytes) => {
                ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
            }
            None => not_found(),
        },
        None => match shared.npm.packument(&path, &registry_url) {
            Some(doc) => (
                [(header::CONTENT_TYPE, "application/json")],
                doc.to_string(),
            )
                .into_response(),
            None => not_found(),
        },
    }
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"error":"Not found"}"#,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packuments_point_at_verifiable_tarballs() {
        let registry = NpmRegistry::default();
        registry.publish("lodash", "4.17.20").unwrap();
        registry.publish("lodash", "4.17.21").unwrap();
        registry.publish("lodash", "5.0.0-rc.1").unwrap();
        registry.publish("@acme/util", "1.0.0").unwrap();
        assert!(registry.publish("Lodash", "1.0.0").is_err());
        assert!(registry.publish("lodash", "latest").is_err());

        let doc = registry
            .packument("lodash", "http://127.0.0.1:1/npm/")
            .unwrap();
        assert_eq!(doc["dist-tags"]["latest"], "4.17.21");
        let dist = &doc["versions"]["4.17.21"]["dist"];
        assert_eq!(
            dist["tarball"],
            "http://127.0.0.1:1/npm/lodash/-/lodash-4.17.21.tgz"
        );
        let tgz = registry.tarball("lodash", "lodash-4.17.21.tgz").unwrap();
        let digest = base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(&tgz));
        assert_eq!(dist["integrity"], format!("sha512-{digest}"));

        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tgz.as_slice()));
        let paths: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(paths, ["package/package.json", "package/index.js"]);

        let scoped = registry.packument("@acme/util", "http://r/npm/").unwrap();
        assert_eq!(
            scoped["versions"]["1.0.0"]["dist"]["tarball"],
            "http://r/npm/@acme/util/-/util-1.0.0.tgz"
        );
        assert!(registry.tarball("@acme/util", "util-1.0.0.tgz").is_some());
        assert!(registry.packument("nope", "http://r/npm/").is_none());
    }
}
