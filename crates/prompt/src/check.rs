//! Parsing and validation: text → [`Prompt`] plus [`Diagnostic`]s, with quick-xml.
//!
//! The checker never panics and runs in time linear in the input: markup deeper than a section
//! element, binary data and malformed XML stop it with an error, and it reports at most
//! [`MAX_DIAGNOSTICS`] findings.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::diagnostic::{Code, Diagnostic, Position, Severity};
use crate::meta::MetaKind;
use crate::prefix::{PREFIX, PROMPT_START, split_system_prompt};
use crate::prompt::{Item, Prompt, TagPrompt};
use crate::tag_list::{EmoticonPolicy, is_emoticon, respell, split_tags};
use crate::{PromptError, Rating, Section, TagList, canonical_special, suggest_special};

/// The most diagnostics one check reports; the rest are dropped.
pub const MAX_DIAGNOSTICS: usize = 100;

/// The outcome of [`check`]: the prompt (when there is no error) and every diagnostic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The parsed prompt; `None` when any diagnostic is an error.
    pub prompt: Option<Prompt>,
    /// Errors and warnings in input order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// The prompt, or [`PromptError::Invalid`] carrying the diagnostics.
    pub fn into_result(self) -> Result<Prompt, PromptError> {
        match self.prompt {
            Some(prompt) if !self.has_errors() => Ok(prompt),
            _ => Err(PromptError::Invalid {
                diagnostics: self.diagnostics,
            }),
        }
    }
}

/// Parses and validates a prompt, with or without the prefix.
///
/// A body that starts with `<` (or contains `<tags`) is an XML tag prompt; anything else is
/// natural language.
///
/// ```
/// use sakiko_prompt::{check, Code, Severity};
/// let report = check("<tags>\n<special>1girls</special>\n<meta>masterpiece, shiny</meta>\n</tags>");
/// let found: Vec<_> = report.diagnostics.iter()
///     .map(|d| (d.severity, d.code, d.position.to_string()))
///     .collect();
/// assert_eq!(found, [
///     (Severity::Error, Code::InvalidSpecial, "2:10".to_string()),
///     (Severity::Warning, Code::UnknownMeta, "3:20".to_string()),
/// ]);
/// assert_eq!(report.diagnostics[0].suggestion.as_deref(), Some("1girl"));
/// assert!(report.prompt.is_none());
/// ```
pub fn check(text: &str) -> Report {
    Checker::new(text).run()
}

/// [`check`] for raw bytes: input that is not UTF-8 is reported as [`Code::NotUtf8`].
pub fn check_bytes(bytes: &[u8]) -> Report {
    match std::str::from_utf8(bytes) {
        Ok(text) => check(text),
        Err(e) => {
            let valid = String::from_utf8_lossy(&bytes[..e.valid_up_to()]);
            let mut checker = Checker::new(&valid);
            checker.error(
                Code::NotUtf8,
                valid.len(),
                format!(
                    "the input is not UTF-8 text (invalid byte at offset {})",
                    e.valid_up_to()
                ),
                None,
            );
            checker.finish(None)
        }
    }
}

/// Validation state over one input text.
struct Checker<'a> {
    text: &'a str,
    diagnostics: Vec<Diagnostic>,
    /// Findings past the cap: how many, the worst severity, and where the first one was.
    dropped: Option<(usize, Severity, usize)>,
}

/// Where the XML walk is.
#[derive(PartialEq)]
enum Depth {
    /// Before `<tags>` or after `</tags>`.
    Outside,
    /// Directly inside `<tags>`.
    Tags,
    /// Inside a section element (`None`: an unknown element whose content is skipped).
    Element(Option<Section>),
}

