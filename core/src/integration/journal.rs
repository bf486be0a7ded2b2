//! The webhook journal: an append-only file of checksummed records from which the endpoint
//! registry and the outbox are rebuilt at open (`webhooks/journal` in the data directory).
//!
//! Frame: `len u32 LE | crc32c(body) u32 LE | body` where the body is one [`Record`] as JSON.
//! A torn last frame (short, or a checksum failure on the very last frame) is a write cut off by
//! a crash and is truncated; a bad frame with valid frames after it is corruption and refuses to
//! open. Replaying in order gives the state: the last `Endpoint`/`Removed` per id, each
//! `Message` with the last `Delivery` state per (message, endpoint), and the routing watermark
//! (`Through`). [`Journal::rewrite`] replaces the file by a compacted one atomically (write a
//! temporary file, fsync, rename, fsync the directory).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::endpoint::Endpoint;
use crate::event::Uuid;

/// Largest record accepted when reading (a message body is at most 1 MiB plus its envelope).
const MAX_RECORD_BYTES: usize = 8 * 1024 * 1024;

/// A delivery's status, as the API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Delivered,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Delivered => "delivered",
            Status::Failed => "failed",
        }
    }
}

/// One delivery's state: one message to one endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryState {
    pub message_id: Uuid,
    pub endpoint_id: String,
    pub status: Status,
    /// Attempts made so far.
    pub attempts: u32,
    /// Attempts made before the last manual retry (the retry budget counts from here).
    pub budget_base: u32,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    /// Unix ns of the next attempt (pending only).
    pub next_attempt_ns: Option<u64>,
}

/// One journal record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Record {
    /// An endpoint was created or changed.
    Endpoint(Endpoint),
    /// An endpoint was deleted, with its deliveries.
    Removed { id: String },
    /// A routed integration event: its webhook body, once for all its deliveries.
    Message { id: Uuid, position: u64, routing_key: String, body: String, created_ns: u64 },
    /// A delivery's new state.
    Delivery(DeliveryState),
    /// Every integration event before this position has been routed.
    Through { next_position: u64 },
}

/// The journal's errors.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("webhook journal {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("webhook journal {path} is damaged at byte {offset}: {reason}")]
    Corrupt { path: PathBuf, offset: u64, reason: String },
}

/// The open journal (or none, in memory).
pub struct Journal {
    path: Option<PathBuf>,
    file: Option<File>,
    /// Bytes in the file.
    bytes: u64,
    /// Scratch buffer for framing.
    buffer: Vec<u8>,
    /// Why the journal refuses writes: its file could not be restored after a failed write or
    /// compaction, so a later record could land where replay would not read it.
    poisoned: Option<String>,
}

impl Journal {
    /// A journal that keeps nothing (the in-memory store's companion).
    pub fn in_memory() -> Journal {
        Journal { path: None, file: None, bytes: 0, buffer: Vec::new(), poisoned: None }
    }

    /// Opens (or creates) `dir/journal` and returns its records in order.
    pub fn open(dir: &Path) -> Result<(Journal, Vec<Record>), JournalError> {
        let path = dir.join("journal");
        let io = |source| JournalError::Io { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(io)?;
        let mut contents = Vec::new();
        file.read_to_end(&mut contents).map_err(io)?;
        let (records, valid) = parse(&contents, &path)?;
        if valid < contents.len() {
            // A torn tail: cut it so the next frame starts on a boundary.
            file.set_len(valid as u64).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        let journal =
            Journal { path: Some(path), file: Some(file), bytes: valid as u64, buffer: Vec::new(), poisoned: None };
        Ok((journal, records))
    }

    /// Checks `dir/journal` without changing it (`herald verify`): every frame's checksum and
    /// record; a torn tail is reported as such (the next start cuts it). Returns the number of
    /// valid records and whether a torn tail follows them. A missing journal holds 0 records.
    pub fn verify(dir: &Path) -> Result<(usize, bool), JournalError> {
        let path = dir.join("journal");
        let contents = match std::fs::read(&path) {
            Ok(contents) => contents,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok((0, false)),
            Err(source) => return Err(JournalError::Io { path, source }),
        };
        let (records, valid) = parse(&contents, &path)?;
        Ok((records.len(), valid < contents.len()))
    }

    /// Bytes in the file.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn io_error(&self, source: std::io::Error) -> JournalError {
        JournalError::Io { path: self.path.clone().unwrap_or_default(), source }
    }

    /// Appends records with one write (not synced; see [`Journal::sync`]). A failed write is
    /// cut back off the file, so the next append starts on a frame boundary.
    pub fn append(&mut self, records: &[Record]) -> Result<(), JournalError> {
        if let Some(reason) = &self.poisoned {
            return Err(self.io_error(std::io::Error::other(reason.clone())));
        }
        let Some(file) = &mut self.file else { return Ok(()) };
        self.buffer.clear();
        for record in records {
            frame(&mut self.buffer, record);
        }
        if let Err(error) = file.write_all(&self.buffer) {
            if let Err(cut) = file.set_len(self.bytes) {
                self.poisoned = Some(format!("a failed write could not be cut off ({cut})"));
            }
            return Err(self.io_error(error));
        }
        self.bytes += self.buffer.len() as u64;
        Ok(())
    }

    /// Makes every appended record durable.
    pub fn sync(&self) -> Result<(), JournalError> {
        match &self.file {
            Some(file) => file
                .sync_data()
                .map_err(|source| JournalError::Io { path: self.path.clone().unwrap_or_default(), source }),
            None => Ok(()),
        }
    }

    /// Replaces the whole journal by `records`, atomically and durably.
    pub fn rewrite(&mut self, records: &[Record]) -> Result<(), JournalError> {
        let Some(path) = self.path.clone() else { return Ok(()) };
        let io = |source| JournalError::Io { path: path.clone(), source };
        let temporary = path.with_extension("compacting");
        let mut buffer = Vec::new();
        for record in records {
            frame(&mut buffer, record);
        }
        let mut file = File::create(&temporary).map_err(io)?;
        file.write_all(&buffer).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&temporary, &path).map_err(io)?;
        // From here the old file is gone: appends must go to the new one or nowhere.
        match OpenOptions::new().append(true).open(&path) {
            Ok(file) => self.file = Some(file),
            Err(error) => {
                self.poisoned = Some(format!("the compacted journal could not be reopened ({error})"));
                return Err(io(error));
            }
        }
        self.bytes = buffer.len() as u64;
        if let Some(dir) = path.parent() {
            File::open(dir).and_then(|dir| dir.sync_all()).map_err(io)?;
        }
        Ok(())
    }
}

