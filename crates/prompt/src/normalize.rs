//! Sakiko-Prompter normalisation: turn the Prompter's XML into what Sakiko-Lumina was trained on.
//!
//! The model card prescribes three string replacements:
//! `text.replace("_", " ").replace("</tags>", "<meta>masterpiece, newest, highres</meta></tags>")
//! .replace("copyrights>", "copyright>")`. This module does the same, but scoped so that it is
//! safe to run on any prompt and idempotent:
//! - underscores become spaces in tag text only, and emoticon tags keep theirs by default
//!   ([`EmoticonPolicy`]);
//! - `<copyrights>` / `</copyrights>` become `<copyright>` / `</copyright>`;
//! - the default meta is inserted directly before `</tags>` only when there is no `<meta>` element,
//!   so normalising twice never duplicates it.
//!
//! Everything else, layout included, is kept byte for byte. Natural-language text (no `<tags>`)
//! is returned unchanged.

use crate::DEFAULT_META;
use crate::tag_list::{EmoticonPolicy, respell};

/// Options for [`normalize_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NormalizeOptions {
    /// Underscores in emoticons (default: kept).
    pub emoticons: EmoticonPolicy,
}

/// [`normalize_with`] with default options.
///
/// ```
/// use sakiko_prompt::normalize;
/// let raw = "<tags>\n<copyrights>bang_dream!</copyrights>\n<general>long_hair, ^_^</general>\n</tags>";
/// assert_eq!(
///     normalize(raw),
///     "<tags>\n<copyright>bang dream!</copyright>\n<general>long hair, ^_^</general>\n\
///      <meta>masterpiece, newest, highres</meta></tags>"
/// );
/// assert_eq!(normalize(&normalize(raw)), normalize(raw));
/// ```
pub fn normalize(text: &str) -> String {
    normalize_with(text, NormalizeOptions::default())
}

/// Normalises Sakiko-Prompter output (see the module documentation).
pub fn normalize_with(text: &str, options: NormalizeOptions) -> String {
    if !text.contains("</tags>") {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + DEFAULT_META.len() + 16);
    for segment in segments(text) {
        match segment {
            Segment::Markup(markup) => {
                let name = markup_name(markup);
                out.push_str(&markup.replacen(
                    "copyrights",
                    "copyright",
                    usize::from(name == "copyrights"),
                ));
            }
            Segment::Text(text) => {
                let respelled: Vec<String> = text
                    .split(',')
                    .map(|piece| respell_keeping_space(piece, options.emoticons))
                    .collect();
                out.push_str(&respelled.join(","));
            }
        }
    }
    if !has_meta_element(&out)
        && let Some(at) = out.rfind("</tags>")
    {
        out.insert_str(at, &format!("<meta>{DEFAULT_META}</meta>"));
    }
    out
}

/// Whether `text` opens a `<meta>` element anywhere (`<meta>`, `<meta/>`, `<meta …>`).
///
/// Looked for in the whole text rather than per markup segment, so that injecting the default
/// meta is idempotent even on malformed input.
fn has_meta_element(text: &str) -> bool {
    text.match_indices("<meta").any(|(at, m)| {
        text[at + m.len()..]
            .chars()
            .next()
            .is_some_and(|c| c == '>' || c == '/' || c.is_whitespace())
    })
}

/// Respells one comma-separated piece, keeping its surrounding white space.
fn respell_keeping_space(piece: &str, emoticons: EmoticonPolicy) -> String {
    let trimmed = piece.trim();
    let lead = piece.len() - piece.trim_start().len();
    format!(
        "{}{}{}",
        &piece[..lead],
        respell(trimmed, emoticons),
        &piece[lead + trimmed.len()..]
    )
}

