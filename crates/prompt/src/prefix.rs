//! The fixed system prefix every Sakiko-Lumina prompt starts with.

/// The prefix the model card requires in front of every prompt, natural language or XML.
///
/// The model input is this prefix, one space, then the prompt body.
pub const PREFIX: &str = "You are an assistant designed to generate anime images based on textual prompts. <Prompt Start>";

/// The marker that ends a Lumina system prompt (the template is `"{system} <Prompt Start> {prompt}"`).
pub const PROMPT_START: &str = "<Prompt Start>";

/// Prepends [`PREFIX`] and one space to `body`.
///
/// Idempotent: a text that already starts with the prefix is returned unchanged, so a prompt can be
/// passed through this function any number of times.
///
/// ```
/// use sakiko_prompt::{with_prefix, PREFIX};
/// let once = with_prefix("a girl under cherry blossoms");
/// assert_eq!(once, format!("{PREFIX} a girl under cherry blossoms"));
/// assert_eq!(with_prefix(&once), once);
/// ```
pub fn with_prefix(body: &str) -> String {
    if body.starts_with(PREFIX) {
        body.to_owned()
    } else {
        format!("{PREFIX} {}", body.trim_start())
    }
}

/// Splits a text into its system prompt (everything before `<Prompt Start>`, trimmed) and the body.
///
/// Returns `None` for the system prompt when the text has no `<Prompt Start>` marker. `body_offset`
/// is the byte offset of the body in `text`, so diagnostics can point into the original input.
pub(crate) fn split_system_prompt(text: &str) -> (Option<&str>, usize) {
    match text.find(PROMPT_START) {
        Some(at) => {
            let after = at + PROMPT_START.len();
            (Some(text[..at].trim()), after)
        }
        None => (None, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_the_card_text_with_one_space() {
        assert_eq!(
            with_prefix("body"),
            "You are an assistant designed to generate anime images based on textual prompts. \
             <Prompt Start> body"
        );
    }

    #[test]
    fn prefix_is_idempotent_and_trims_leading_space() {
        let once = with_prefix("  \n<tags>\n</tags>");
        assert_eq!(once, format!("{PREFIX} <tags>\n</tags>"));
        assert_eq!(with_prefix(&once), once);
        assert_eq!(with_prefix(&with_prefix(&once)), once);
    }

    #[test]
    fn system_prompt_split() {
        let text = format!("{PREFIX} hello");
        let (system, offset) = split_system_prompt(&text);
        assert_eq!(
            system,
            Some(
                "You are an assistant designed to generate anime images based on textual prompts."
            )
        );
        assert_eq!(&text[offset..], " hello");
        assert_eq!(split_system_prompt("no marker"), (None, 0));
    }
}
