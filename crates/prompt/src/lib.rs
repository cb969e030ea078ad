//! # sakiko-prompt
//!
//! The Sakiko-Lumina prompt format, as the model card defines it: every prompt is the fixed
//! [`PREFIX`], one space, and a body that is either natural language or an XML tag prompt.
//!
//! - [`TagPrompt::builder`] builds the full form (`<special>`, `<artists>`, `<characters>`,
//!   `<copyright>`, `<general>`, `<rating>`, `<meta>`) or the simple form (`<artists>` plus a raw
//!   tag list), spelled the way the model was trained.
//! - [`check`] parses any prompt text with quick-xml into a typed [`Prompt`] and reports
//!   [`Diagnostic`]s (errors and warnings, with line:column).
//! - [`normalize`] turns Sakiko-Prompter output into a valid prompt.
//! - [`Quality`], [`Period`] and [`Resolution`] derive `<meta>` tags from a popularity percentile,
//!   a year and an image size.
//!
//! ```
//! use sakiko_prompt::{check, Meta, Period, Quality, Rating, Resolution, TagPrompt};
//!
//! let prompt = TagPrompt::builder()
//!     .special("1girl")
//!     .characters("togawa_sakiko")
//!     .copyright("bang dream! it's mygo!!!!!")
//!     .general("blue hair, two side up, formal, suit")
//!     .rating(Rating::General)
//!     .derived_meta(
//!         Meta::new()
//!             .quality(Quality::from_percentile(97.5)?)
//!             .period(Period::from_year(2024))
//!             .resolution(Resolution::from_size(1024, 1024)?),
//!     )
//!     .build()?;
//! let text = prompt.to_string();
//! assert!(text.contains("<characters>togawa sakiko</characters>"));
//! assert!(text.ends_with("<meta>masterpiece, newest, highres</meta>\n</tags>"));
//!
//! // What we render, we parse back to the same prompt, without diagnostics.
//! let report = check(&text);
//! assert!(report.diagnostics.is_empty());
//! assert_eq!(report.prompt, Some(prompt.into()));
//! # Ok::<(), sakiko_prompt::PromptError>(())
//! ```

mod check;
mod diagnostic;
mod error;
mod meta;
mod normalize;
mod prefix;
mod prompt;
mod rating;
mod section;
mod special;
mod suggest;
mod tag_list;

pub use check::{MAX_DIAGNOSTICS, Report, check, check_bytes};
pub use diagnostic::{Code, Diagnostic, Position, Severity};
pub use error::PromptError;
pub use meta::{DEFAULT_META, Meta, Period, Quality, Resolution};
pub use normalize::{NormalizeOptions, normalize, normalize_with};
pub use prefix::{PREFIX, PROMPT_START, with_prefix};
pub use prompt::{Form, Item, Prompt, TagPrompt, TagPromptBuilder};
pub use rating::Rating;
pub use section::Section;
pub use special::{SPECIAL_TAGS, canonical_special, suggest_special};
pub use tag_list::{EmoticonPolicy, RESERVED_CHARACTERS, TagList, is_emoticon};
