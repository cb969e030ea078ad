//! `sakiko prompt …`: the prompt tool.
//!
//! Exit status: 0 success; 1 the prompt has errors (or could not be built); 2 usage or I/O error.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use sakiko_prompt::{
    EmoticonPolicy, Form, Meta, NormalizeOptions, Period, PromptError, Quality, Report, Resolution,
    TagPrompt, check_bytes, normalize_with, with_prefix,
};

/// Exit status when the prompt is invalid.
const INVALID: u8 = 1;
/// Exit status for unreadable input.
const IO_ERROR: u8 = 2;

#[derive(Debug, Subcommand)]
pub enum PromptCommand {
    /// Build a tag prompt and print it (the body only, unless --with-prefix).
    Build(BuildArgs),
    /// Validate a prompt: prints `LEVEL LINE:COL: message` per finding; exit 1 on any error.
    Check {
        /// Prompt file (standard input when omitted).
        file: Option<PathBuf>,
    },
    /// Turn Sakiko-Prompter output into a valid prompt (underscores, `<copyright>`, default meta).
    Normalize {
        /// Prompter output file (standard input when omitted).
        file: Option<PathBuf>,
        /// Print the model text: the fixed prefix, one space, the prompt.
        #[arg(long)]
        with_prefix: bool,
        /// What to do with underscores in emoticon tags such as `^_^`.
        #[arg(long, value_enum, default_value_t = Emoticons::Keep)]
        emoticons: Emoticons,
    },
    /// Expand a short idea into a validated XML tag prompt with Sakiko-Prompter (in process):
    /// prints the normalised prompt; exit 1 when no attempt gives a valid one.
    Expand(Box<crate::expand::ExpandArgs>),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// `<special>` tags (comma-separated): 1girl … 6+girls, 1boy … 6+boys, male focus, 1other … 6+others.
    #[arg(long)]
    special: Option<String>,
    /// Artists (comma-separated).
    #[arg(long)]
    artists: Option<String>,
    /// Characters (comma-separated).
    #[arg(long)]
    characters: Option<String>,
    /// Copyright / series tags (comma-separated).
    #[arg(long)]
    copyright: Option<String>,
    /// General tags (comma-separated).
    #[arg(long)]
    general: Option<String>,
    /// Rating: g, s, q, e, or the tags (safe, sensitive, nsfw, "explicit, nsfw").
    #[arg(long)]
    rating: Option<String>,
    /// Extra meta tags (comma-separated), after the derived ones.
    #[arg(long)]
    meta: Option<String>,
    /// Popularity percentile (0–100) → quality tag.
    #[arg(long, value_name = "P")]
    quality_percentile: Option<f64>,
    /// Year → period tag (newest, recent, mid, early, old).
    #[arg(long, value_name = "Y", allow_negative_numbers = true)]
    year: Option<i32>,
    /// Image width in pixels (with --height) → resolution tag.
    #[arg(long, value_name = "W", requires = "height")]
    width: Option<u32>,
    /// Image height in pixels (with --width).
    #[arg(long, value_name = "H", requires = "width")]
    height: Option<u32>,
    /// Full form (every section an element) or simple form (`<artists>` + raw tag list).
    #[arg(long, value_enum, default_value_t = FormArg::Full)]
    form: FormArg,
    /// Render empty elements too (`<copyright></copyright>`).
    #[arg(long)]
    keep_empty: bool,
    /// What to do with underscores in emoticon tags such as `^_^`.
    #[arg(long, value_enum, default_value_t = Emoticons::Keep)]
    emoticons: Emoticons,
    /// Print the model text: the fixed prefix, one space, the prompt.
    #[arg(long)]
    with_prefix: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormArg {
    Full,
    Simple,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Emoticons {
    /// Keep `^_^` as written.
    Keep,
    /// Replace every underscore, as the model card's snippet does.
    Replace,
}

impl From<Emoticons> for EmoticonPolicy {
    fn from(e: Emoticons) -> Self {
        match e {
            Emoticons::Keep => EmoticonPolicy::Keep,
            Emoticons::Replace => EmoticonPolicy::Replace,
        }
    }
}

impl PromptCommand {
    pub fn run(self) -> ExitCode {
        match self {
            PromptCommand::Expand(args) => match args.run() {
                Ok(()) => ExitCode::SUCCESS,
                Err(crate::CliError::Usage(m)) => {
                    eprintln!("error: {m}");
                    ExitCode::from(IO_ERROR)
                }
                Err(crate::CliError::Failed(m)) => {
                    eprintln!("error: {m}");
                    ExitCode::from(INVALID)
                }
            },
            PromptCommand::Build(args) => match args.build() {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(INVALID)
                }
            },
            PromptCommand::Check { file } => match read_input(file.as_deref()) {
                Ok(bytes) => {
                    let report = check_bytes(&bytes);
                    print_report(&report, &mut std::io::stdout());
                    status(&report)
                }
                Err(code) => code,
            },
            PromptCommand::Normalize {
                file,
                with_prefix: prefix,
                emoticons,
            } => {
                let bytes = match read_input(file.as_deref()) {
                    Ok(bytes) => bytes,
                    Err(code) => return code,
                };
                let Ok(text) = String::from_utf8(bytes) else {
                    eprintln!("error: the input is not UTF-8 text");
                    return ExitCode::from(INVALID);
                };
                let options = NormalizeOptions {
                    emoticons: emoticons.into(),
                };
                let mut out = normalize_with(&text, options);
                if prefix {
                    out = with_prefix(&out);
                }
                let report = check_bytes(out.as_bytes());
                print!("{out}");
                if !out.ends_with('\n') {
                    println!();
                }
                print_report(&report, &mut std::io::stderr());
                status(&report)
            }
        }
    }
}

impl BuildArgs {
    fn build(self) -> Result<String, PromptError> {
        let mut meta = Meta::new();
        if let Some(p) = self.quality_percentile {
            meta = meta.quality(Quality::from_percentile(p)?);
        }
        if let Some(year) = self.year {
            meta = meta.period(Period::from_year(year));
        }
        if let (Some(w), Some(h)) = (self.width, self.height) {
            meta = meta.resolution(Resolution::from_size(w, h)?);
        }
        if let Some(extra) = &self.meta {
            meta = meta.extra(extra);
        }
        let mut builder = TagPrompt::builder()
            .derived_meta(meta)
            .form(match self.form {
                FormArg::Full => Form::Full,
                FormArg::Simple => Form::Simple,
            })
            .keep_empty(self.keep_empty)
            .emoticons(self.emoticons.into());
        let lists = [
            (sakiko_prompt::Section::Special, &self.special),
            (sakiko_prompt::Section::Artists, &self.artists),
            (sakiko_prompt::Section::Characters, &self.characters),
            (sakiko_prompt::Section::Copyright, &self.copyright),
            (sakiko_prompt::Section::General, &self.general),
            (sakiko_prompt::Section::Rating, &self.rating),
        ];
        for (section, tags) in lists {
            if let Some(tags) = tags {
                builder = builder.section(section, tags);
            }
        }
        let body = builder.build()?.to_string();
        Ok(if self.with_prefix {
            with_prefix(&body)
        } else {
            body
        })
    }
}

fn read_input(file: Option<&Path>) -> Result<Vec<u8>, ExitCode> {
    let mut bytes = Vec::new();
    let result = match file {
        Some(path) => std::fs::read(path)
            .map(|b| bytes = b)
            .map_err(|e| format!("{}: {e}", path.display())),
        None => std::io::stdin()
            .read_to_end(&mut bytes)
            .map(drop)
            .map_err(|e| format!("standard input: {e}")),
    };
    result.map(|()| bytes).map_err(|message| {
        eprintln!("error: {message}");
        ExitCode::from(IO_ERROR)
    })
}

fn print_report(report: &Report, out: &mut impl Write) {
    for diagnostic in &report.diagnostics {
        // A closed pipe is not worth a panic; the exit status still tells.
        let _ = writeln!(out, "{diagnostic}");
    }
}

fn status(report: &Report) -> ExitCode {
    if report.has_errors() {
        ExitCode::from(INVALID)
    } else {
        ExitCode::SUCCESS
    }
}
