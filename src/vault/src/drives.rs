//! Removable drives through udisks2 (`org.freedesktop.UDisks2` on the system bus).
//!
//! Lists drives with their file systems, mounts and unmounts through udisks (as the
//! calling user: udisks asks polkit, so no root helper is involved), finds the drive a
//! vault's key lives on by serial and file-system UUID, and reports drives coming and
//! going ([`DriveWatch`]) for auto-unlock on plug and lock on removal.
//!
//! Every D-Bus call has a timeout: a missing or wedged udisks is a typed error
//! ([`DriveError::Unavailable`], [`DriveError::Timeout`]), never a hang.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use zbus::fdo::{ObjectManagerProxy, PropertiesChanged};
use zbus::zvariant::{OwnedValue, Value};
use zbus::Connection;

use crate::context::KeyDrive;

pub const UDISKS: &str = "org.freedesktop.UDisks2";
const ROOT: &str = "/org/freedesktop/UDisks2";
const IF_DRIVE: &str = "org.freedesktop.UDisks2.Drive";
const IF_BLOCK: &str = "org.freedesktop.UDisks2.Block";
const IF_FS: &str = "org.freedesktop.UDisks2.Filesystem";
const IF_PART: &str = "org.freedesktop.UDisks2.Partition";

/// Queries; udisks answers them from memory.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Mount and unmount: polkit may ask the user for a password first.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriveError {
    #[error("udisks2 is not available ({reason}): install and start udisks2, or mount the key drive yourself and give the key file's path")]
    Unavailable { reason: String },
    #[error("udisks2 did not answer {what} within {} s", timeout.as_secs())]
    Timeout {
        what: &'static str,
        timeout: Duration,
    },
    #[error("udisks2 {what}: {source}")]
    Call {
        what: &'static str,
        #[source]
        source: Box<zbus::Error>,
    },
    #[error("key drive {0} is not plugged in")]
    NotPlugged(String),
    #[error(
        "key drive {drive} is plugged in, but has no file system with UUID {uuid} (reformatted?)"
    )]
    NoPartition { drive: String, uuid: String },
    #[error("{}: {reason}", path.display())]
    NotOnDrive { path: PathBuf, reason: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One drive (a USB stick, a card reader slot, a disk).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drive {
    /// udisks object path: the drive's identity while it stays plugged in.
    pub object: String,
    pub vendor: String,
    pub model: String,
    /// Empty when the device reports none.
    pub serial: String,
    pub size: u64,
    /// `usb`, `sdio`, `ieee1394` or empty.
    pub connection_bus: String,
    pub removable: bool,
    /// Its block devices with a file system or a partition, in device order.
    pub volumes: Vec<Volume>,
}

/// A block device of a drive: a partition, or the whole medium when unpartitioned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Volume {
    pub object: String,
    pub device: PathBuf,
    /// `st_dev` of the files on it.
    pub device_number: u64,
    pub size: u64,
    /// `vfat`, `ext4`, ...; empty when unknown.
    pub fs_type: String,
    pub uuid: String,
    pub label: String,
    /// Has udisks' Filesystem interface (can be mounted).
    pub mountable: bool,
    pub mount_points: Vec<PathBuf>,
}

impl Drive {
    /// "vendor model serial", for messages.
    pub fn describe(&self) -> String {
        describe(&self.vendor, &self.model, &self.serial)
    }

    /// What `strongroomctl drives` shows by default: USB and removable media.
    pub fn is_removable(&self) -> bool {
        self.removable || self.connection_bus == "usb"
    }

    pub fn volume_with_uuid(&self, uuid: &str) -> Option<&Volume> {
        self.volumes
            .iter()
            .find(|v| !uuid.is_empty() && v.uuid.eq_ignore_ascii_case(uuid))
    }
}

fn describe(vendor: &str, model: &str, serial: &str) -> String {
    let parts: Vec<&str> = [vendor, model, serial]
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if parts.is_empty() {
        "(unnamed drive)".into()
    } else {
        parts.join(" ")
    }
}

