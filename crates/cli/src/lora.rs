//! `--lora FILE[:S[:TE]]` and `<lora:NAME:S>` prompt tags: which adapters a generation uses.

use std::path::{Path, PathBuf};

use sakiko_adapters::{Strength, extract_tags, find_adapter};
use sakiko_pipeline::AdapterSpec;

use crate::CliError;

fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::Failed(format!("adapter: {e}"))
}

/// Parses `FILE[:STRENGTH[:TE_STRENGTH]]`: up to two trailing numbers are strengths (the denoiser's,
/// then the text encoder's, which defaults to the denoiser's); the rest is the file or name.
fn parse(spec: &str) -> Result<(String, Strength), CliError> {
    let mut name = spec;
    let mut numbers = Vec::new();
    while numbers.len() < 2 {
        match name.rsplit_once(':') {
            Some((rest, last)) if !rest.is_empty() => match last.parse::<f32>() {
                Ok(v) if v.is_finite() => {
                    numbers.push(v);
                    name = rest;
                }
                Ok(_) => {
                    return Err(CliError::Usage(format!(
                        "--lora {spec}: `{last}` is not a strength"
                    )));
                }
                Err(_) => break,
            },
            _ => break,
        }
    }
    if numbers.len() == 2
        && let Some((rest, last)) = name.rsplit_once(':')
        && !rest.is_empty()
        && last.parse::<f32>().is_ok()
    {
        return Err(CliError::Usage(format!(
            "--lora {spec}: at most two strengths (the denoiser's, then the text encoder's)"
        )));
    }
    numbers.reverse();
    let dit = numbers.first().copied().unwrap_or(1.0);
    let text_encoder = numbers.get(1).copied().unwrap_or(dit);
    Ok((name.to_owned(), Strength { dit, text_encoder }))
}

/// The file `name` names: a path that exists, else a name in the adapters folder.
fn resolve(name: &str, dir: Option<&Path>) -> Result<PathBuf, CliError> {
    let path = Path::new(name);
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    match dir {
        Some(dir) => find_adapter(dir, name).map_err(failed),
        None => Err(CliError::Usage(format!(
            "adapter `{name}` is not a file, and there is no adapters folder to look in \
             (pass --lora-dir, or --models-dir with a loras/ folder)"
        ))),
    }
}

/// The adapters of `--lora` options, then those tagged in `prompt` (whose tags are removed):
/// returns the prompt without tags and the adapters in that order.
pub fn adapters(
    options: &[String],
    prompt: &str,
    negative: &str,
    dir: Option<&Path>,
) -> Result<(String, Vec<AdapterSpec>), CliError> {
    if !extract_tags(negative).is_ok_and(|(_, tags)| tags.is_empty()) {
        return Err(CliError::Usage(
            "adapter tags (<lora:…>) belong in the prompt, not the negative prompt".into(),
        ));
    }
    let mut specs = Vec::new();
    for option in options {
        let (name, strength) = parse(option)?;
        specs.push(AdapterSpec {
            path: resolve(&name, dir)?,
            strength,
        });
    }
    let (text, tags) = extract_tags(prompt).map_err(|e| CliError::Usage(e.to_string()))?;
    for tag in tags {
        specs.push(AdapterSpec {
            path: resolve(&tag.name, dir)?,
            strength: tag.strength,
        });
    }
    Ok((text, specs))
}

/// One line about an adapter the pipeline matched, for the progress output.
pub fn describe(r: &sakiko_pipeline::AdapterReport) -> String {
    let formats: Vec<String> = r.formats.iter().map(|f| f.to_string()).collect();
    format!(
        "adapter {}: {}{}, rank {}, alpha {}; {} denoiser and {} text-encoder layers at {} / {}",
        r.path.display(),
        formats.join("+"),
        if r.dora { " (DoRA)" } else { "" },
        r.rank.map_or("-".into(), |v| v.to_string()),
        r.alpha.map_or("-".into(), |v| v.to_string()),
        r.dit_layers,
        r.text_encoder_layers,
        r.strength.dit,
        r.strength.text_encoder
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strengths_follow_the_file() {
        let s = |dit, text_encoder| Strength { dit, text_encoder };
        for (spec, name, strength) in [
            ("style.safetensors", "style.safetensors", s(1.0, 1.0)),
            ("style:0.8", "style", s(0.8, 0.8)),
            ("style:0.8:0.25", "style", s(0.8, 0.25)),
            (
                "C:\\loras\\x.safetensors:0.5",
                "C:\\loras\\x.safetensors",
                s(0.5, 0.5),
            ),
            ("a:b:1:2", "a:b", s(1.0, 2.0)),
            (":0.5", ":0.5", s(1.0, 1.0)),
        ] {
            assert_eq!(parse(spec).unwrap(), (name.to_owned(), strength), "{spec}");
        }
        assert!(parse("x:inf").is_err());
        assert!(parse("x:1:2:3").is_err(), "three strengths");
    }
}
