//! The crate's error type.

use crate::Diagnostic;

fn did_you_mean(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default()
}

fn first_error(diagnostics: &[Diagnostic]) -> String {
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    match diagnostics.iter().find(|d| d.is_error()) {
        Some(d) => format!("{errors} error(s), first at {}: {}", d.position, d.message),
        None => "no errors".to_owned(),
    }
}

/// Everything that can go wrong building, parsing or deriving a prompt.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PromptError {
    /// A tag contains a character that cannot stand in an XML prompt (`<` or `&`).
    #[error(
        "tag `{tag}` contains `{ch}`, which cannot appear in an XML prompt \
         (the model reads the raw text, so it cannot be escaped); drop or reword the tag"
    )]
    ReservedCharacter {
        /// The offending tag.
        tag: String,
        /// The reserved character.
        ch: char,
    },
    /// A `<special>` tag outside the vocabulary.
    #[error("`{tag}` is not a <special> tag{}", did_you_mean(.suggestion))]
    InvalidSpecial {
        /// The tag as given.
        tag: String,
        /// The closest valid tag, if any is close.
        suggestion: Option<String>,
    },
    /// A rating that is neither a key (`g`/`s`/`q`/`e`) nor one of the rating tags.
    #[error("`{0}` is not a rating: use g, s, q, e or safe, sensitive, nsfw, explicit")]
    InvalidRating(String),
    /// An element name that is not one of the seven sections.
    #[error("<{name}> is not a tag-prompt element{}", did_you_mean(.suggestion))]
    UnknownSection {
        /// The name as given.
        name: String,
        /// The closest element name, if any is close.
        suggestion: Option<String>,
    },
    /// A popularity percentile outside `[0, 100]` (or NaN).
    #[error("popularity percentile {0} is outside 0–100")]
    InvalidPercentile(f64),
    /// An image size with a zero side.
    #[error("image size {width}×{height} is impossible: both sides must be at least 1 px")]
    InvalidSize {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// The text failed validation; the diagnostics say where and why.
    #[error("invalid prompt: {}", first_error(.diagnostics))]
    Invalid {
        /// Every diagnostic, errors and warnings, in input order.
        diagnostics: Vec<Diagnostic>,
    },
}
