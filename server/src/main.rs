//! `alcove`: see `alcove --help`.

use alcove::{
    cli::{Cli, Command, ServeCmd, known_env_vars},
    commands,
    config::{Config, LogFormat, display_path, unknown_env_vars},
    startup::{Application, shutdown_signal},
    telemetry,
};
use clap::Parser as _;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // A bad option value is an invalid configuration: 1, as for every other
            // configuration error; other usage errors keep clap's 2 (help: 0).
            return match e.kind() {
                clap::error::ErrorKind::InvalidValue | clap::error::ErrorKind::ValueValidation => {
                    ExitCode::FAILURE
                }
                _ => ExitCode::from(e.exit_code().clamp(0, 255) as u8),
            };
        }
    };
    let common = match &cli.command {
        None => &cli.serve.common,
        Some(Command::Serve(s)) => &s.common,
        Some(Command::Migrate(c)) => c,
        Some(Command::User(u)) => match u {
            alcove::cli::UserCmd::Create { common, .. }
            | alcove::cli::UserCmd::SetPassword { common, .. }
            | alcove::cli::UserCmd::Disable { common, .. }
            | alcove::cli::UserCmd::Enable { common, .. }
            | alcove::cli::UserCmd::List { common, .. } => common,
        },
        Some(Command::Keys(k)) => match k {
            alcove::cli::KeysCmd::Rotate(c) | alcove::cli::KeysCmd::List(c) => c,
            alcove::cli::KeysCmd::Generate => &cli.serve.common,
        },
        Some(Command::Audit(alcove::cli::AuditCmd::Verify(c))) => c,
        Some(Command::Config(alcove::cli::ConfigCmd::Check(s))) => &s.common,
        Some(Command::Backup { common, .. }) => common,
        Some(Command::Healthcheck(h)) => &h.serve.common,
        Some(Command::Probe(_)) => &cli.serve.common,
    };
    if let Err(e) = telemetry::init(common.log_format.unwrap_or(LogFormat::Text)) {
        eprintln!("alcove: cannot set up logging: {e}");
        return ExitCode::FAILURE;
    }
    for var in unknown_env_vars(&known_env_vars()) {
        tracing::warn!(variable = %var, "unknown ALCOVE_* environment variable ignored (see alcove --help)");
    }
    let serving = matches!(cli.command, None | Some(Command::Serve(_)));
    let result = match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(s)) => serve(*s).await,
        Some(Command::Migrate(c)) => commands::migrate(&c).await,
        Some(Command::User(u)) => commands::user(u).await,
        Some(Command::Keys(k)) => commands::keys(k),
        Some(Command::Audit(alcove::cli::AuditCmd::Verify(c))) => commands::audit_verify(&c).await,
        Some(Command::Config(alcove::cli::ConfigCmd::Check(s))) => commands::config_check(&s),
        Some(Command::Backup { common, to }) => commands::backup(&common, &to).await,
        Some(Command::Healthcheck(h)) => commands::healthcheck(&h).await,
        Some(Command::Probe(p)) => alcove::probe::run(&p).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The server reports through its log (which may be JSON for a collector); the
            // one-shot commands talk to the person at the terminal.
            if serving {
                tracing::error!("{e:#}");
            } else {
                eprintln!("alcove: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn serve(cmd: ServeCmd) -> anyhow::Result<()> {
    let config = Config::load(&cmd.common, Some(&cmd.serve))?;
    let backend = if let Some(url) = &config.database_url {
        url.redacted()
    } else {
        format!("SQLite at {}", display_path(&config.default_sqlite_path()))
    };
    let app = Application::build(config).await?;
    tracing::info!(
        address = %app.local_addr(),
        public_url = %app.state().public_url,
        database = %backend,
        "alcove is listening"
    );
    app.run_until(shutdown_signal()).await
}