/// How a drive relates to a vault's recorded key drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match<'a> {
    /// The drive and the file system both match.
    Exact(&'a Volume),
    /// The drive matches but none of its file systems has the UUID.
    DriveOnly,
    No,
}

impl KeyDrive {
    /// The identity of `volume` on `drive`.
    pub fn of(drive: &Drive, volume: &Volume) -> KeyDrive {
        KeyDrive {
            serial: drive.serial.clone(),
            partition_uuid: volume.uuid.clone(),
            vendor: drive.vendor.trim().to_owned(),
            model: drive.model.trim().to_owned(),
        }
    }

    /// "vendor model serial" as recorded.
    pub fn describe(&self) -> String {
        let d = describe(&self.vendor, &self.model, &self.serial);
        if self.serial.is_empty() {
            format!("{d} (file system {})", self.partition_uuid)
        } else {
            d
        }
    }

    /// A drive without a serial number is recognised by the file-system UUID alone.
    pub fn matches<'a>(&self, drive: &'a Drive) -> Match<'a> {
        let by_serial = !self.serial.is_empty();
        if by_serial && drive.serial.trim() != self.serial.trim() {
            return Match::No;
        }
        match drive.volume_with_uuid(&self.partition_uuid) {
            Some(v) => Match::Exact(v),
            None if by_serial => Match::DriveOnly,
            None => Match::No,
        }
    }

    /// The drive and volume among `drives`, or why not.
    pub fn find<'a>(&self, drives: &'a [Drive]) -> Result<(&'a Drive, &'a Volume), DriveError> {
        let mut drive_only = None;
        for d in drives {
            match self.matches(d) {
                Match::Exact(v) => return Ok((d, v)),
                Match::DriveOnly => drive_only = Some(d),
                Match::No => {}
            }
        }
        Err(match drive_only {
            Some(d) => DriveError::NoPartition {
                drive: d.describe(),
                uuid: self.partition_uuid.clone(),
            },
            None => DriveError::NotPlugged(self.describe()),
        })
    }
}

/// Every udisks object's interfaces and properties (what GetManagedObjects returns).
pub type Objects = BTreeMap<String, HashMap<String, HashMap<String, OwnedValue>>>;

fn prop<'a>(props: &'a HashMap<String, OwnedValue>, name: &str) -> Option<&'a Value<'a>> {
    props.get(name).map(|v| {
        let v: &Value = v;
        // A property can arrive boxed in a variant.
        match v {
            Value::Value(inner) => &**inner,
            v => v,
        }
    })
}

fn p_str(props: &HashMap<String, OwnedValue>, name: &str) -> String {
    match prop(props, name) {
        Some(Value::Str(s)) => s.as_str().to_owned(),
        Some(Value::ObjectPath(p)) => p.as_str().to_owned(),
        _ => String::new(),
    }
}

fn p_u64(props: &HashMap<String, OwnedValue>, name: &str) -> u64 {
    match prop(props, name) {
        Some(Value::U64(n)) => *n,
        Some(Value::U32(n)) => u64::from(*n),
        _ => 0,
    }
}

fn p_bool(props: &HashMap<String, OwnedValue>, name: &str) -> bool {
    matches!(prop(props, name), Some(Value::Bool(true)))
}

/// udisks' `ay` strings are NUL-terminated.
fn bytes_path(v: &Value) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let Value::Array(a) = v else { return None };
    let mut bytes = Vec::with_capacity(a.len());
    for b in a.iter() {
        match b {
            Value::U8(0) => break,
            Value::U8(b) => bytes.push(*b),
            _ => return None,
        }
    }
    (!bytes.is_empty()).then(|| PathBuf::from(std::ffi::OsStr::from_bytes(&bytes)))
}

fn p_path(props: &HashMap<String, OwnedValue>, name: &str) -> Option<PathBuf> {
    prop(props, name).and_then(bytes_path)
}

fn p_paths(props: &HashMap<String, OwnedValue>, name: &str) -> Vec<PathBuf> {
    match prop(props, name) {
        Some(Value::Array(a)) => a.iter().filter_map(bytes_path).collect(),
        _ => Vec::new(),
    }
}

