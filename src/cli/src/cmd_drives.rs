//! `strongroomctl drives`: removable drives as udisks2 sees them, and the key-drive
//! lookups of `create --keyfile` and `keygen --out`.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use clap::Args;
use strongroom_vault::context::KeyDrive;
use strongroom_vault::drives::{Drive, DriveError, Udisks};
use strongroom_vault::keydrive;

use crate::exit;

/// List removable drives (udisks2): vendor, model, serial, file systems and mount points.
#[derive(Debug, Args)]
pub struct DrivesArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Fixed disks too.
    #[arg(long)]
    pub all: bool,
}

fn rt() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn human(bytes: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    format!("{v:.1} {}", units[u])
}

pub fn drives(a: DrivesArgs) -> Result<i32> {
    let list: Vec<Drive> = rt()?.block_on(async {
        let u = Udisks::system().await?;
        u.drives().await
    })?;
    let list: Vec<Drive> = list
        .into_iter()
        .filter(|d| a.all || d.is_removable())
        .collect();
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &list)?;
        writeln!(out)?;
        return Ok(exit::OK);
    }
    for d in &list {
        writeln!(
            out,
            "{}  {}  serial {}  {}",
            d.describe(),
            human(d.size),
            if d.serial.is_empty() { "-" } else { &d.serial },
            if d.connection_bus.is_empty() {
                "-"
            } else {
                &d.connection_bus
            },
        )?;
        for v in &d.volumes {
            let mounts: Vec<String> = v
                .mount_points
                .iter()
                .map(|m| m.display().to_string())
                .collect();
            writeln!(
                out,
                "  {}  {}  uuid {}  label {}  {}",
                v.device.display(),
                if v.fs_type.is_empty() {
                    "-"
                } else {
                    &v.fs_type
                },
                if v.uuid.is_empty() { "-" } else { &v.uuid },
                if v.label.is_empty() { "-" } else { &v.label },
                if mounts.is_empty() {
                    "not mounted".into()
                } else {
                    mounts.join(", ")
                },
            )?;
        }
    }
    Ok(exit::OK)
}

/// The key drive holding `path`, if it is on a removable drive. Without udisks the
/// file is used where it is, with a note.
pub fn key_drive_of(path: &Path) -> Result<Option<(KeyDrive, String)>> {
    match rt()?.block_on(keydrive::identify(path)) {
        Ok(found) => Ok(found),
        Err(e @ (DriveError::Unavailable { .. } | DriveError::Timeout { .. })) => {
            eprintln!(
                "strongroomctl: note: {} is recorded by its path, not as a key drive: {e}",
                path.display()
            );
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}
