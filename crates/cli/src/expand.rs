//! `sakiko prompt expand` and `sakiko generate --idea`: Sakiko-Prompter in process.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

use burn::tensor::backend::Backend;
use clap::Args;
use sakiko_prompter::{ExpandOptions, Expansion, Prompter, PrompterError, Sampling};
use serde::Serialize;

use crate::CliError;
use crate::backend::{BackendChoice, Job};
use crate::files::DitDtype;

/// The prompter's sampling settings; unset ones come from the folder's
/// `generation_config.json`.
#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// Softmax temperature (0: greedy).
    #[arg(long, value_name = "T")]
    temperature: Option<f32>,
    /// Nucleus sampling mass.
    #[arg(long, value_name = "P")]
    top_p: Option<f32>,
    /// Keep the K most likely tokens.
    #[arg(long, value_name = "K")]
    top_k: Option<usize>,
    /// Drop tokens less likely than P × the most likely one.
    #[arg(long, value_name = "P")]
    min_p: Option<f32>,
    /// transformers' repetition penalty (1: none).
    #[arg(long, value_name = "R")]
    repetition_penalty: Option<f32>,
    /// The most new tokens per attempt (default: the folder's, else 512).
    #[arg(long, value_name = "N")]
    max_new_tokens: Option<usize>,
    /// Attempts with the next seed when the output is not a valid tag prompt.
    #[arg(long, value_name = "N", default_value_t = 3)]
    attempts: usize,
    /// The system prompt, replacing the folder's `system_prompt.txt` (empty: none).
    #[arg(long, value_name = "TEXT")]
    system_prompt: Option<String>,
    /// The prompter's compute dtype.
    #[arg(long, value_enum, default_value_t = DitDtype::Auto)]
    prompter_dtype: DitDtype,
}

impl SamplingArgs {
    fn options<B: Backend>(&self, prompter: &Prompter<B>, seed: u64) -> ExpandOptions {
        let mut options = prompter.expand_options(seed);
        let s = &mut options.sampling;
        if let Some(t) = self.temperature {
            s.temperature = t;
        }
        s.top_p = self.top_p.or(s.top_p);
        s.top_k = self.top_k.or(s.top_k);
        s.min_p = self.min_p.or(s.min_p);
        s.repetition_penalty = self.repetition_penalty.unwrap_or(s.repetition_penalty);
        options.max_new_tokens = self.max_new_tokens.unwrap_or(options.max_new_tokens);
        options.attempts = self.attempts;
        options
    }