/// The drives in a udisks object snapshot, by object path, volumes by device.
pub fn drives_from_objects(objects: &Objects) -> Vec<Drive> {
    let mut drives: BTreeMap<&str, Drive> = objects
        .iter()
        .filter_map(|(path, ifaces)| {
            let d = ifaces.get(IF_DRIVE)?;
            Some((
                path.as_str(),
                Drive {
                    object: path.clone(),
                    vendor: p_str(d, "Vendor").trim().to_owned(),
                    model: p_str(d, "Model").trim().to_owned(),
                    serial: p_str(d, "Serial").trim().to_owned(),
                    size: p_u64(d, "Size"),
                    connection_bus: p_str(d, "ConnectionBus"),
                    removable: p_bool(d, "Removable")
                        || p_bool(d, "MediaRemovable")
                        || p_bool(d, "Ejectable"),
                    volumes: Vec::new(),
                },
            ))
        })
        .collect();
    for (path, ifaces) in objects {
        let Some(b) = ifaces.get(IF_BLOCK) else {
            continue;
        };
        let Some(drive) = drives.get_mut(p_str(b, "Drive").as_str()) else {
            continue;
        };
        let fs = ifaces.get(IF_FS);
        if fs.is_none() && !ifaces.contains_key(IF_PART) && p_str(b, "IdType").is_empty() {
            // The whole disk of a partitioned drive: its partitions are listed instead.
            continue;
        }
        drive.volumes.push(Volume {
            object: path.clone(),
            device: p_path(b, "PreferredDevice")
                .or_else(|| p_path(b, "Device"))
                .unwrap_or_default(),
            device_number: p_u64(b, "DeviceNumber"),
            size: p_u64(b, "Size"),
            fs_type: p_str(b, "IdType"),
            uuid: p_str(b, "IdUUID"),
            label: p_str(b, "IdLabel"),
            mountable: fs.is_some(),
            mount_points: fs.map(|f| p_paths(f, "MountPoints")).unwrap_or_default(),
        });
    }
    let mut out: Vec<Drive> = drives.into_values().collect();
    for d in &mut out {
        d.volumes.sort_by(|a, b| a.device.cmp(&b.device));
    }
    out
}

/// A connection to udisks on the system bus.
#[derive(Debug, Clone)]
pub struct Udisks {
    conn: Connection,
    timeout: Duration,
}

fn bus_error(what: &'static str, e: zbus::Error) -> DriveError {
    use zbus::DBusError;
    let (name, message) = match &e {
        zbus::Error::MethodError(name, msg, _) => (name.to_string(), msg.clone()),
        zbus::Error::FDO(f) => (f.name().to_string(), f.description().map(str::to_owned)),
        _ => (String::new(), None),
    };
    // Not installed, or its activation failed.
    let absent = name == "org.freedesktop.DBus.Error.ServiceUnknown"
        || name == "org.freedesktop.DBus.Error.NameHasNoOwner"
        || name.starts_with("org.freedesktop.DBus.Error.Spawn.");
    if absent {
        return DriveError::Unavailable {
            reason: message.unwrap_or(name),
        };
    }
    DriveError::Call {
        what,
        source: Box::new(e),
    }
}

async fn bounded<T, E: Into<zbus::Error>>(
    what: &'static str,
    timeout: Duration,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, DriveError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => r.map_err(|e| bus_error(what, e.into())),
        Err(_) => Err(DriveError::Timeout { what, timeout }),
    }
}

impl Udisks {
    /// Connects to the system bus (`DBUS_SYSTEM_BUS_ADDRESS` or the standard socket).
    pub async fn system() -> Result<Udisks, DriveError> {
        Self::system_with_timeout(DEFAULT_TIMEOUT).await
    }

