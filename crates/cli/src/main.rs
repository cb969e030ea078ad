//! `sakiko`: the Sakiko-Lumina command line.

mod alloc;
mod backend;
mod bench;
#[cfg(feature = "flex")]
mod doctor;
mod expand;
mod files;
mod generate;
mod lora;
mod models;
mod prompt;
mod serve;

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
    /// Generate images from a prompt (text → image, or image → image with --init-image).
    Generate(Box<generate::GenerateArgs>),
    /// Print a prompt's token ids: {"ids": [...], "count": N}.
    Tokenize(models::TokenizeArgs),
    /// Write a prompt's conditioning (Gemma's hidden_states[-2]) as the f32 tensor `cond`.
    Encode(models::EncodeArgs),
    /// Print a σ schedule: {"sigmas": [...]}.
    Schedule(models::ScheduleArgs),
    /// Print what a weight file holds (component, layout, dtypes, configuration) as JSON.
    Inspect(models::InspectArgs),
    /// Time one stage (denoise, decode, encode, prompter) with random weights made in memory.
    Bench(Box<bench::BenchArgs>),
    /// Check that a backend computes right here: small models and risky kernels on it against
    /// Flex in f32, each difference against its tolerance, and a verdict (exit 1 if any fails).
    #[cfg(feature = "flex")]
    Doctor(doctor::DoctorArgs),
    /// Keep the models loaded and serve the OpenAI Images, AUTOMATIC1111 and a native job API,
    /// with a web page at `/`.
    Serve(Box<serve::ServeArgs>),
    /// Build, check and normalise prompts.
    #[command(subcommand)]
    Prompt(prompt::PromptCommand),
}

/// A failure of a model command.
#[derive(Debug)]
pub enum CliError {
    /// Bad arguments or an unusable build (exit status 2).
    Usage(String),
    /// Everything else (exit status 1).
    Failed(String),
}

impl From<sakiko_pipeline::PipelineError> for CliError {
    fn from(e: sakiko_pipeline::PipelineError) -> Self {
        CliError::Failed(e.to_string())
    }
}

fn main() -> ExitCode {
    alloc::keep_freed_buffers();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Prompt(command) => return command.run(),
        Command::Generate(args) => args.run(),
        Command::Tokenize(args) => args.run(),
        Command::Encode(args) => args.run(),
        Command::Schedule(args) => args.run(),
        Command::Inspect(args) => args.run(),
        Command::Bench(args) => args.run(),
        Command::Serve(args) => args.run(),
        #[cfg(feature = "flex")]
        Command::Doctor(args) => args.run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(CliError::Failed(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
