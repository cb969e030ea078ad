//! AUTOMATIC1111's adapter tags in prompts (`<lora:NAME:0.8>`), and finding adapter files by
//! name in a ComfyUI `loras/` folder.

use std::path::{Path, PathBuf};

use crate::{AdapterError, Strength};

/// An adapter a prompt asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptAdapter {
    /// The name as written (a file stem or a path relative to the adapters folder).
    pub name: String,
    /// The strengths.
    pub strength: Strength,
}

/// Removes `<lora:…>` (and `<lyco:…>`) tags from `prompt` and returns the text without them and
/// the adapters they name, in order. A1111's syntax: `<lora:NAME>` (strength 1),
/// `<lora:NAME:S>` (S on both models), `<lora:NAME:TE:UNET>` (text encoder first, then the
/// denoiser, as A1111 orders them), and the named forms `te=…`, `unet=…`.
///
/// ```
/// let (text, tags) = sakiko_adapters::extract_tags("1girl, <lora:watercolor:0.6> smile")?;
/// assert_eq!(text, "1girl, smile");
/// assert_eq!(tags[0].name, "watercolor");
/// assert_eq!(tags[0].strength.dit, 0.6);
/// # Ok::<(), sakiko_adapters::AdapterError>(())
/// ```
pub fn extract_tags(prompt: &str) -> Result<(String, Vec<PromptAdapter>), AdapterError> {
    let mut text = String::with_capacity(prompt.len());
    let mut tags = Vec::new();
    let mut rest = prompt;
    while let Some(start) = ["<lora:", "<lyco:"]
        .iter()
        .filter_map(|open| rest.find(open))
        .min()
    {
        let Some(len) = rest[start..].find('>') else {
            return Err(tag_error(&rest[start..], "it has no closing `>`"));
        };
        let tag = &rest[start..start + len + 1];
        tags.push(parse(tag)?);
        text.push_str(&rest[..start]);
        rest = &rest[start + len + 1..];
        // One space where the tag stood between two.
        if text.ends_with(' ') {
            rest = rest.trim_start_matches(' ');
        }
    }
    text.push_str(rest);
    Ok((text.trim().to_owned(), tags))
}

fn tag_error(tag: &str, reason: &str) -> AdapterError {
    AdapterError::Tag {
        tag: tag.to_owned(),
        reason: reason.to_owned(),
    }
}

fn parse(tag: &str) -> Result<PromptAdapter, AdapterError> {
    let inner = &tag[6..tag.len() - 1];
    let mut fields = inner.split(':');
    let name = fields.next().unwrap_or("").trim();
    if name.is_empty() {
        return Err(tag_error(tag, "it names no adapter"));
    }
    let (mut positional, mut te, mut unet) = (Vec::new(), None, None);
    for field in fields {
        let number = |v: &str| {
            v.trim()
                .parse::<f32>()
                .ok()
                .filter(|s| s.is_finite())
                .ok_or_else(|| tag_error(tag, &format!("`{}` is not a strength", v.trim())))
        };
        match field.split_once('=').map(|(k, v)| (k.trim(), v)) {
            Some(("te", v)) => te = Some(number(v)?),
            Some(("unet", v)) => unet = Some(number(v)?),
            Some((key, _)) => {
                return Err(tag_error(
                    tag,
                    &format!("`{key}` is not a setting (te=, unet=)"),
                ));
            }
            None => positional.push(number(field)?),
        }
    }
    if positional.len() > 2 {
        return Err(tag_error(tag, "it has more than two strengths"));
    }
    let te = te.or(positional.first().copied()).unwrap_or(1.0);
    let dit = unet.or(positional.get(1).copied()).unwrap_or(te);
    Ok(PromptAdapter {
        name: name.to_owned(),
        strength: Strength {
            dit,
            text_encoder: te,
        },
    })
}