    pub async fn system_with_timeout(timeout: Duration) -> Result<Udisks, DriveError> {
        let conn = match tokio::time::timeout(timeout, Connection::system()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(DriveError::Unavailable {
                    reason: format!("no system bus: {e}"),
                })
            }
            Err(_) => {
                return Err(DriveError::Timeout {
                    what: "the system bus connection",
                    timeout,
                })
            }
        };
        Ok(Udisks { conn, timeout })
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    async fn object_manager(&self) -> Result<ObjectManagerProxy<'static>, DriveError> {
        let builder = ObjectManagerProxy::builder(&self.conn)
            .destination(UDISKS)
            .and_then(|b| b.path(ROOT))
            .map_err(|e| bus_error("object manager", e))?
            .cache_properties(zbus::proxy::CacheProperties::No);
        bounded("object manager", self.timeout, builder.build()).await
    }

    async fn objects(&self, om: &ObjectManagerProxy<'_>) -> Result<Objects, DriveError> {
        let managed = bounded("GetManagedObjects", self.timeout, om.get_managed_objects()).await?;
        Ok(managed
            .into_iter()
            .map(|(p, ifaces)| {
                (
                    p.to_string(),
                    ifaces
                        .into_iter()
                        .map(|(i, props)| (i.to_string(), props))
                        .collect(),
                )
            })
            .collect())
    }

    /// Every drive udisks knows (filter with [`Drive::is_removable`]).
    pub async fn drives(&self) -> Result<Vec<Drive>, DriveError> {
        let om = self.object_manager().await?;
        Ok(drives_from_objects(&self.objects(&om).await?))
    }

    async fn fs_call<R>(&self, volume: &Volume, method: &'static str) -> Result<R, DriveError>
    where
        R: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
    {
        let options: HashMap<&str, Value> = HashMap::new();
        let reply = bounded(
            method,
            MOUNT_TIMEOUT.max(self.timeout),
            self.conn.call_method(
                Some(UDISKS),
                volume.object.as_str(),
                Some(IF_FS),
                method,
                &(options,),
            ),
        )
        .await?;
        reply
            .body()
            .deserialize::<R>()
            .map_err(|e| DriveError::Call {
                what: method,
                source: Box::new(e),
            })
    }

    /// Mounts through udisks (at `/media/$USER/LABEL`), returns the mount point.
    pub async fn mount(&self, volume: &Volume) -> Result<PathBuf, DriveError> {
        let p: String = self.fs_call(volume, "Mount").await?;
        Ok(PathBuf::from(p))
    }

    pub async fn unmount(&self, volume: &Volume) -> Result<(), DriveError> {
        self.fs_call::<()>(volume, "Unmount").await
    }

    /// The drive and volume holding `path` (matched by the device number of the file
    /// system), and `path` relative to that volume's mount point.
    pub async fn locate(&self, path: &Path) -> Result<(Drive, Volume, PathBuf), DriveError> {
        use std::os::unix::fs::MetadataExt;
        let io = |source| DriveError::Io {
            path: path.to_owned(),
            source,
        };
        let path = std::fs::canonicalize(path).map_err(io)?;
        let dev = std::fs::metadata(&path).map_err(io)?.dev();
        let drives = self.drives().await?;
        let not = |reason: String| DriveError::NotOnDrive {
            path: path.clone(),
            reason,
        };
        let (d, v) = drives
            .iter()
            .find_map(|d| {
                d.volumes
                    .iter()
                    .find(|v| v.device_number == dev)
                    .map(|v| (d, v))
            })
            .ok_or_else(|| not("its file system is not on a drive udisks2 knows".into()))?;
        let rel = v
            .mount_points
            .iter()
            .filter_map(|m| path.strip_prefix(m).ok())
            .min_by_key(|r| r.components().count())
            .ok_or_else(|| {
                not(format!(
                    "{} is not mounted where udisks2 says",
                    v.device.display()
                ))
            })?
            .to_owned();
        if v.uuid.is_empty() && d.serial.is_empty() {
            return Err(not(format!(
                "{} has neither a serial number nor a file-system UUID to recognise it by",
                d.describe()
            )));
        }
        Ok((d.clone(), v.clone(), rel))
    }

    /// Makes the key drive's file system available: finds it, mounts it if it is not.
    pub async fn open_key_drive(&self, key: &KeyDrive) -> Result<MountedKeyDrive, DriveError> {
        let drives = self.drives().await?;
        let (drive, volume) = key.find(&drives)?;
        let (root, mounted_by_us) = match volume.mount_points.first() {
            Some(m) => (m.clone(), false),
            None => (self.mount(volume).await?, true),
        };
        Ok(MountedKeyDrive {
            drive: drive.clone(),
            volume: volume.clone(),
            root,
            mounted_by_us,
        })
    }

    /// Follows drives as they come and go. Subscribes before taking the snapshot, so
    /// no change between the two is lost.
    pub async fn watch(&self) -> Result<DriveWatch, DriveError> {
        let om = self.object_manager().await?;
        let added = bounded(
            "InterfacesAdded",
            self.timeout,
            om.receive_interfaces_added(),
        )
        .await?;
        let removed = bounded(
            "InterfacesRemoved",
            self.timeout,
            om.receive_interfaces_removed(),
        )
        .await?;
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender(UDISKS)
            .and_then(|b| b.interface("org.freedesktop.DBus.Properties"))
            .and_then(|b| b.member("PropertiesChanged"))
            .and_then(|b| b.path_namespace(ROOT))
            .map_err(|e| DriveError::Call {
                what: "PropertiesChanged",
                source: Box::new(e),
            })?
            .build();
        let changed = bounded(
            "PropertiesChanged",
            self.timeout,
            zbus::MessageStream::for_match_rule(rule, &self.conn, Some(64)),
        )
        .await?;
        let objects = self.objects(&om).await?;
        let drives = drives_from_objects(&objects);
        let mut w = DriveWatch {
            objects,
            drives,
            added: Box::pin(added),
            removed: Box::pin(removed),
            changed: Box::pin(changed),
            pending: Vec::new(),
            last_volumes: HashMap::new(),
        };
        w.note_volumes();
        Ok(w)
    }
}

