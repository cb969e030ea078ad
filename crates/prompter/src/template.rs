//! Hugging Face chat templates, rendered as `tokenizer.apply_chat_template` renders them.
//!
//! transformers compiles templates with Jinja2 (`trim_blocks`, `lstrip_blocks`, the
//! `loopcontrols` extension, a `raise_exception` global and a `tojson` filter that does not
//! escape HTML) and passes the conversation, `add_generation_prompt`, the special tokens and any
//! extra arguments (`enable_thinking`). minijinja with minijinja-contrib's Python string methods
//! (`startswith`, `split`, `rstrip`, …) renders the same bytes.

use std::path::Path;

use minijinja::{Environment, Error, ErrorKind, Value, context};
use serde::Serialize;

use crate::PrompterError;

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A turn with `role` and `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template.
///
/// ```
/// use sakiko_prompter::{ChatTemplate, Message};
///
/// let t = ChatTemplate::new(
///     "chatml",
///     "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content | trim }}<|im_end|>\n{% endfor %}\
///      {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
/// )?;
/// let text = t.render(&[Message::new("user", " a cat ")], true, None)?;
/// assert_eq!(text, "<|im_start|>user\na cat<|im_end|>\n<|im_start|>assistant\n");
/// # Ok::<(), sakiko_prompter::PrompterError>(())
/// ```
#[derive(Debug)]
pub struct ChatTemplate {
    name: String,
    env: Environment<'static>,
    /// Special tokens the template may refer to (`bos_token`, `eos_token`, …).
    tokens: Vec<(String, String)>,
}

const TEMPLATE: &str = "chat";

impl ChatTemplate {
    /// Compiles `source`; `name` says where it came from, in errors.
    pub fn new(name: impl Into<String>, source: impl Into<String>) -> Result<Self, PrompterError> {
        let name = name.into();
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<Value, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE, source.into())
            .map_err(|e| template_error(&name, &e))?;
        Ok(Self {
            name,
            env,
            tokens: Vec::new(),
        })
    }

    /// The template of a Hugging Face model folder: `chat_template.jinja` (transformers ≥ 4.50
    /// saves it there), else `chat_template` in `tokenizer_config.json` (a string, or a list of
    /// named templates of which `default` is used). The special tokens named in
    /// `tokenizer_config.json` are passed to the template.
    pub fn from_folder(dir: impl AsRef<Path>) -> Result<Self, PrompterError> {
        let dir = dir.as_ref();
        let config_path = dir.join("tokenizer_config.json");
        let config: serde_json::Value = match std::fs::read_to_string(&config_path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| PrompterError::Config {
                path: config_path.clone(),
                reason: e.to_string(),
            })?,
            Err(_) => serde_json::Value::Null,
        };
        let jinja = dir.join("chat_template.jinja");
        let mut template = if jinja.exists() {
            let source = std::fs::read_to_string(&jinja).map_err(|e| PrompterError::Io {
                path: jinja.clone(),
                reason: e.to_string(),
            })?;
            Self::new(jinja.display().to_string(), source)?
        } else {
            let name = config_path.display().to_string();
            let source = match config.get("chat_template") {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .and_then(|t| t.get("template")?.as_str())
                    .map(str::to_owned)
                    .ok_or_else(|| PrompterError::Template {
                        name: name.clone(),
                        reason: "chat_template lists no template named \"default\"".into(),
                    })?,
                _ => {
                    return Err(PrompterError::Template {
                        name: dir.display().to_string(),
                        reason: "the folder has no chat template (chat_template.jinja, or \
                                 chat_template in tokenizer_config.json); pass one with \
                                 --chat-template FILE"
                            .into(),
                    });
                }
            };
            Self::new(format!("{name} (chat_template)"), source)?
        };
        for key in ["bos_token", "eos_token", "pad_token", "unk_token"] {
            let value = match config.get(key) {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                // Older files store AddedToken objects.
                Some(v) => v.get("content").and_then(|c| c.as_str()).map(str::to_owned),
                None => None,
            };
            if let Some(value) = value {
                template.tokens.push((key.to_owned(), value));
            }
        }
        Ok(template)
    }

    /// Where the template came from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renders `messages`; `enable_thinking` is passed only when given (Qwen3's templates test
    /// whether it is defined).
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        enable_thinking: Option<bool>,
    ) -> Result<String, PrompterError> {
        let template = self
            .env
            .get_template(TEMPLATE)
            .map_err(|e| template_error(&self.name, &e))?;
        let tokens: Value = self.tokens.iter().cloned().collect();
        let mut ctx = context! {
            messages => Value::from_serialize(messages),
            add_generation_prompt,
            ..tokens
        };
        if let Some(thinking) = enable_thinking {
            ctx = context! { enable_thinking => thinking, ..ctx };
        }
        template
            .render(ctx)
            .map_err(|e| template_error(&self.name, &e))
    }
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False)`, without Jinja2's HTML escaping.
fn tojson(value: Value) -> Result<Value, Error> {
    let text = serde_json::to_string(&value)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    // Python's separators: ", " and ": ".
    let spaced = python_separators(&text);
    Ok(Value::from_safe_string(spaced))
}

/// Re-spaces compact JSON as Python's `json.dumps` does (`", "`, `": "`), outside strings.
fn python_separators(compact: &str) -> String {
    let mut out = String::with_capacity(compact.len() + compact.len() / 8);
    let (mut in_string, mut escaped) = (false, false);
    for ch in compact.chars() {
        out.push(ch);
        if in_string {
            match (escaped, ch) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if ch == '"' {
            in_string = true;
        } else if ch == ',' || ch == ':' {
            out.push(' ');
        }
    }
    out
}

fn template_error(name: &str, e: &Error) -> PrompterError {
    let mut reason = e.to_string();
    if let Some(line) = e.line() {
        reason = format!("line {line}: {reason}");
    }
    PrompterError::Template {
        name: name.to_owned(),
        reason,
    }
}