/// The adapter file `name` in `dir`: a path relative to it (with or without `.safetensors`), or
/// the stem of a `.safetensors` file anywhere below it (ComfyUI's `loras/` often has subfolders).
/// Not found: an error naming the closest file.
pub fn find_adapter(dir: &Path, name: &str) -> Result<PathBuf, AdapterError> {
    for candidate in [dir.join(name), dir.join(format!("{name}.safetensors"))] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    if !dir.is_dir() {
        return Err(AdapterError::NotFound {
            name: name.to_owned(),
            dir: dir.to_path_buf(),
            suggestion: " (the folder does not exist)".into(),
        });
    }
    let mut files = Vec::new();
    collect(dir, &mut files, 0);
    let stem = |p: &Path| {
        p.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let matches: Vec<&PathBuf> = files.iter().filter(|p| stem(p) == name).collect();
    match matches[..] {
        [found] => return Ok(found.clone()),
        [_, _, ..] => {
            let list: Vec<String> = matches
                .iter()
                .map(|p| p.strip_prefix(dir).unwrap_or(p).display().to_string())
                .collect();
            return Err(AdapterError::Ambiguous {
                name: name.to_owned(),
                dir: dir.to_path_buf(),
                candidates: list.join(", "),
            });
        }
        [] => {}
    }
    let suggestion = files
        .iter()
        .map(|p| (strsim::normalized_levenshtein(name, &stem(p)), stem(p)))
        .filter(|(score, _)| *score > 0.5)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, s)| format!("; did you mean `{s}`?"))
        .unwrap_or_default();
    Err(AdapterError::NotFound {
        name: name.to_owned(),
        dir: dir.to_path_buf(),
        suggestion,
    })
}

/// `.safetensors` files below `dir` (a few levels deep; unreadable folders are skipped).
fn collect(dir: &Path, files: &mut Vec<PathBuf>, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() && depth < 4 {
            collect(&path, files, depth + 1);
        } else if path.extension().is_some_and(|e| e == "safetensors") {
            files.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strengths(prompt: &str) -> (String, Vec<(String, f32, f32)>) {
        let (text, tags) = extract_tags(prompt).unwrap();
        let tags = tags
            .into_iter()
            .map(|t| (t.name, t.strength.dit, t.strength.text_encoder))
            .collect();
        (text, tags)
    }

    #[test]
    fn tags_are_removed_and_read_as_a1111_does() {
        assert_eq!(
            strengths("<lora:a>1girl, <lora:b:0.5> smile, <lyco:c:0.2:0.9>"),
            (
                "1girl, smile,".into(),
                vec![
                    ("a".into(), 1.0, 1.0),
                    ("b".into(), 0.5, 0.5),
                    // A1111's positional order: text encoder, then the denoiser.
                    ("c".into(), 0.9, 0.2),
                ]
            )
        );
        assert_eq!(
            strengths("x <lora:sub/d:unet=0.7:te=0>"),
            ("x".into(), vec![("sub/d".into(), 0.7, 0.0)])
        );
        assert_eq!(strengths("no tags here"), ("no tags here".into(), vec![]));
        assert_eq!(
            strengths("<tags><lora:a:1></tags>").0,
            "<tags></tags>",
            "XML around a tag stays intact"
        );
    }

    #[test]
    fn bad_tags_are_errors() {
        for (prompt, needle) in [
            ("<lora:a:x>", "`x` is not a strength"),
            ("<lora::1>", "names no adapter"),
            ("<lora:a:1", "no closing"),
            ("<lora:a:1:2:3>", "more than two"),
            ("<lora:a:dyn=3>", "`dyn` is not a setting"),
            ("<lora:a: te=x>", "`x` is not a strength"),
            ("<lora:a:inf>", "not a strength"),
        ] {
            let e = extract_tags(prompt).unwrap_err().to_string();
            assert!(e.contains(needle), "{prompt}: {e}");
        }
    }

    #[test]
    fn adapters_are_found_by_name_stem_or_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("styles")).unwrap();
        for f in ["a.safetensors", "styles/watercolor.safetensors"] {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        let found = |n: &str| find_adapter(dir.path(), n).unwrap();
        assert_eq!(found("a"), dir.path().join("a.safetensors"));
        assert_eq!(found("a.safetensors"), dir.path().join("a.safetensors"));
        assert_eq!(
            found("watercolor"),
            dir.path().join("styles/watercolor.safetensors")
        );
        assert_eq!(
            found("styles/watercolor"),
            dir.path().join("styles/watercolor.safetensors")
        );
        let e = find_adapter(dir.path(), "watercolour")
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `watercolor`"), "{e}");
        std::fs::create_dir(dir.path().join("other")).unwrap();
        std::fs::write(dir.path().join("other/watercolor.safetensors"), b"").unwrap();
        let e = find_adapter(dir.path(), "watercolor")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("several adapters") && e.contains("styles/watercolor.safetensors"),
            "{e}"
        );
        let e = find_adapter(&dir.path().join("nope"), "a")
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
    }
}