/// The key drive's file system, mounted.
#[derive(Debug, Clone)]
pub struct MountedKeyDrive {
    pub drive: Drive,
    pub volume: Volume,
    /// Its mount point.
    pub root: PathBuf,
    /// We mounted it, so we unmount it when done.
    pub mounted_by_us: bool,
}

impl MountedKeyDrive {
    /// `rel` on the drive (a key path stored relative to the drive's root).
    pub fn path(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    /// Unmounts if we mounted it.
    pub async fn release(self, udisks: &Udisks) -> Result<(), DriveError> {
        if self.mounted_by_us {
            udisks.unmount(&self.volume).await?;
        }
        Ok(())
    }
}

/// A change of the drive list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", content = "drive", rename_all = "kebab-case")]
pub enum DriveEvent {
    /// A drive was plugged in (its file systems may follow as [`DriveEvent::Changed`]).
    Added(Drive),
    /// Volumes appeared, vanished, or were mounted or unmounted.
    Changed(Drive),
    /// Unplugged; the drive as last seen with volumes (serial, UUIDs), for
    /// lock-on-removal.
    Removed(Drive),
}

impl DriveEvent {
    pub fn drive(&self) -> &Drive {
        match self {
            DriveEvent::Added(d) | DriveEvent::Changed(d) | DriveEvent::Removed(d) => d,
        }
    }
}

type Pinned<T> = std::pin::Pin<Box<T>>;

/// Drives as they come and go: [`DriveWatch::drives`] is the current list,
/// [`DriveWatch::next`] waits for the next change.
pub struct DriveWatch {
    objects: Objects,
    drives: Vec<Drive>,
    added: Pinned<zbus::fdo::InterfacesAddedStream>,
    removed: Pinned<zbus::fdo::InterfacesRemovedStream>,
    changed: Pinned<zbus::MessageStream>,
    pending: Vec<DriveEvent>,
    /// The volumes each drive last had: on unplug udisks drops the partitions before
    /// the drive, and lock-on-removal wants to know which file systems went.
    last_volumes: HashMap<String, Vec<Volume>>,
}

impl std::fmt::Debug for DriveWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriveWatch")
            .field("drives", &self.drives)
            .finish_non_exhaustive()
    }
}

