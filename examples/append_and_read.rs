//! Appends a few events to a log on disk, reopens it, and reads them back.
//!
//! `cargo run --example append_and_read -- [DATA_DIR]` (default `./herald-data`).

use std::ops::ControlFlow;

use herald_core::event::EventDraft;
use herald_core::store::{EventStore, Log, ReadQuery, StoreConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "herald-data".into());
    {
        let log = Log::open(&dir, StoreConfig::default())?;
        let task = format!("task-{}", log.bounds().1);
        let outcome = log.append(&[
            EventDraft::new("TaskCreated", &task, r#"{"title":"Implement feature X"}"#)
                .with_metadata("user_id", "user-456"),
            EventDraft::new("TaskCompleted", &task, r#"{"by":"user-456"}"#),
        ])?;
        println!("appended {:?}", outcome.events());
        log.close()?;
    }
    let log = Log::open(&dir, StoreConfig::default())?;
    let summary = log.read(&ReadQuery::default(), &mut |event| {
        println!("{}", event.json());
        ControlFlow::Continue(())
    })?;
    println!("{} events; next position {}; verify: {:?}", summary.count, summary.next_position, log.verify()?);
    Ok(())
}
