//! Diagnostics reported by the validator.

use std::fmt;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The prompt would be wrong or misread; it does not validate.
    Error,
    /// The prompt is usable but probably not what was meant.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// A 1-based line and column (in characters) in the checked text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column in Unicode scalar values, from 1.
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` in `text` (clamped to the text, snapped back to a char boundary).
    pub fn of_offset(text: &str, offset: usize) -> Position {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Position {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// What a diagnostic is about; stable for tools and tests, unlike the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// The input is not UTF-8 text.
    NotUtf8,
    /// The input contains a control character (binary data).
    ControlCharacter,
    /// Nothing but white space (and the prefix).
    Empty,
    /// quick-xml could not parse the markup.
    MalformedXml,
    /// `<tags>` is opened but never closed.
    UnclosedTags,
    /// A `<` or `&` in tag text.
    ReservedCharacter,
    /// Text before or after the `<tags>` container.
    TextOutsideTags,
    /// An element that is not `<tags>` at the top level.
    MissingTags,
    /// An element name that is not one of the seven sections.
    UnknownElement,
    /// An element inside a section.
    NestedElement,
    /// A section (or `<tags>`) that appears twice.
    DuplicateElement,
    /// An attribute on an element.
    Attribute,
    /// A comment, CDATA section, processing instruction, declaration or doctype.
    UnsupportedMarkup,
    /// A `<special>` tag outside the vocabulary.
    InvalidSpecial,
    /// `<rating>` content that is not one of the four ratings.
    InvalidRating,
    /// A meta tag the model card does not define.
    UnknownMeta,
    /// Two meta tags of the same category (two qualities, `highres` and `lowres`, …).
    ConflictingMeta,
    /// Sections out of the training order.
    OutOfOrder,
    /// A tag repeated in one list.
    DuplicateTag,
    /// Raw Sakiko-Prompter spelling (underscores) that `normalize` would fix.
    NeedsNormalization,
    /// A system prompt other than the model card's prefix.
    UnexpectedSystemPrompt,
    /// `<tags>` with no content.
    EmptyTags,
    /// Stands for the findings past [`crate::MAX_DIAGNOSTICS`]; an error if any of them is one.
    TooManyDiagnostics,
    /// `<Prompt Start>` inside the body (after the system prompt's marker).
    RepeatedPromptStart,
}

/// One finding of the validator.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// What kind of finding.
    pub code: Code,
    /// Where, in the checked text.
    pub position: Position,
    /// Human-readable explanation.
    pub message: String,
    /// A replacement that would fix it, when there is an obvious one.
    pub suggestion: Option<String>,
}

impl Diagnostic {
    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// `LEVEL LINE:COL: message`, the format `sakiko prompt check` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.position, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_chars() {
        let text = "ab\nçd\n\nx";
        let at = |o| Position::of_offset(text, o);
        assert_eq!(at(0), Position { line: 1, column: 1 });
        assert_eq!(at(2), Position { line: 1, column: 3 });
        assert_eq!(at(3), Position { line: 2, column: 1 });
        // 'ç' is two bytes: byte 5 is 'd', the second character of line 2.
        assert_eq!(at(5), Position { line: 2, column: 2 });
        assert_eq!(at(4), Position { line: 2, column: 1 });
        assert_eq!(at(8), Position { line: 4, column: 1 });
        assert_eq!(at(99), Position { line: 4, column: 2 });
    }

    #[test]
    fn display_format() {
        let d = Diagnostic {
            severity: Severity::Warning,
            code: Code::UnknownMeta,
            position: Position { line: 3, column: 7 },
            message: "unknown meta tag `x`".into(),
            suggestion: None,
        };
        assert_eq!(d.to_string(), "warning 3:7: unknown meta tag `x`");
    }
}
