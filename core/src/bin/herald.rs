//! The `herald` command: `herald serve` runs the server on the embedded store; `herald verify`
//! checks a data directory; `herald token` prints a WebSocket JWT for the configured secret.
//! Logs go to stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use herald_core::server::Server;
use herald_core::store::{Log, StoreConfig};
use herald_core::system::config::{CliOverrides, Config, LogLevel as Level, Preset};
use herald_core::system::System;

#[derive(Parser)]
#[command(name = "herald", version, about = "Herald: one engine for domain, integration and WebSocket events")]
struct Cli {
    /// How much to log on stderr (overrides `server.log_level`).
    #[arg(long, global = true, value_enum)]
    log_level: Option<Level>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (Ctrl-C or SIGTERM stops it gracefully).
    Serve {
        /// A TOML config file, applied over the preset.
        #[arg(long)]
        config: Option<PathBuf>,
        /// development (default), production or testing.
        #[arg(long)]
        preset: Option<String>,
        /// Address to listen on (default 127.0.0.1:7700).
        #[arg(long)]
        listen: Option<String>,
        /// Data directory (default ./herald-data).
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Print a JWT (HS256, `auth.jwt_secret`) for a WebSocket user.
    Token {
        /// The user id (the `sub` claim).
        #[arg(long)]
        user: String,
        /// Room patterns the user may join (`project:*`); without, any room but other users'.
        #[arg(long, num_args = 1..)]
        rooms: Option<Vec<String>>,
        /// How long the token is valid: `45s`, `30m`, `1h`, `2d` or seconds.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// The config file holding `auth.jwt_secret`.
        #[arg(long)]
        config: Option<PathBuf>,
        /// development (default), production or testing.
        #[arg(long)]
        preset: Option<String>,
    },
    /// Check every record's checksum and the indexes of a data directory; exit 1 on damage.
    Verify {
        /// Data directory (default ./herald-data).
        #[arg(long, default_value = "./herald-data")]
        data: PathBuf,
    },
}

/// Writes `message` to stderr when `level` is enabled.
fn log(enabled: Level, level: Level, message: &str) {
    if level <= enabled && enabled != Level::Off {
        eprintln!("herald: {message}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, preset, listen, data } => serve(cli.log_level, config, preset, listen, data),
        Command::Verify { data } => verify(cli.log_level.unwrap_or(Level::Info), data),
        Command::Token { user, rooms, ttl, config, preset } => token(&user, rooms, &ttl, config, preset),
    }
}

/// Reports `message` on stderr; the exit code of a failed command.
fn fail(message: String) -> ExitCode {
    eprintln!("herald: {message}");
    ExitCode::FAILURE
}

/// The configuration of the preset, the config file and the flags, in that precedence.
fn resolve_config(
    preset: Option<String>,
    config_path: Option<&std::path::Path>,
    listen: Option<String>,
    data_dir: Option<PathBuf>,
) -> Result<Config, String> {
    let preset = preset.as_deref().map(str::parse::<Preset>).transpose().map_err(|error| error.to_string())?;
    let text = match config_path {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|error| format!("cannot read the config file {}: {error}", path.display()))?,
        ),
        None => None,
    };
    let overrides = CliOverrides { preset, listen, data_dir };
    Config::resolve(&overrides, text.as_deref()).map_err(|error| format!("invalid configuration: {error}"))
}

fn token(
    user: &str,
    rooms: Option<Vec<String>>,
    ttl: &str,
    config_path: Option<PathBuf>,
    preset: Option<String>,
) -> ExitCode {
    let config = match resolve_config(preset, config_path.as_deref(), None, None) {
        Ok(config) => config,
        Err(message) => return fail(message),
    };
    let Some(secret) = config.auth.jwt_secret.as_deref() else {
        return fail("auth.jwt_secret is not set: give --config with an [auth] jwt_secret".into());
    };
    let ttl = match herald_core::realtime::auth::parse_ttl(ttl) {
        Ok(ttl) => ttl,
        Err(error) => return fail(format!("--ttl: {error}")),
    };
    match herald_core::realtime::auth::issue(user, rooms, ttl, secret.as_bytes()) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(error) => fail(error.to_string()),
    }
}

fn serve(
    level: Option<Level>,
    config_path: Option<PathBuf>,
    preset: Option<String>,
    listen: Option<String>,
    data_dir: Option<PathBuf>,
) -> ExitCode {
    let config = match resolve_config(preset, config_path.as_deref(), listen, data_dir) {
        Ok(config) => config,
        Err(message) => return fail(message),
    };
    let level = level.unwrap_or(config.server.log_level);
    let shutdown_timeout = Duration::from_millis(config.server.shutdown_timeout_ms);
    let store_description = if config.store.in_memory {
        "in memory".to_string()
    } else {
        format!("in {}", config.server.data_dir.display())
    };
    let preset_name = config.preset.as_str();
    let system = match System::from_config(config) {
        Ok(system) => Arc::new(system),
        Err(error) => return fail(format!("cannot start: {error}")),
    };
    let server = match Server::bind(Arc::clone(&system)) {
        Ok(server) => server,
        Err(error) => return fail(error.to_string()),
    };
    let handle = server.handle();
    let signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]);
    let mut signals = match signals {
        Ok(signals) => signals,
        Err(error) => return fail(format!("cannot install signal handlers: {error}")),
    };
    let signal_handle = signals.handle();
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            log(level, Level::Info, &format!("signal {signal}: shutting down"));
            handle.shutdown();
        }
    });
    log(
        level,
        Level::Info,
        &format!("listening on http://{} (preset {preset_name}, store {store_description})", server.local_addr()),
    );
    let served = server.run();
    signal_handle.close();
    if let Err(error) = served {
        return fail(error.to_string());
    }
    match system.shutdown(shutdown_timeout) {
        Ok(true) => {
            log(level, Level::Info, "stopped: everything dispatched and synced");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            log(level, Level::Warn, "stopped: events synced, but dispatch did not drain within the timeout");
            ExitCode::SUCCESS
        }
        Err(error) => fail(format!("shutdown failed: {error}")),
    }
}

fn verify(level: Level, data_dir: PathBuf) -> ExitCode {
    if !data_dir.join("segments").is_dir() {
        eprintln!("herald: {} is not a Herald data directory (no segments/)", data_dir.display());
        return ExitCode::FAILURE;
    }
    let log_handle = match Log::open(&data_dir, StoreConfig::default()) {
        Ok(log) => log,
        Err(error) => {
            eprintln!("herald: cannot open {}: {error}", data_dir.display());
            return ExitCode::FAILURE;
        }
    };
    let webhooks_dir = data_dir.join("webhooks");
    match herald_core::integration::journal::Journal::verify(&webhooks_dir) {
        Ok((records, torn)) => log(
            level,
            Level::Info,
            &format!(
                "{}: ok: {records} webhook journal records{}",
                webhooks_dir.display(),
                if torn { " (a torn last write follows; the next start cuts it)" } else { "" }
            ),
        ),
        Err(error) => {
            eprintln!("herald: {}: damaged: {error}", webhooks_dir.display());
            return ExitCode::FAILURE;
        }
    }
    match log_handle.verify() {
        Ok(report) => {
            log(
                level,
                Level::Info,
                &format!(
                    "{}: ok: {} records in {} segments ({} bytes), positions {}..{}",
                    data_dir.display(),
                    report.records,
                    report.segments,
                    report.bytes,
                    report.first_position,
                    report.next_position
                ),
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("herald: {}: damaged: {error}", data_dir.display());
            ExitCode::FAILURE
        }
    }
}