/// Applies one InterfacesAdded / InterfacesRemoved / PropertiesChanged to a snapshot.
#[derive(Debug)]
pub enum ObjectChange {
    Added {
        path: String,
        interfaces: HashMap<String, HashMap<String, OwnedValue>>,
    },
    Removed {
        path: String,
        interfaces: Vec<String>,
    },
    Properties {
        path: String,
        interface: String,
        changed: HashMap<String, OwnedValue>,
        invalidated: Vec<String>,
    },
}

impl ObjectChange {
    pub fn apply(self, objects: &mut Objects) {
        match self {
            ObjectChange::Added { path, interfaces } => {
                objects.entry(path).or_default().extend(interfaces);
            }
            ObjectChange::Removed { path, interfaces } => {
                if let Some(o) = objects.get_mut(&path) {
                    for i in &interfaces {
                        o.remove(i);
                    }
                    if o.is_empty() {
                        objects.remove(&path);
                    }
                }
            }
            ObjectChange::Properties {
                path,
                interface,
                changed,
                invalidated,
            } => {
                if let Some(props) = objects.get_mut(&path).and_then(|o| o.get_mut(&interface)) {
                    for k in &invalidated {
                        props.remove(k);
                    }
                    props.extend(changed);
                }
            }
        }
    }
}

/// What changed between two drive lists (by object path).
pub fn diff(old: &[Drive], new: &[Drive]) -> Vec<DriveEvent> {
    let find = |list: &[Drive], o: &str| list.iter().find(|d| d.object == o).cloned();
    let mut ev = Vec::new();
    for d in old {
        if find(new, &d.object).is_none() {
            ev.push(DriveEvent::Removed(d.clone()));
        }
    }
    for d in new {
        match find(old, &d.object) {
            None => ev.push(DriveEvent::Added(d.clone())),
            Some(o) if o != *d => ev.push(DriveEvent::Changed(d.clone())),
            Some(_) => {}
        }
    }
    ev
}

fn owned(props: HashMap<&str, Value<'_>>) -> HashMap<String, OwnedValue> {
    props
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_owned(), v.try_to_owned().ok()?)))
        .collect()
}

impl DriveWatch {
    pub fn drives(&self) -> &[Drive] {
        &self.drives
    }

    fn note_volumes(&mut self) {
        for d in &self.drives {
            if !d.volumes.is_empty() {
                self.last_volumes
                    .insert(d.object.clone(), d.volumes.clone());
            }
        }
    }

