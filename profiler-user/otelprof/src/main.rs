//! `otelprof`: the command line over the sampler, encoder and collector crates (see their docs
//! for the stages). Only this crate knows clap.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

mod agent;
mod check;
mod cli;
mod record;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
    let result = match cli.command {
        cli::Command::Record(args) => record::run(args),
        cli::Command::Check => check::run(),
        cli::Command::Agent { print_default_config: true, .. } => {
            print!("{}", agent::DEFAULT_CONFIG);
            Ok(ExitCode::SUCCESS)
        }
        cli::Command::Agent { config, .. } => agent::run(&config),
        cli::Command::Validate { config } => agent::validate(&config),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("otelprof: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