enum Segment<'a> {
    Markup(&'a str),
    Text(&'a str),
}

/// Splits text into markup (`<name …>`, `</name>`) and text. A `<` that does not start a name
/// (as in `>_<`) is text.
fn segments(text: &str) -> impl Iterator<Item = Segment<'_>> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let is_markup_start = |s: &str| {
            s.starts_with('<')
                && s[1..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_alphabetic() || c == '/')
        };
        if is_markup_start(rest)
            && let Some(end) = rest.find('>')
        {
            let (markup, tail) = rest.split_at(end + 1);
            rest = tail;
            return Some(Segment::Markup(markup));
        }
        let end = rest
            .char_indices()
            .skip(1)
            .find(|&(i, _)| is_markup_start(&rest[i..]))
            .map_or(rest.len(), |(i, _)| i);
        let (chunk, tail) = rest.split_at(end);
        rest = tail;
        Some(Segment::Text(chunk))
    })
}

/// The element name of a markup segment: `</meta>` → `meta`, `<copyrights/>` → `copyrights`.
fn markup_name(markup: &str) -> &str {
    let inner = markup.trim_start_matches('<').trim_start_matches('/');
    let end = inner
        .find(|c: char| c.is_whitespace() || c == '/' || c == '>')
        .unwrap_or(inner.len());
    &inner[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMPTER: &str = "<tags>\n<special>1girl</special>\n<artists>some_artist</artists>\n\
        <characters>togawa_sakiko</characters>\n<copyrights>bang_dream!_it's_mygo!!!!!</copyrights>\n\
        <general>blue_hair, two_side_up, ^_^, >_o</general>\n<rating>safe</rating>\n</tags>";

    #[test]
    fn matches_the_card_snippet_except_for_emoticons() {
        let expected = "<tags>\n<special>1girl</special>\n<artists>some artist</artists>\n\
        <characters>togawa sakiko</characters>\n<copyright>bang dream! it's mygo!!!!!</copyright>\n\
        <general>blue hair, two side up, ^_^, >_o</general>\n<rating>safe</rating>\n\
        <meta>masterpiece, newest, highres</meta></tags>";
        assert_eq!(normalize(PROMPTER), expected);

        // With `Replace`, the result is exactly the card's Python snippet.
        let card = PROMPTER
            .replace('_', " ")
            .replace(
                "</tags>",
                "<meta>masterpiece, newest, highres</meta></tags>",
            )
            .replace("copyrights>", "copyright>");
        let replaced = normalize_with(
            PROMPTER,
            NormalizeOptions {
                emoticons: EmoticonPolicy::Replace,
            },
        );
        assert_eq!(replaced, card);
    }

    #[test]
    fn idempotent_and_never_duplicates_meta() {
        let once = normalize(PROMPTER);
        assert_eq!(normalize(&once), once);
        assert_eq!(once.matches("<meta>").count(), 1);
    }

    #[test]
    fn existing_meta_is_kept() {
        let text = "<tags>\n<general>long_hair</general>\n<meta>best_quality</meta>\n</tags>";
        assert_eq!(
            normalize(text),
            "<tags>\n<general>long hair</general>\n<meta>best quality</meta>\n</tags>"
        );
        let empty = "<tags><meta/></tags>";
        assert_eq!(normalize(empty), empty);
    }

    #[test]
    fn simple_form_and_prefix() {
        let text = format!(
            "{} <tags>\n<artists>some_artist</artists>\nlong_hair, 1girl\n</tags>",
            crate::PREFIX
        );
        assert_eq!(
            normalize(&text),
            format!(
                "{} <tags>\n<artists>some artist</artists>\nlong hair, 1girl\n\
                 <meta>masterpiece, newest, highres</meta></tags>",
                crate::PREFIX
            )
        );
    }

    #[test]
    fn natural_language_is_unchanged() {
        let text = "Sakiko_Togawa smiles";
        assert_eq!(normalize(text), text);
    }

    #[test]
    fn markup_names() {
        assert_eq!(markup_name("</meta>"), "meta");
        assert_eq!(markup_name("<copyrights/>"), "copyrights");
        assert_eq!(markup_name("<tags a=\"1\">"), "tags");
    }
}