    /// The next change; `None` when the bus connection is gone.
    pub async fn next(&mut self) -> Option<DriveEvent> {
        loop {
            if !self.pending.is_empty() {
                return Some(self.pending.remove(0));
            }
            let change = tokio::select! {
                s = self.added.next() => {
                    let s = s?;
                    let Ok(a) = s.args() else { continue };
                    ObjectChange::Added {
                        path: a.object_path.to_string(),
                        interfaces: a
                            .interfaces_and_properties
                            .into_iter()
                            .map(|(i, p)| (i.to_string(), owned(p)))
                            .collect(),
                    }
                }
                s = self.removed.next() => {
                    let s = s?;
                    let Ok(a) = s.args() else { continue };
                    ObjectChange::Removed {
                        path: a.object_path.to_string(),
                        interfaces: a.interfaces.iter().map(|i| i.to_string()).collect(),
                    }
                }
                m = self.changed.next() => {
                    let Ok(m) = m? else { continue };
                    let Some(path) = m.header().path().map(|p| p.to_string()) else { continue };
                    let Some(s) = PropertiesChanged::from_message(m) else { continue };
                    let Ok(a) = s.args() else { continue };
                    ObjectChange::Properties {
                        path,
                        interface: a.interface_name.to_string(),
                        changed: owned(a.changed_properties),
                        invalidated: a.invalidated_properties.iter().map(|s| s.to_string()).collect(),
                    }
                }
            };
            change.apply(&mut self.objects);
            let drives = drives_from_objects(&self.objects);
            self.pending = diff(&self.drives, &drives);
            for e in &mut self.pending {
                if let DriveEvent::Removed(d) = e {
                    if d.volumes.is_empty() {
                        d.volumes = self.last_volumes.remove(&d.object).unwrap_or_default();
                    }
                }
            }
            self.drives = drives;
            self.note_volumes();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v<'a>(x: impl Into<Value<'a>>) -> OwnedValue {
        x.into().try_to_owned().unwrap()
    }

    fn ay(s: &str) -> OwnedValue {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        v(b)
    }

    fn props(list: Vec<(&str, OwnedValue)>) -> HashMap<String, OwnedValue> {
        list.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    const DRIVE: &str = "/org/freedesktop/UDisks2/drives/QEMU_QEMU_HARDDISK_SR_KEY_1";

    /// A snapshot shaped like udisks 2.9's for a partitioned USB stick (property
    /// names and types from udisks' org.freedesktop.UDisks2.xml).
    fn snapshot() -> Objects {
        let mut o = Objects::new();
        o.insert(
            DRIVE.into(),
            [(
                IF_DRIVE.into(),
                props(vec![
                    ("Vendor", v("QEMU    ")),
                    ("Model", v("QEMU HARDDISK")),
                    ("Serial", v("SR-KEY-1")),
                    ("Size", v(33_554_432u64)),
                    ("ConnectionBus", v("usb")),
                    ("Removable", v(true)),
                ]),
            )]
            .into(),
        );
        let block = |dev: &str, num: u64, extra: Vec<(&str, OwnedValue)>| {
            let mut p = props(vec![
                ("Device", ay(dev)),
                ("PreferredDevice", ay(dev)),
                ("DeviceNumber", v(num)),
                (
                    "Drive",
                    v(zbus::zvariant::ObjectPath::try_from(DRIVE).unwrap()),
                ),
                ("Size", v(1u64 << 20)),
            ]);
            p.extend(props(extra));
            p
        };
        o.insert(
            "/org/freedesktop/UDisks2/block_devices/sda".into(),
            [
                (
                    IF_BLOCK.into(),
                    block("/dev/sda", 0x800, vec![("IdType", v(""))]),
                ),
                (
                    "org.freedesktop.UDisks2.PartitionTable".into(),
                    props(vec![]),
                ),
            ]
            .into(),
        );
        o.insert(
            "/org/freedesktop/UDisks2/block_devices/sda1".into(),
            [
                (
                    IF_BLOCK.into(),
                    block(
                        "/dev/sda1",
                        0x801,
                        vec![
                            ("IdType", v("vfat")),
                            ("IdUUID", v("1234-ABCD")),
                            ("IdLabel", v("SRKEY")),
                        ],
                    ),
                ),
                (IF_PART.into(), props(vec![("Number", v(1u32))])),
                (
                    IF_FS.into(),
                    props(vec![("MountPoints", v(vec![b"/media/u/SRKEY\0".to_vec()]))]),
                ),
            ]
            .into(),
        );
        // A block device of no drive (a loop device): ignored.
        o.insert(
            "/org/freedesktop/UDisks2/block_devices/loop0".into(),
            [(
                IF_BLOCK.into(),
                props(vec![(
                    "Drive",
                    v(zbus::zvariant::ObjectPath::try_from("/").unwrap()),
                )]),
            )]
            .into(),
        );
        o
    }

    #[test]
    fn parses_drives_volumes_and_mount_points() {
        let d = drives_from_objects(&snapshot());
        assert_eq!(d.len(), 1);
        let d = &d[0];
        assert_eq!(d.vendor, "QEMU", "padding trimmed");
        assert_eq!(d.describe(), "QEMU QEMU HARDDISK SR-KEY-1");
        assert!(d.is_removable());
        assert_eq!(d.size, 33_554_432);
        assert_eq!(
            d.volumes.len(),
            1,
            "the partitioned whole disk is not a volume"
        );
        let v = &d.volumes[0];
        assert_eq!(v.device, Path::new("/dev/sda1"));
        assert_eq!(v.device_number, 0x801);
        assert_eq!(
            (v.fs_type.as_str(), v.uuid.as_str(), v.label.as_str()),
            ("vfat", "1234-ABCD", "SRKEY")
        );
        assert!(v.mountable);
        assert_eq!(v.mount_points, vec![PathBuf::from("/media/u/SRKEY")]);
    }

    #[test]
    fn key_drive_identity() {
        let drives = drives_from_objects(&snapshot());
        let key = |serial: &str, uuid: &str| KeyDrive {
            serial: serial.into(),
            partition_uuid: uuid.into(),
            vendor: "Acme".into(),
            model: "Stick".into(),
        };
        let (d, v) = key("SR-KEY-1", "1234-abcd").find(&drives).unwrap();
        assert_eq!(
            (d.serial.as_str(), v.uuid.as_str()),
            ("SR-KEY-1", "1234-ABCD")
        );
        // No serial recorded: the UUID alone.
        assert!(key("", "1234-ABCD").find(&drives).is_ok());
        match key("SR-KEY-1", "0000-0000").find(&drives) {
            Err(DriveError::NoPartition { drive, uuid }) => {
                assert_eq!(drive, "QEMU QEMU HARDDISK SR-KEY-1");
                assert_eq!(uuid, "0000-0000");
            }
            other => panic!("{other:?}"),
        }
        let e = key("OTHER", "1234-ABCD").find(&drives).unwrap_err();
        assert_eq!(
            e.to_string(),
            "key drive Acme Stick OTHER is not plugged in"
        );
        assert_eq!(
            key("", "").matches(&drives[0]),
            Match::No,
            "an empty identity matches nothing"
        );
        let rec = KeyDrive::of(&drives[0], &drives[0].volumes[0]);
        assert_eq!(rec.matches(&drives[0]), Match::Exact(&drives[0].volumes[0]));
    }

    #[test]
    fn snapshot_updates_become_events() {
        let mut objects = snapshot();
        let before = drives_from_objects(&objects);
        // Unmounted: a PropertiesChanged on the file system.
        ObjectChange::Properties {
            path: "/org/freedesktop/UDisks2/block_devices/sda1".into(),
            interface: IF_FS.into(),
            changed: props(vec![("MountPoints", v(Vec::<Vec<u8>>::new()))]),
            invalidated: vec![],
        }
        .apply(&mut objects);
        let after = drives_from_objects(&objects);
        let ev = diff(&before, &after);
        assert_eq!(ev.len(), 1);
        assert!(matches!(&ev[0], DriveEvent::Changed(d) if d.volumes[0].mount_points.is_empty()));
        // Unplugged: udisks removes the partition, the disk and the drive.
        for p in [
            "/org/freedesktop/UDisks2/block_devices/sda1",
            "/org/freedesktop/UDisks2/block_devices/sda",
            DRIVE,
        ] {
            let interfaces = objects[p].keys().cloned().collect();
            ObjectChange::Removed {
                path: p.into(),
                interfaces,
            }
            .apply(&mut objects);
        }
        let gone = drives_from_objects(&objects);
        match diff(&after, &gone).as_slice() {
            [DriveEvent::Removed(d)] => assert_eq!(d.serial, "SR-KEY-1"),
            other => panic!("{other:?}"),
        }
        // Plugged back in, drive object first.
        let mut snap = snapshot();
        let interfaces = snap.remove(DRIVE).unwrap();
        ObjectChange::Added {
            path: DRIVE.into(),
            interfaces,
        }
        .apply(&mut objects);
        match diff(&gone, &drives_from_objects(&objects)).as_slice() {
            [DriveEvent::Added(d)] => assert!(d.volumes.is_empty()),
            other => panic!("{other:?}"),
        }
    }
}