    fn validate(&self) -> Result<(), CliError> {
        let probe = Sampling {
            temperature: self.temperature.unwrap_or(1.0),
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty.unwrap_or(1.0),
            seed: 0,
        };
        probe.validate().map_err(CliError::Usage)?;
        if self.attempts == 0 || self.max_new_tokens == Some(0) {
            return Err(CliError::Usage(
                "--attempts and --max-new-tokens must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// `sakiko prompt expand`.
#[derive(Debug, Args)]
pub struct ExpandArgs {
    /// The prompter's model folder (SakikoLab/Sakiko-Prompt-Gen-v1.0: config.json, safetensors,
    /// tokenizer.json, chat template).
    #[arg(long, value_name = "DIR")]
    prompter: PathBuf,
    /// The seed of the first attempt (attempt n uses seed + n).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// The backend to run on.
    #[arg(long, value_enum, default_value_t = BackendChoice::Flex)]
    backend: BackendChoice,
    /// Print the generated text exactly (no normalisation, no validation).
    #[arg(long)]
    raw: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Show the text on standard error as it is generated.
    #[arg(long)]
    stream: bool,
    /// The idea: a few words or a sentence, any language.
    idea: String,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Report<'a> {
    /// The normalised, validated tag prompt (absent with --raw).
    prompt: Option<&'a str>,
    /// The text the image model receives (prefix + prompt).
    model_text: Option<String>,
    /// The generated text of the successful attempt.
    raw: &'a str,
    seed: u64,
    attempts: usize,
    generated_tokens: usize,
    warnings: Vec<String>,
}

impl ExpandArgs {
    pub fn run(self) -> Result<(), CliError> {
        self.sampling.validate()?;
        if self.idea.trim().is_empty() {
            return Err(CliError::Usage("the idea is empty".into()));
        }
        let backend = self.backend;
        backend.run(self)
    }
}

impl Job for ExpandArgs {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> Result<(), CliError> {
        let prompter = load::<B>(&self.prompter, &self.sampling, &device)?;
        let options = self.sampling.options(&prompter, self.seed);
        let stream = self.stream;
        let show = |piece: &str| {
            if stream {
                eprint!("{piece}");
                let _ = std::io::stderr().flush();
            }
            ControlFlow::Continue(())
        };
        if self.raw {
            let out = prompter
                .generate(&self.idea, &options.sampling, options.max_new_tokens, show)
                .map_err(failed)?;
            if self.json {
                let report = Report {
                    prompt: None,
                    model_text: None,
                    raw: &out.text,
                    seed: self.seed,
                    attempts: 1,
                    generated_tokens: out.tokens.ids.len(),
                    warnings: Vec::new(),
                };
                println!("{}", json(&report)?);
            } else {
                print!("{}", out.text);
            }
            return Ok(());
        }
        let e = prompter
            .expand(&self.idea, &options, show)
            .map_err(failed)?;
        if stream {
            eprintln!();
        }
        if self.json {
            let report = Report {
                prompt: Some(&e.text),
                model_text: Some(sakiko_prompt::with_prefix(&e.text)),
                raw: &e.raw,
                seed: e.seed,
                attempts: e.attempts,
                generated_tokens: e.generated_tokens,
                warnings: e.warnings.iter().map(ToString::to_string).collect(),
            };
            println!("{}", json(&report)?);
        } else {
            println!("{}", e.text);
            for w in &e.warnings {
                eprintln!("warning {w}");
            }
        }
        Ok(())
    }
}

/// Loads the prompter from `dir` in the dtype asked for (bf16 on CUDA, f32 elsewhere by
/// default), with the system prompt given on the command line, if any.
fn load<B: Backend>(
    dir: &std::path::Path,
    args: &SamplingArgs,
    device: &B::Device,
) -> Result<Prompter<B>, CliError> {
    let dtype = args
        .prompter_dtype
        .float()
        .unwrap_or_else(|| sakiko_pipeline::auto_dtype::<B>(device));
    let prompter = Prompter::<B>::load(dir, dtype, device).map_err(failed)?;
    Ok(match &args.system_prompt {
        Some(s) if s.is_empty() => prompter.with_system_prompt(None),
        Some(s) => prompter.with_system_prompt(Some(s.clone())),
        None => prompter,
    })
}

/// `sakiko generate --idea`: expands `idea` on the generation's backend and frees the prompter
/// before the diffusion models load. Progress goes to standard error unless `quiet`.
pub fn expand_for_generate<B: Backend>(
    dir: &std::path::Path,
    args: &SamplingArgs,
    idea: &str,
    seed: u64,
    quiet: bool,
    device: &B::Device,
) -> Result<Expansion, CliError> {
    args.validate()?;
    if !quiet {
        eprintln!("expanding the idea with the prompter in {}", dir.display());
    }
    let prompter = load::<B>(dir, args, device)?;
    let options = args.options(&prompter, seed);
    let e = prompter
        .expand(idea, &options, |_| ControlFlow::Continue(()))
        .map_err(failed)?;
    drop(prompter);
    if !quiet {
        eprintln!(
            "prompt (seed {}, attempt {}):\n{}",
            e.seed, e.attempts, e.text
        );
    }
    Ok(e)
}

fn failed(e: PrompterError) -> CliError {
    match e {
        PrompterError::Input(m) => CliError::Usage(m),
        other => CliError::Failed(other.to_string()),
    }
}

fn json<T: Serialize>(value: &T) -> Result<String, CliError> {
    serde_json::to_string(value).map_err(|e| CliError::Failed(e.to_string()))
}