impl<'a> Checker<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            diagnostics: Vec::new(),
            dropped: None,
        }
    }

    fn push(
        &mut self,
        severity: Severity,
        code: Code,
        offset: usize,
        message: String,
        suggestion: Option<String>,
    ) {
        // One slot stays free for the summary of what the cap drops, so that a dropped error
        // still makes the report fail.
        if self.diagnostics.len() + 1 < MAX_DIAGNOSTICS {
            self.diagnostics.push(Diagnostic {
                severity,
                code,
                position: Position::of_offset(self.text, offset),
                message,
                suggestion,
            });
        } else {
            let (count, worst, _) = self.dropped.get_or_insert((0, severity, offset));
            *count += 1;
            // `Severity::Error` orders first: the minimum is the worst.
            *worst = (*worst).min(severity);
        }
    }

    fn error(&mut self, code: Code, offset: usize, message: String, suggestion: Option<String>) {
        self.push(Severity::Error, code, offset, message, suggestion);
    }

    fn warn(&mut self, code: Code, offset: usize, message: String, suggestion: Option<String>) {
        self.push(Severity::Warning, code, offset, message, suggestion);
    }

    fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
            || self
                .dropped
                .is_some_and(|(_, worst, _)| worst == Severity::Error)
    }

    fn finish(mut self, prompt: Option<Prompt>) -> Report {
        if let Some((count, severity, first)) = self.dropped {
            self.diagnostics.push(Diagnostic {
                severity,
                code: Code::TooManyDiagnostics,
                position: Position::of_offset(self.text, first),
                message: format!("{count} more finding(s) from here on are not shown"),
                suggestion: None,
            });
        }
        let prompt = prompt.filter(|_| !self.has_errors());
        Report {
            prompt,
            diagnostics: self.diagnostics,
        }
    }

    fn run(mut self) -> Report {
        let text = self.text;
        if let Some((at, c)) = text
            .char_indices()
            .find(|&(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        {
            let message = format!(
                "control character U+{:04X}: the input looks binary",
                c as u32
            );
            self.error(Code::ControlCharacter, at, message, None);
            return self.finish(None);
        }

        let (system, body_start) = split_system_prompt(text);
        let expected = PREFIX.trim_end_matches(PROMPT_START).trim();
        if let Some(system) = system.filter(|&s| s != expected) {
            let message = format!(
                "the system prompt `{system}` is not the one Sakiko-Lumina was trained with"
            );
            self.warn(
                Code::UnexpectedSystemPrompt,
                0,
                message,
                Some(PREFIX.to_owned()),
            );
        }

        let body = &text[body_start..];
        if let Some(again) = body.find(PROMPT_START) {
            let message =
                format!("`{PROMPT_START}` appears a second time; the body must not contain it");
            self.error(Code::RepeatedPromptStart, body_start + again, message, None);
        }
        if body.trim().is_empty() {
            self.error(Code::Empty, text.len(), "the prompt is empty".into(), None);
            return self.finish(None);
        }
        if body.trim_start().starts_with('<') || body.contains("<tags") {
            let tags = self.tags(body_start);
            self.finish(tags.map(Prompt::Tags))
        } else {
            self.finish(Some(Prompt::Natural(body.trim().to_owned())))
        }
    }

    /// Reports every `&` and every `<` that does not start markup: the model reads raw text,
    /// so neither can be escaped, and quick-xml would misread them.
    fn reserved_characters(&mut self, base: usize) -> bool {
        let body = &self.text[base..];
        let mut found = false;
        for (i, c) in body.char_indices() {
            let starts_markup = |next: Option<char>| {
                next.is_some_and(|n| n.is_alphabetic() || matches!(n, '/' | '!' | '?' | '_' | ':'))
            };
            if c == '&' || (c == '<' && !starts_markup(body[i + 1..].chars().next())) {
                found = true;
                let message = format!(
                    "`{c}` cannot appear in tag text: the model reads the prompt verbatim, so it \
                     cannot be escaped; drop or reword the tag"
                );
                self.error(Code::ReservedCharacter, base + i, message, None);
            }
        }
        found
    }

    /// Walks the XML body starting at byte `base` of the text.
    fn tags(&mut self, base: usize) -> Option<TagPrompt> {
        if self.reserved_characters(base) {
            return None;
        }
        let body = &self.text[base..];
        let mut reader = Reader::from_str(body);
        let mut depth = Depth::Outside;
        let mut seen_tags = false;
        let mut seen = [false; 7];
        let mut last_section: Option<Section> = None;
        let mut content: Option<(usize, &str)> = None;
        let mut items = Vec::new();

        loop {
            let at = base + usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
            let event = match reader.read_event() {
                Ok(event) => event,
                Err(e) => {
                    let error_at = usize::try_from(reader.error_position()).unwrap_or(0);
                    self.error(
                        Code::MalformedXml,
                        base + error_at,
                        format!("malformed XML: {e}"),
                        None,
                    );
                    return None;
                }
            };
            match event {
                Event::Start(ref e) | Event::Empty(ref e) => {
                    let empty = matches!(event, Event::Empty(_));
                    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                    self.attributes(e, &name, at);
                    match depth {
                        Depth::Outside => {
                            if seen_tags {
                                self.error(
                                    Code::DuplicateElement,
                                    at,
                                    "a second <tags> container; a prompt has exactly one".into(),
                                    None,
                                );
                                return None;
                            }
                            if name != "tags" {
                                let message = format!("<{name}> must be inside a <tags> container");
                                self.error(Code::MissingTags, at, message, None);
                                return None;
                            }
                            seen_tags = true;
                            if !empty {
                                depth = Depth::Tags;
                            }
                        }
                        Depth::Tags => {
                            let section = self.section(&name, at, &mut seen, &mut last_section);
                            match (section, empty) {
                                (Some(s), true) => items.push(Item::Element(s, TagList::new())),
                                (_, true) => {}
                                (s, false) => {
                                    depth = Depth::Element(s);
                                    content = None;
                                }
                            }
                        }
                        Depth::Element(_) => {
                            let message = format!(
                                "<{name}> is nested inside another element; elements hold only tags"
                            );
                            self.error(Code::NestedElement, at, message, None);
                            return None;
                        }
                    }
                }
                Event::End(_) => match depth {
                    Depth::Element(section) => {
                        if let Some(section) = section {
                            let (offset, text) = content.take().unwrap_or((at, ""));
                            let tags = self.tag_list(text, offset, Some(section));
                            items.push(Item::Element(section, tags));
                        }
                        depth = Depth::Tags;
                    }
                    // quick-xml rejects unmatched end tags, so this is `</tags>`.
                    _ => depth = Depth::Outside,
                },
                Event::Text(_) => {
                    // The reader borrows `body`: the text is the slice it just consumed.
                    let end = base + usize::try_from(reader.buffer_position()).unwrap_or(0);
                    let text = self.text.get(at..end).unwrap_or_default();
                    let lead = text.len() - text.trim_start().len();
                    match depth {
                        Depth::Outside if !text.trim().is_empty() => {
                            let message = "text outside the <tags> container".into();
                            self.error(Code::TextOutsideTags, at + lead, message, None);
                        }
                        Depth::Tags => {
                            let tags = self.tag_list(text, at, None);
                            if !tags.is_empty() {
                                items.push(Item::Raw(tags));
                            }
                        }
                        Depth::Element(_) => content = Some((at, text)),
                        _ => {}
                    }
                }
                Event::GeneralRef(_) => {
                    // Unreachable after `reserved_characters`, but never trust that with a panic.
                    self.error(
                        Code::ReservedCharacter,
                        at,
                        "`&` cannot appear in tag text".into(),
                        None,
                    );
                    return None;
                }
                Event::CData(_)
                | Event::Comment(_)
                | Event::PI(_)
                | Event::Decl(_)
                | Event::DocType(_) => {
                    let message = "comments, CDATA, declarations and processing instructions are not \
                                   part of the prompt format (the model would read them verbatim)";
                    self.error(Code::UnsupportedMarkup, at, message.into(), None);
                }
                Event::Eof => break,
            }
        }

        if depth != Depth::Outside {
            let message = "<tags> is never closed".into();
            self.error(
                Code::UnclosedTags,
                self.text.len(),
                message,
                Some("</tags>".into()),
            );
        } else if !seen_tags {
            self.error(Code::MissingTags, base, "no <tags> container".into(), None);
        } else if items.is_empty() && !self.has_errors() {
            self.warn(
                Code::EmptyTags,
                base,
                "the <tags> container is empty".into(),
                None,
            );
        }
        Some(TagPrompt::from_items(items))
    }

    fn attributes(&mut self, element: &BytesStart<'_>, name: &str, at: usize) {
        if !element.attributes_raw().trim_ascii().is_empty() {
            let message = format!("<{name}> has attributes; the prompt format has none");
            self.error(Code::Attribute, at, message, None);
        }
    }

    /// Resolves an element name inside `<tags>`, reporting unknown, duplicate and out-of-order ones.
    fn section(
        &mut self,
        name: &str,
        at: usize,
        seen: &mut [bool; 7],
        last: &mut Option<Section>,
    ) -> Option<Section> {
        let Some(section) = Section::from_name(name) else {
            let (message, suggestion) = match name {
                "tags" => ("<tags> is nested inside <tags>".to_owned(), None),
                "copyrights" => (
                    "<copyrights> is Sakiko-Prompter spelling; the model expects <copyright> \
                     (`sakiko prompt normalize` fixes it)"
                        .to_owned(),
                    Some("copyright".to_owned()),
                ),
                _ => {
                    let suggestion = crate::suggest::closest(name, &Section::NAMES);
                    let hint = suggestion
                        .map(|s| format!("; did you mean <{s}>?"))
                        .unwrap_or_default();
                    (
                        format!(
                            "unknown element <{name}>{hint} (known: {})",
                            Section::NAMES.join(", ")
                        ),
                        suggestion.map(str::to_owned),
                    )
                }
            };
            let code = if name == "tags" {
                Code::NestedElement
            } else {
                Code::UnknownElement
            };
            self.error(code, at, message, suggestion);
            return None;
        };
        if std::mem::replace(&mut seen[section.index()], true) {
            self.error(
                Code::DuplicateElement,
                at,
                format!("<{section}> appears twice"),
                None,
            );
            return None;
        }
        if let Some(previous) = last.filter(|&p| p > section) {
            let order: Vec<_> = Section::NAMES.iter().map(|n| format!("<{n}>")).collect();
            let message = format!(
                "<{section}> comes after <{previous}>; the model was trained with the order {}",
                order.join(", ")
            );
            self.warn(Code::OutOfOrder, at, message, None);
        }
        *last = Some(section);
        Some(section)
    }

    /// Parses one comma-separated list at byte `offset` of the text and validates its tags.
    fn tag_list(&mut self, text: &str, offset: usize, section: Option<Section>) -> TagList {
        let place = section.map_or_else(|| "the tag list".to_owned(), |s| format!("<{s}>"));
        let mut list = TagList::new();
        let mut meta_kinds = Vec::new();
        for (o, raw) in split_tags(text) {
            let at = offset + o;
            let tag = TagList::parse(raw).to_string();
            if !list.push(&tag) {
                self.warn(
                    Code::DuplicateTag,
                    at,
                    format!("`{tag}` appears twice in {place}"),
                    None,
                );
                continue;
            }
            match section {
                Some(Section::Special) => {
                    if canonical_special(&tag).is_none() {
                        let suggestion = suggest_special(&tag);
                        let hint = suggestion
                            .map(|s| format!("; did you mean `{s}`?"))
                            .unwrap_or_default();
                        let message = format!("`{tag}` is not a <special> tag{hint}");
                        self.error(
                            Code::InvalidSpecial,
                            at,
                            message,
                            suggestion.map(str::to_owned),
                        );
                    }
                    continue;
                }
                Some(Section::Meta) => match MetaKind::of(&tag) {
                    None => {
                        let message = format!(
                            "unknown meta tag `{tag}`: the card defines quality, period and resolution tags"
                        );
                        self.warn(Code::UnknownMeta, at, message, None);
                    }
                    Some(kind) if meta_kinds.contains(&kind) => {
                        let message = format!("`{tag}` is a second {} tag in <meta>", kind.name());
                        self.warn(Code::ConflictingMeta, at, message, None);
                    }
                    Some(kind) => meta_kinds.push(kind),
                },
                _ => {}
            }
            if tag.contains('_') && !is_emoticon(&tag) {
                let fixed = respell(&tag, EmoticonPolicy::Keep);
                let message = format!(
                    "`{tag}` has underscores (Sakiko-Prompter spelling); the model was trained on `{fixed}`"
                );
                self.warn(Code::NeedsNormalization, at, message, Some(fixed));
            }
        }
        if section == Some(Section::Rating)
            && !list.is_empty()
            && Rating::from_tags(&list).is_none()
        {
            let at = offset + split_tags(text).next().map_or(0, |(o, _)| o);
            let suggestion = list
                .to_string()
                .parse::<Rating>()
                .ok()
                .map(|r| r.tags().to_owned());
            let hint = suggestion
                .as_ref()
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            let message = format!(
                "`{list}` is not a rating: use safe, sensitive, nsfw or explicit, nsfw{hint}"
            );
            self.error(Code::InvalidRating, at, message, suggestion);
        }
        list
    }
}
