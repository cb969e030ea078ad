//! "Did you mean …?" suggestions for misspelt element names and `<special>` tags.

/// The candidate closest to `input` by Damerau-Levenshtein distance (case-insensitive), if it is
/// close enough to be a plausible typo. Ties go to the candidate sharing `input`'s first character,
/// so `1girls` suggests `1girl` rather than `2girls`.
pub(crate) fn closest<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let input = input.to_lowercase();
    let first = input.chars().next();
    let limit = (input.chars().count() / 3).max(1) + 1;
    candidates
        .iter()
        .map(|&c| {
            let distance = strsim::damerau_levenshtein(&input, c);
            (distance, c.chars().next() != first, c)
        })
        .filter(|&(distance, _, _)| distance <= limit)
        .min_by_key(|&(distance, other_first, _)| (distance, other_first))
        .map(|(_, _, c)| c)
}

#[cfg(test)]
mod tests {
    use super::closest;

    #[test]
    fn prefers_same_first_character_on_ties() {
        let c = ["1girl", "2girls", "3girls"];
        assert_eq!(closest("1girls", &c), Some("1girl"));
        assert_eq!(closest("2girl", &c), Some("2girls"));
    }

    #[test]
    fn rejects_distant_words() {
        assert_eq!(closest("landscape", &["1girl", "meta"]), None);
        assert_eq!(
            closest("Character", &["characters", "artists"]),
            Some("characters")
        );
    }
}
