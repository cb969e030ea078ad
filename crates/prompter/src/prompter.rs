//! Sakiko-Prompter: a model folder (Qwen3 weights, tokenizer, chat template, generation
//! defaults) that expands a short idea into a validated XML tag prompt.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use burn::tensor::{FloatDType, backend::Backend};
use sakiko_prompt::{Diagnostic, Prompt};
use tokenizers::Tokenizer;

use crate::generate::{GenerateOptions, Tokens, generate};
use crate::{ChatTemplate, GenerationConfig, Message, PrompterError, Qwen3, Sampling};

/// The Hugging Face repository of Sakiko-Prompter v1.0.
pub const SAKIKO_PROMPTER_REPO: &str = "SakikoLab/Sakiko-Prompt-Gen-v1.0";

/// The user message when the folder gives no `user_template.txt`: the idea itself.
pub const DEFAULT_USER_TEMPLATE: &str = "{idea}";

/// What the prompter generated and what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The generated text, decoded without special tokens, exactly as the model wrote it.
    pub text: String,
    /// The tokens and timings.
    pub tokens: Tokens,
}

/// A validated expansion.
#[derive(Debug, Clone, PartialEq)]
pub struct Expansion {
    /// The normalised XML tag prompt (no prefix): what is handed to the image model after
    /// [`sakiko_prompt::with_prefix`].
    pub text: String,
    /// The parsed prompt.
    pub prompt: Prompt,
    /// Warnings the checker left (errors make an attempt fail).
    pub warnings: Vec<Diagnostic>,
    /// The raw text of the successful attempt.
    pub raw: String,
    /// How many generations it took.
    pub attempts: usize,
    /// The seed of the successful attempt.
    pub seed: u64,
    /// Tokens generated over all attempts.
    pub generated_tokens: usize,
}

/// How to expand an idea.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpandOptions {
    /// Token choice; attempt `n` uses `seed + n`.
    pub sampling: Sampling,
    /// The most new tokens per attempt.
    pub max_new_tokens: usize,
    /// Generations to try before giving up (a greedy sampling tries once: it would repeat
    /// itself).
    pub attempts: usize,
}

/// The prompter: model, tokenizer, chat template and defaults.
///
/// ```no_run
/// use burn::backend::Flex;
/// use burn::tensor::FloatDType;
/// use sakiko_prompter::Prompter;
///
/// let prompter = Prompter::<Flex>::load("Sakiko-Prompt-Gen-v1.0", FloatDType::F32, &Default::default())?;
/// let options = prompter.expand_options(42);
/// let expansion = prompter.expand("a girl reading under cherry blossoms", &options, |_| {
///     std::ops::ControlFlow::Continue(())
/// })?;
/// println!("{}", expansion.text);
/// # Ok::<(), sakiko_prompter::PrompterError>(())
/// ```
#[derive(Debug)]
pub struct Prompter<B: Backend> {
    model: Qwen3<B>,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    generation: GenerationConfig,
    system_prompt: Option<String>,
    user_template: String,
}

