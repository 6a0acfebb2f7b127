//! `cargo xtask flatpak-sources`: the Flatpak build's offline crate sources.
//!
//! flatpak-builder builds without network, so every crate of `Cargo.lock` is listed
//! as an archive with its checksum and unpacked into a vendor directory that cargo
//! uses in place of crates.io (the layout flatpak-cargo-generator makes). Generated
//! from `Cargo.lock` alone, so a test can tell when the committed file is stale.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

use serde::Deserialize;

use crate::ci::root;

const CRATES_IO: &str = "registry+https://github.com/rust-lang/crates.io-index";
/// Where the manifest's cargo build finds the sources (relative to the build dir).
const VENDOR: &str = "cargo/vendor";

#[derive(Debug, Deserialize)]
struct Lock {
    package: Vec<Package>,
}

#[derive(Debug, Deserialize)]
struct Package {
    name: String,
    version: String,
    source: Option<String>,
    checksum: Option<String>,
}

/// The committed sources file.
pub fn sources_path() -> PathBuf {
    root().join("flatpak/cargo-sources.json")
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// The sources JSON for a `Cargo.lock` text. Workspace members (no source) are built
/// from the checkout; anything but crates.io is refused, since the build has no network.
pub fn sources(lock: &str) -> Result<String, String> {
    let lock: Lock = toml::from_str(lock).map_err(|e| format!("Cargo.lock: {e}"))?;
    let mut out = String::from("[\n");
    for p in &lock.package {
        let Some(source) = &p.source else { continue };
        if source != CRATES_IO {
            return Err(format!(
                "{} {}: only crates.io sources can be vendored for Flatpak, not {source}",
                p.name, p.version
            ));
        }
        let sum = p
            .checksum
            .as_deref()
            .ok_or_else(|| format!("{} {}: no checksum in Cargo.lock", p.name, p.version))?;
        let dir = format!("{VENDOR}/{}-{}", p.name, p.version);
        let url = format!(
            "https://static.crates.io/crates/{0}/{0}-{1}.crate",
            p.name, p.version
        );
        // cargo checks vendored crates against .cargo-checksum.json; the archive's
        // checksum is what Cargo.lock pins, and per-file sums are not needed.
        let checksum = format!(r#"{{"package": "{sum}", "files": {{}}}}"#);
        let _ = write!(
            out,
            "  {{\n    \"type\": \"archive\",\n    \"archive-type\": \"tar-gzip\",\n    \"url\": {},\n    \"sha256\": {},\n    \"dest\": {}\n  }},\n  {{\n    \"type\": \"inline\",\n    \"contents\": {},\n    \"dest\": {},\n    \"dest-filename\": \".cargo-checksum.json\"\n  }},\n",
            json_str(&url),
            json_str(sum),
            json_str(&dir),
            json_str(&checksum),
            json_str(&dir),
        );
    }
    let config = format!(
        "[source.vendored-sources]\ndirectory = \"{VENDOR}\"\n\n[source.crates-io]\nreplace-with = \"vendored-sources\"\n"
    );
    let _ = write!(
        out,
        "  {{\n    \"type\": \"inline\",\n    \"contents\": {},\n    \"dest\": \"cargo\",\n    \"dest-filename\": \"config.toml\"\n  }}\n]\n",
        json_str(&config)
    );
    Ok(out)
}

/// Regenerate the committed file from the workspace's `Cargo.lock`.
pub fn write_sources() -> Result<PathBuf, String> {
    let lock_path = root().join("Cargo.lock");
    let lock =
        fs::read_to_string(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    let path = sources_path();
    fs::write(&path, sources(&lock)?).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_sources_match_cargo_lock() {
        let lock = fs::read_to_string(root().join("Cargo.lock")).unwrap();
        let want = sources(&lock).unwrap();
        let have = fs::read_to_string(sources_path()).unwrap_or_default();
        assert!(
            have == want,
            "flatpak/cargo-sources.json is stale: run `cargo xtask flatpak-sources`"
        );
        // Every registry crate of the lock file is there, with its pinned checksum.
        let parsed: serde_json::Value = serde_json::from_str(&have).unwrap();
        let entries = parsed.as_array().unwrap();
        let lock: Lock = toml::from_str(&lock).unwrap();
        for p in lock.package.iter().filter(|p| p.source.is_some()) {
            let sum = p.checksum.as_deref().unwrap();
            assert!(
                entries.iter().any(|e| e["sha256"] == sum
                    && e["dest"] == format!("{VENDOR}/{}-{}", p.name, p.version)),
                "{} {} missing",
                p.name,
                p.version
            );
        }
    }

    #[test]
    fn non_registry_sources_are_refused() {
        let lock = r#"
[[package]]
name = "x"
version = "1.0.0"
source = "git+https://example.org/x#abc"
"#;
        assert!(sources(lock).unwrap_err().contains("only crates.io"));
    }
}