fn frame(out: &mut Vec<u8>, record: &Record) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    // Records hold strings, numbers and UUIDs only: serializing them cannot fail.
    serde_json::to_writer(&mut *out, record).unwrap_or_else(|_| unreachable!("records always serialize"));
    let body = &out[start + 8..];
    let len = body.len() as u32;
    let crc = crc32c::crc32c(body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The records in `contents` and the length of its valid prefix.
fn parse(contents: &[u8], path: &Path) -> Result<(Vec<Record>, usize), JournalError> {
    let mut records = Vec::new();
    let mut at = 0usize;
    let corrupt =
        |offset: usize, reason: String| JournalError::Corrupt { path: path.to_owned(), offset: offset as u64, reason };
    while at < contents.len() {
        let Some(header) = contents.get(at..at + 8) else { break };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let end = at + 8 + len;
        if len > MAX_RECORD_BYTES {
            return Err(corrupt(at, format!("a record claims {len} bytes")));
        }
        let Some(body) = contents.get(at + 8..end) else { break };
        if contents[at..].iter().all(|&byte| byte == 0) {
            break; // a zero-filled tail: space allocated, never written
        }
        if crc32c::crc32c(body) != crc {
            if end == contents.len() {
                break; // the last frame, cut off mid-write
            }
            return Err(corrupt(at, "checksum mismatch".into()));
        }
        let record = match serde_json::from_slice(body) {
            Ok(record) => record,
            Err(_) if end == contents.len() => break, // a last frame that never made sense
            Err(error) => return Err(corrupt(at, format!("unreadable record: {error}"))),
        };
        records.push(record);
        at = end;
    }
    Ok((records, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(next_position: u64) -> Record {
        Record::Through { next_position }
    }

    #[test]
    fn records_survive_reopen_and_a_torn_tail_is_cut() {
        // Appended records come back in order; a half-written last frame is dropped, and the
        // next append lands on a clean boundary.
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, records) = Journal::open(dir.path()).unwrap();
        assert!(records.is_empty());
        journal.append(&[through(1), Record::Removed { id: "wh_1".into() }]).unwrap();
        journal.append(&[through(2)]).unwrap();
        drop(journal);
        let path = dir.path().join("journal");
        let full = std::fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(full - 3).unwrap();
        let (mut journal, records) = Journal::open(dir.path()).unwrap();
        assert_eq!(records, vec![through(1), Record::Removed { id: "wh_1".into() }]);
        journal.append(&[through(3)]).unwrap();
        let (_, records) = Journal::open(dir.path()).unwrap();
        assert_eq!(records.last(), Some(&through(3)));
    }

    #[test]
    fn a_zero_filled_tail_is_cut() {
        // Space a crash left allocated but unwritten reads as zeros: truncated, not corruption.
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path()).unwrap();
        journal.append(&[through(1)]).unwrap();
        drop(journal);
        let path = dir.path().join("journal");
        let mut bytes = std::fs::read(&path).unwrap();
        let valid = bytes.len();
        bytes.extend_from_slice(&[0; 64]);
        std::fs::write(&path, &bytes).unwrap();
        let (_, records) = Journal::open(dir.path()).unwrap();
        assert_eq!(records, vec![through(1)]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), valid as u64);
    }

    #[test]
    fn damage_before_the_tail_refuses_to_open() {
        // A flipped byte in a frame that has frames after it is corruption, reported by offset.
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path()).unwrap();
        journal.append(&[through(1), through(2)]).unwrap();
        drop(journal);
        let path = dir.path().join("journal");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[10] ^= 0xFF;
        std::fs::write(&path, &bytes).unwrap();
        let error = Journal::open(dir.path()).err().unwrap().to_string();
        assert!(error.contains("byte 0") && error.contains("checksum"), "{error}");
    }

    #[test]
    fn a_rewrite_replaces_everything() {
        // Compaction leaves exactly the records it was given.
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path()).unwrap();
        journal.append(&[through(1), through(2), through(3)]).unwrap();
        journal.rewrite(&[through(3)]).unwrap();
        journal.append(&[through(4)]).unwrap();
        let (_, records) = Journal::open(dir.path()).unwrap();
        assert_eq!(records, vec![through(3), through(4)]);
    }
}