impl<B: Backend> Prompter<B> {
    /// Loads a model folder: `config.json`, `model.safetensors` (or sharded), `tokenizer.json`,
    /// the chat template ([`ChatTemplate::from_folder`]), and the optional
    /// `generation_config.json`, `system_prompt.txt` and `user_template.txt` (`{idea}` marks
    /// where the idea goes).
    pub fn load(
        dir: impl AsRef<Path>,
        dtype: FloatDType,
        device: &B::Device,
    ) -> Result<Self, PrompterError> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(PrompterError::Io {
                path: dir.to_path_buf(),
                reason: format!(
                    "not a folder; download the prompter ({SAKIKO_PROMPTER_REPO}) and pass its folder"
                ),
            });
        }
        // Cheap files first, so a wrong folder fails before the weights are read.
        let tokenizer = load_tokenizer(&dir.join("tokenizer.json"))?;
        let template = ChatTemplate::from_folder(dir)?;
        let generation_path = dir.join("generation_config.json");
        let generation = if generation_path.exists() {
            GenerationConfig::from_file(&generation_path)?
        } else {
            GenerationConfig::default()
        };
        let text = |name: &str| -> Result<Option<String>, PrompterError> {
            let path = dir.join(name);
            if !path.exists() {
                return Ok(None);
            }
            std::fs::read_to_string(&path)
                .map(Some)
                .map_err(|e| PrompterError::Io {
                    path,
                    reason: e.to_string(),
                })
        };
        let system_prompt = text("system_prompt.txt")?;
        let user_template = text("user_template.txt")?;
        let model = Qwen3::load(dir, dtype, device)?;
        let vocab = model.config().vocab_size;
        if tokenizer.get_vocab_size(true) > vocab {
            return Err(PrompterError::Config {
                path: dir.join("tokenizer.json"),
                reason: format!(
                    "the tokenizer has {} tokens, the model's vocabulary {vocab}",
                    tokenizer.get_vocab_size(true)
                ),
            });
        }
        let mut prompter = Self::from_parts(model, tokenizer, template, generation);
        prompter.system_prompt = system_prompt;
        if let Some(t) = user_template {
            prompter = prompter.with_user_template(t)?;
        }
        Ok(prompter)
    }

    /// Assembles a prompter from its parts (no system prompt, the idea as the user message).
    pub fn from_parts(
        model: Qwen3<B>,
        tokenizer: Tokenizer,
        template: ChatTemplate,
        generation: GenerationConfig,
    ) -> Self {
        Self {
            model,
            tokenizer,
            template,
            generation,
            system_prompt: None,
            user_template: DEFAULT_USER_TEMPLATE.into(),
        }
    }

    /// Replaces the system prompt (`None`: none; the template may add its own).
    pub fn with_system_prompt(mut self, system: Option<String>) -> Self {
        self.system_prompt = system;
        self
    }

    /// Replaces the user message template; it must contain `{idea}`.
    pub fn with_user_template(mut self, template: String) -> Result<Self, PrompterError> {
        if !template.contains("{idea}") {
            return Err(PrompterError::Input(format!(
                "the user message template {template:?} has no {{idea}} placeholder"
            )));
        }
        self.user_template = template;
        Ok(self)
    }

    /// Replaces the chat template.
    pub fn with_template(mut self, template: ChatTemplate) -> Self {
        self.template = template;
        self
    }

    /// The model.
    pub fn model(&self) -> &Qwen3<B> {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The folder's generation defaults.
    pub fn generation_config(&self) -> &GenerationConfig {
        &self.generation
    }

    /// The folder's sampling defaults with `seed`, 512 new tokens and 3 attempts.
    pub fn expand_options(&self, seed: u64) -> ExpandOptions {
        ExpandOptions {
            sampling: Sampling::from_generation_config(&self.generation, seed),
            max_new_tokens: self.generation.max_new_tokens.unwrap_or(512),
            attempts: 3,
        }
    }

    /// The chat-formatted prompt for `idea`: system prompt, user message, generation prompt,
    /// thinking off.
    pub fn render(&self, idea: &str) -> Result<String, PrompterError> {
        let idea = idea.trim();
        if idea.is_empty() {
            return Err(PrompterError::Input("the idea is empty".into()));
        }
        let mut messages = Vec::new();
        if let Some(system) = &self.system_prompt {
            messages.push(Message::new("system", system.trim_end()));
        }
        messages.push(Message::new(
            "user",
            self.user_template.replace("{idea}", idea),
        ));
        self.template.render(&messages, true, Some(false))
    }

    /// Token ids of `text` as transformers tokenizes a rendered chat (no added special tokens).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, PrompterError> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| PrompterError::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    fn decode(&self, ids: &[u32]) -> Result<String, PrompterError> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| PrompterError::Tokenizer(e.to_string()))
    }

    /// Generates the model's answer to `idea` (rendered with [`Prompter::render`]): `on_text`
    /// receives the text as it grows (whole characters only) and may cancel.
    pub fn generate(
        &self,
        idea: &str,
        sampling: &Sampling,
        max_new_tokens: usize,
        mut on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generated, PrompterError> {
        let prompt = self.encode(&self.render(idea)?)?;
        let options = GenerateOptions {
            sampling: sampling.clone(),
            max_new_tokens,
            stop: self.stop_ids(),
        };
        // tokenizers' incremental decoder emits whole characters only (a multi-byte character
        // split across tokens waits for its rest).
        let mut stream = self.tokenizer.decode_stream(true);
        let mut shown = 0;
        let mut failure = None;
        let tokens = generate(&self.model, &prompt, &options, |id| match stream.step(id) {
            Ok(Some(piece)) => {
                shown += piece.len();
                on_text(&piece)
            }
            Ok(None) => ControlFlow::Continue(()),
            Err(e) => {
                failure = Some(PrompterError::Tokenizer(e.to_string()));
                ControlFlow::Break(())
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        let tokens = tokens?;
        let text = self.decode(&tokens.ids)?;
        if let Some(rest) = text.get(shown..).filter(|rest| !rest.is_empty()) {
            // Flush what was held back; cancelling at the very end changes nothing.
            let _ = on_text(rest);
        }
        Ok(Generated { text, tokens })
    }

    /// Expands `idea` into a validated XML tag prompt: generates, takes the `<tags>` element,
    /// applies Sakiko-Prompter normalisation ([`sakiko_prompt::normalize`]) and checks it; an
    /// invalid result is retried with the next seed, up to `options.attempts` times.
    pub fn expand(
        &self,
        idea: &str,
        options: &ExpandOptions,
        mut on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Expansion, PrompterError> {
        let attempts = if options.sampling.is_greedy() {
            1
        } else {
            options.attempts.max(1)
        };
        let mut generated_tokens = 0;
        let mut last = None;
        for attempt in 0..attempts {
            let seed = options.sampling.seed.wrapping_add(attempt as u64);
            let sampling = Sampling {
                seed,
                ..options.sampling.clone()
            };
            let out = self.generate(idea, &sampling, options.max_new_tokens, &mut on_text)?;
            generated_tokens += out.tokens.ids.len();
            match validate(&out.text) {
                Ok((text, prompt, warnings)) => {
                    return Ok(Expansion {
                        text,
                        prompt,
                        warnings,
                        raw: out.text,
                        attempts: attempt + 1,
                        seed,
                        generated_tokens,
                    });
                }
                Err(failure) => last = Some(failure),
            }
        }
        let (text, problem, diagnostics) = last.unwrap_or_default();
        Err(PrompterError::InvalidOutput {
            attempts,
            text,
            problem,
            diagnostics,
        })
    }

    /// The ids that end generation: `generation_config.json`'s `eos_token_id`, else the
    /// tokenizer's `<|im_end|>` and `<|endoftext|>`.
    pub fn stop_ids(&self) -> Vec<u32> {
        if !self.generation.eos_token_id.is_empty() {
            return self.generation.eos_token_id.clone();
        }
        ["<|im_end|>", "<|endoftext|>"]
            .iter()
            .filter_map(|t| self.tokenizer.token_to_id(t))
            .collect()
    }
}

/// Loads `tokenizer.json`.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer, PrompterError> {
    if !path.exists() {
        return Err(PrompterError::Io {
            path: path.to_path_buf(),
            reason: "missing (the prompter folder needs its tokenizer.json)".into(),
        });
    }
    Tokenizer::from_file(path)
        .map_err(|e| PrompterError::Tokenizer(format!("{}: {e}", PathBuf::from(path).display())))
}

/// What a failed attempt leaves: the normalised text, the problem, the diagnostics.
type Failure = (String, String, Vec<Diagnostic>);

/// Takes the `<tags>` element out of generated text (after any `<think>` block), normalises
/// and checks it.
fn validate(raw: &str) -> Result<(String, Prompt, Vec<Diagnostic>), Failure> {
    let body = raw.rsplit("</think>").next().unwrap_or(raw);
    let Some(start) = body.find("<tags") else {
        return Err((
            body.trim().to_owned(),
            "it contains no <tags> element".into(),
            Vec::new(),
        ));
    };
    let end = body
        .rfind("</tags>")
        .filter(|&end| end > start)
        .map_or(body.len(), |end| end + "</tags>".len());
    let text = sakiko_prompt::normalize(body[start..end].trim());
    let report = sakiko_prompt::check(&text);
    let problem = |what: &str| (text.clone(), what.to_owned(), report.diagnostics.clone());
    if report.has_errors() {
        return Err(problem("the checker found errors"));
    }
    match report.prompt {
        Some(prompt @ Prompt::Tags(_)) => Ok((text, prompt, report.diagnostics)),
        _ => Err(problem("it is not an XML tag prompt")),
    }
}
