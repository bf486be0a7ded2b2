//! Durable handlers' positions: `<dir>/<handler name>.pos`, holding magic `HERALDCP`, the next
//! position to handle (u64 LE) and a CRC32C of both. Written to a temporary file, fsynced and
//! renamed, so a crash leaves the old position or the new one, never a torn one. Without a
//! directory (the in-memory store) positions live in memory only.

use std::collections::HashMap;
use std::path::PathBuf;

use parking_lot::Mutex;

const MAGIC: &[u8; 8] = b"HERALDCP";

pub(crate) struct Checkpoints {
    dir: Option<PathBuf>,
    memory: Mutex<HashMap<String, u64>>,
}

impl Checkpoints {
    pub fn new(dir: Option<PathBuf>) -> Result<Self, String> {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir).map_err(|error| format!("create {}: {error}", dir.display()))?;
        }
        Ok(Checkpoints { dir, memory: Mutex::new(HashMap::new()) })
    }

    /// The next position `name` has to handle, if it ever checkpointed.
    pub fn load(&self, name: &str) -> Result<Option<u64>, String> {
        let Some(dir) = &self.dir else { return Ok(self.memory.lock().get(name).copied()) };
        let path = dir.join(format!("{name}.pos"));
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(format!("read {}: {error}", path.display())),
        };
        if bytes.len() != 20 || &bytes[0..8] != MAGIC {
            return Err(format!("{}: not a Herald handler checkpoint", path.display()));
        }
        let stored = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
        if crc32c::crc32c(&bytes[0..16]) != stored {
            return Err(format!("{}: checksum mismatch", path.display()));
        }
        let mut position = [0u8; 8];
        position.copy_from_slice(&bytes[8..16]);
        Ok(Some(u64::from_le_bytes(position)))
    }

    /// Records that `name` handled everything below `position`.
    pub fn save(&self, name: &str, position: u64) -> Result<(), String> {
        let Some(dir) = &self.dir else {
            self.memory.lock().insert(name.to_owned(), position);
            return Ok(());
        };
        let mut bytes = Vec::with_capacity(20);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&position.to_le_bytes());
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let path = dir.join(format!("{name}.pos"));
        let temporary = dir.join(format!("{name}.pos.tmp"));
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&temporary, &path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|error| format!("write {}: {error}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_damage_is_reported() {
        // A saved position reads back after reopening; a damaged file is an error, not a guess.
        let dir = tempfile::tempdir().unwrap();
        let checkpoints = Checkpoints::new(Some(dir.path().to_path_buf())).unwrap();
        assert_eq!(checkpoints.load("projection").unwrap(), None);
        checkpoints.save("projection", 42).unwrap();
        checkpoints.save("projection", 43).unwrap();
        let reopened = Checkpoints::new(Some(dir.path().to_path_buf())).unwrap();
        assert_eq!(reopened.load("projection").unwrap(), Some(43));
        let path = dir.path().join("projection.pos");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[9] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(reopened.load("projection").unwrap_err().contains("checksum"));
        let memory = Checkpoints::new(None).unwrap();
        memory.save("h", 7).unwrap();
        assert_eq!(memory.load("h").unwrap(), Some(7));
    }
}
