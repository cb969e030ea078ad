//! `sakiko`: the Sakiko-Lumina command line.

mod prompt;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Sakiko-Lumina: anime text-to-image on Burn.
#[derive(Debug, Parser)]
#[command(name = "sakiko", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build, check and normalise prompts.
    #[command(subcommand)]
    Prompt(prompt::PromptCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Prompt(command) => command.run(),
    }
}
