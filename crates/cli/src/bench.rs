//! `sakiko bench`: one stage (denoise, decode, encode, prompter) timed on any compiled backend, with random
//! weights made in memory at the real shapes (no files, no download).

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, FloatDType, Tensor};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use safetensors::Dtype;
use sakiko_gemma::{EncoderOptions, Gemma2, Gemma2Config};
use sakiko_nextdit::{NextDit, NextDitConfig};
use sakiko_pipeline::{Conditioning, LuminaDenoiser};
use sakiko_prompter::{GenerateOptions, Qwen3Config, Sampling, generate};
use sakiko_sampling::Denoiser;
use sakiko_vae::{Vae, VaeConfig};
use sakiko_weights::WeightFile;
use serde::Serialize;

use crate::CliError;
use crate::backend::{BackendChoice, Job, Settings, settings};
use crate::files::DitDtype;

/// What `sakiko bench` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// One CFG step of the DiT, as the pipeline runs it (prompt and negative).
    Denoise,
    /// One VAE decode of the latent for --width × --height.
    Decode,
    /// One text-encoder forward of --prompt-tokens tokens.
    Encode,
    /// Sakiko-Prompter's Qwen3: a prefill of --prompt-tokens tokens, then --new-tokens cached
    /// decoding steps (greedy); reports tokens/s of both.
    Prompter,
}

/// Model sizes to bench without config files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Small test-sized models (seconds on any machine).
    Tiny,
    /// The mid-size models of `tools/reference/*_bench.py` (same shapes as the PyTorch side).
    Mid,
    /// The real models: NextDiT 2B, the FLUX VAE, Gemma-2-2B, Qwen3-0.6B.
    #[value(name = "2b")]
    #[serde(rename = "2b")]
    TwoB,
}

/// `sakiko bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The stage to time.
    #[arg(long, value_enum, default_value_t = Stage::Denoise)]
    stage: Stage,
    /// Model sizes (ignored for a component whose --*-config is given).
    #[arg(long, value_enum, default_value_t = Preset::TwoB)]
    preset: Preset,
    /// The DiT's diffusers `config.json` (instead of the preset).
    #[arg(long, value_name = "J")]
    dit_config: Option<PathBuf>,
    /// The VAE's diffusers `config.json`.
    #[arg(long, value_name = "J")]
    vae_config: Option<PathBuf>,
    /// The text encoder's Hugging Face `config.json`.
    #[arg(long, value_name = "J")]
    text_encoder_config: Option<PathBuf>,
    /// The prompter's Hugging Face `config.json`.
    #[arg(long, value_name = "J")]
    prompter_config: Option<PathBuf>,
    /// Image width in pixels (a multiple of 16).
    #[arg(long, default_value_t = 1024)]
    width: usize,
    /// Image height in pixels (a multiple of 16).
    #[arg(long, default_value_t = 1024)]
    height: usize,
    /// Prompt length in tokens (denoise: the positive caption; encode: the prompt).
    #[arg(long, default_value_t = 96)]
    prompt_tokens: usize,
    /// Negative prompt length in tokens (denoise).
    #[arg(long, default_value_t = 8)]
    negative_tokens: usize,
    /// Tokens generated after the prefill (prompter).
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Untimed runs first (kernel compilation and autotuning happen here on GPUs).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// The backend to run on.
    #[arg(long, value_enum, default_value_t = BackendChoice::Flex)]
    backend: BackendChoice,
    /// Compute dtype of the stage's model.
    #[arg(long, value_enum, default_value_t = DitDtype::Auto)]
    dtype: DitDtype,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Report {
    stage: Stage,
    backend: String,
    dtype: String,
    preset: Preset,
    width: usize,
    height: usize,
    prompt_tokens: usize,
    negative_tokens: usize,
    runs: usize,
    warmup: usize,
    median_s: f64,
    min_s: f64,
    max_s: f64,
    times_s: Vec<f64>,
    /// The first untimed run (includes kernel compilation and autotuning on GPUs).
    first_run_s: Option<f64>,
    /// Making the random weights and loading them onto the device.
    load_s: f64,
    peak_rss_mib: Option<f64>,
    settings: Settings,
    /// Prompter: tokens generated per run.
    new_tokens: Option<usize>,
    /// Prompter: prompt tokens per second of the prefill (median run).
    prefill_tokens_per_s: Option<f64>,
    /// Prompter: generated tokens per second of the cached steps (median run).
    decode_tokens_per_s: Option<f64>,
}

/// Prefill and decode seconds of one prompter run.
type Phases = Option<(f64, f64)>;

impl BenchArgs {
    pub fn run(self) -> Result<(), CliError> {
        self.validate()?;
        let backend = self.backend;
        backend.run(self)
    }

    fn validate(&self) -> Result<(), CliError> {
        let bad = |m: String| Err(CliError::Usage(m));
        for (name, v) in [("--width", self.width), ("--height", self.height)] {
            if !v.is_multiple_of(16) || !(16..=8192).contains(&v) {
                return bad(format!("{name} {v} must be a multiple of 16 in 16..=8192"));
            }
        }
        if self.prompt_tokens == 0 || self.negative_tokens == 0 || self.new_tokens == 0 {
            return bad(
                "--prompt-tokens, --negative-tokens and --new-tokens must be at least 1".into(),
            );
        }
        if self.runs == 0 {
            return bad("--runs must be at least 1".into());
        }
        if self.stage == Stage::Decode && !matches!(self.dtype, DitDtype::Auto | DitDtype::F32) {
            return bad(
                "--dtype applies to --stage denoise and encode; the VAE computes in f32".into(),
            );
        }
        Ok(())
    }

    fn config<T: serde::de::DeserializeOwned>(
        &self,
        file: &Option<PathBuf>,
        preset: impl FnOnce(Preset) -> T,
    ) -> Result<T, CliError> {
        match file {
            Some(path) => {
                sakiko_weights::read_config(path).map_err(|e| CliError::Failed(e.to_string()))
            }
            None => Ok(preset(self.preset)),
        }
    }
}

impl Job for BenchArgs {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> Result<(), CliError> {
        crate::backend::probe::<B>(&device)?;
        let failed = |e: &dyn std::fmt::Display| CliError::Failed(e.to_string());
        let spinner = (!self.json).then(|| {
            let bar = ProgressBar::new_spinner().with_message("making random weights");
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("template"),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        let start = Instant::now();
        type Step<'a> = Box<dyn FnMut() -> Result<Phases, String> + 'a>;
        let (dtype, mut step): (FloatDType, Step<'_>) = match self.stage {
            Stage::Denoise => {
                let config = self.config(&self.dit_config, dit_preset)?;
                config.validate().map_err(|e| failed(&e))?;
                let dtype = self
                    .dtype
                    .float()
                    .unwrap_or_else(|| sakiko_pipeline::auto_dtype::<B>(&device));
                let file = synthetic(&config.tensor_shapes(), Dtype::BF16)?;
                let dit = NextDit::<B>::from_weights_as(&file, Some(config), dtype, &device)
                    .map_err(|e| failed(&e))?;
                let f = dit.config().cap_feat_dim;
                let cond = |len| Conditioning {
                    features: Tensor::<B, 3>::random(
                        [1, len, f],
                        Distribution::Normal(0.0, 1.0),
                        &device,
                    ),
                };
                let (positive, negative) = (cond(self.prompt_tokens), cond(self.negative_tokens));
                // The FLUX VAE's latent: 8× smaller than the image.
                let x = Tensor::<B, 4>::random(
                    [1, dit.config().in_channels, self.height / 8, self.width / 8],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                );
                (
                    dtype,
                    Box::new(move || {
                        let mut denoiser =
                            LuminaDenoiser::new(&dit, positive.clone(), negative.clone());
                        let (a, b) = denoiser.denoise_pair(&x, 0.5).map_err(|e| e.to_string())?;
                        drop((a.into_data(), b.into_data()));
                        Ok(None)
                    }),
                )
            }
            Stage::Decode => {
                let config = self.config(&self.vae_config, vae_preset)?;
                let file = synthetic(&config.tensor_shapes(), Dtype::BF16)?;
                let dtype = self
                    .dtype
                    .float()
                    .unwrap_or_else(|| sakiko_pipeline::auto_dtype::<B>(&device));
                let vae = Vae::<B>::from_weights_as(&file, Some(config), dtype, &device)
                    .map_err(|e| failed(&e))?;
                let (c, down) = (vae.config().latent_channels, vae.config().downscale());
                let z = Tensor::<B, 4>::random(
                    [1, c, self.height / down, self.width / down],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                );
                (
                    dtype,
                    Box::new(move || {
                        let image = vae.decode(z.clone()).map_err(|e| e.to_string())?;
                        drop(image.into_data());
                        Ok(None)
                    }),
                )
            }
            Stage::Encode => {
                let config = self.config(&self.text_encoder_config, gemma_preset)?;
                let file = synthetic(&config.tensor_shapes(), Dtype::F16)?;
                let vocab = config.vocab_size as u32;
                let dtype = self
                    .dtype
                    .float()
                    .unwrap_or_else(|| sakiko_pipeline::auto_dtype::<B>(&device));
                let gemma = Gemma2::<B>::from_weights_as(&file, Some(config), dtype, &device)
                    .map_err(|e| failed(&e))?;
                // BOS, then ids spread over the vocabulary.
                let ids: Vec<u32> = std::iter::once(2)
                    .chain((1..self.prompt_tokens as u32).map(|i| 3 + i * 7919 % (vocab - 3)))
                    .collect();
                let device = device.clone();
                (
                    dtype,
                    Box::new(move || {
                        let hidden = gemma
                            .forward(
                                std::slice::from_ref(&ids),
                                EncoderOptions::comfyui(),
                                &device,
                            )
                            .map_err(|e| e.to_string())?;
                        drop(hidden.conditioning().into_data());
                        Ok(None)
                    }),
                )
            }
            Stage::Prompter => {
                let config = self.config(&self.prompter_config, prompter_preset)?;
                config.validate().map_err(|e| failed(&e))?;
                let file = synthetic(&config.tensor_shapes(), Dtype::BF16)?;
                let dtype = self
                    .dtype
                    .float()
                    .unwrap_or_else(|| sakiko_pipeline::auto_dtype::<B>(&device));
                let vocab = config.vocab_size as u32;
                let model = config
                    .init::<B>(&device)
                    .load_weights(&file, dtype, &device)
                    .map_err(|e| failed(&e))?;
                let ids: Vec<u32> = (0..self.prompt_tokens as u32)
                    .map(|i| 1 + i * 7919 % (vocab - 1))
                    .collect();
                let options = GenerateOptions {
                    sampling: Sampling::greedy(),
                    max_new_tokens: self.new_tokens,
                    stop: Vec::new(),
                };
                (
                    dtype,
                    Box::new(move || {
                        let out = generate(&model, &ids, &options, |_| ControlFlow::Continue(()))
                            .map_err(|e| e.to_string())?;
                        Ok(Some((out.prefill.as_secs_f64(), out.decode.as_secs_f64())))
                    }),
                )
            }
        };
        let load_s = start.elapsed().as_secs_f64();
        // With `--json` (no spinner), each finished phase goes to stderr as it ends, so a run
        // stopped early (a time limit hit by a first run's kernel compilation) says how far it got.
        let log = |line: String| {
            if spinner.is_none() {
                eprintln!("{line}");
            }
        };
        log(format!("random weights made in {load_s:.2} s"));
        let mut first_run_s = None;
        for i in 0..self.warmup {
            if let Some(bar) = &spinner {
                bar.set_message(format!("warm-up run {} of {}", i + 1, self.warmup));
            }
            let t = Instant::now();
            step().map_err(CliError::Failed)?;
            let elapsed = t.elapsed().as_secs_f64();
            log(format!(
                "warm-up run {} of {}: {elapsed:.3} s",
                i + 1,
                self.warmup
            ));
            first_run_s.get_or_insert(elapsed);
        }
        let mut times_s = Vec::with_capacity(self.runs);
        let mut phases = Vec::with_capacity(self.runs);
        for i in 0..self.runs {
            if let Some(bar) = &spinner {
                bar.set_message(format!("run {} of {}", i + 1, self.runs));
            }
            let t = Instant::now();
            phases.push(step().map_err(CliError::Failed)?);
            let elapsed = t.elapsed().as_secs_f64();
            log(format!("run {} of {}: {elapsed:.3} s", i + 1, self.runs));
            times_s.push(elapsed);
        }
        if let Some(bar) = spinner {
            bar.finish_and_clear();
        }
        let mut sorted = times_s.clone();
        sorted.sort_by(f64::total_cmp);
        let phases: Vec<(f64, f64)> = phases.into_iter().flatten().collect();
        let prompter = self.stage == Stage::Prompter;
        let prefill = median(phases.iter().map(|p| p.0).collect());
        // The first token comes from the prefill; the cached steps make the rest.
        let decode = median(phases.iter().map(|p| p.1).collect());
        let report = Report {
            stage: self.stage,
            backend: sakiko_pipeline::backend_name::<B>(),
            dtype: format!("{dtype:?}").to_lowercase(),
            preset: self.preset,
            width: self.width,
            height: self.height,
            prompt_tokens: self.prompt_tokens,
            negative_tokens: self.negative_tokens,
            runs: self.runs,
            warmup: self.warmup,
            median_s: median(times_s.clone()).unwrap_or_default(),
            min_s: sorted.first().copied().unwrap_or_default(),
            max_s: sorted.last().copied().unwrap_or_default(),
            times_s,
            first_run_s,
            load_s,
            peak_rss_mib: sakiko_weights::peak_rss_mib(),
            settings: settings::<B>(),
            new_tokens: prompter.then_some(self.new_tokens),
            prefill_tokens_per_s: prefill.map(|s| self.prompt_tokens as f64 / s),
            decode_tokens_per_s: decode
                .filter(|_| self.new_tokens > 1)
                .map(|s| (self.new_tokens - 1) as f64 / s),
        };
        if self.json {
            println!(
                "{}",
                serde_json::to_string(&report).map_err(|e| failed(&e))?
            );
        } else {
            print_text(&report);
        }
        Ok(())
    }
}

fn synthetic(shapes: &[(String, Vec<usize>)], dtype: Dtype) -> Result<WeightFile, CliError> {
    WeightFile::synthetic("<random weights>", shapes, dtype)
        .map_err(|e| CliError::Failed(e.to_string()))
}

fn print_text(r: &Report) {
    let ms = |s: f64| s * 1e3;
    println!(
        "{:?} on {} ({}; {} threads; {}), {:?} preset, {}×{}",
        r.stage,
        r.backend,
        r.dtype,
        r.settings.threads,
        r.settings.features.join(", "),
        r.preset,
        r.width,
        r.height
    );
    println!(
        "median {:.1} ms (min {:.1}, max {:.1}) over {} runs; first run {}; weights made and loaded in {:.1} s; peak RSS {}",
        ms(r.median_s),
        ms(r.min_s),
        ms(r.max_s),
        r.runs,
        r.first_run_s
            .map_or("—".into(), |s| format!("{:.1} ms", ms(s))),
        r.load_s,
        r.peak_rss_mib.map_or("—".into(), |m| format!("{m:.0} MiB"))
    );
    if let (Some(p), Some(n)) = (r.prefill_tokens_per_s, r.new_tokens) {
        let decode = r
            .decode_tokens_per_s
            .map_or("—".into(), |d| format!("{d:.1}"));
        println!(
            "prefill {p:.1} tokens/s ({} tokens); decode {decode} tokens/s ({n} new tokens)",
            r.prompt_tokens
        );
    }
}

fn dit_preset(p: Preset) -> NextDitConfig {
    let base = NextDitConfig::lumina2_2b();
    let sized = |d, layers, refiners, heads, kv, axes: [usize; 3], cap| NextDitConfig {
        hidden_size: d,
        num_layers: layers,
        num_refiner_layers: refiners,
        num_attention_heads: heads,
        num_kv_heads: kv,
        axes_dim_rope: axes.to_vec(),
        cap_feat_dim: cap,
        ..base.clone()
    };
    match p {
        Preset::Tiny => NextDitConfig::tiny(),
        Preset::Mid => sized(768, 4, 2, 12, 4, [24, 20, 20], 768),
        Preset::TwoB => base,
    }
}

fn vae_preset(p: Preset) -> VaeConfig {
    let sized = |channels: [usize; 4], layers| VaeConfig {
        block_out_channels: channels.to_vec(),
        layers_per_block: layers,
        ..VaeConfig::flux()
    };
    match p {
        Preset::Tiny => VaeConfig::tiny(),
        Preset::Mid => sized([32, 64, 128, 128], 2),
        Preset::TwoB => VaeConfig::flux(),
    }
}

fn gemma_preset(p: Preset) -> Gemma2Config {
    let base = Gemma2Config::gemma_2_2b();
    let sized = |vocab, h, i, layers, heads, kv, hd| Gemma2Config {
        vocab_size: vocab,
        hidden_size: h,
        intermediate_size: i,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: kv,
        head_dim: hd,
        query_pre_attn_scalar: hd as f64,
        ..base.clone()
    };
    match p {
        Preset::Tiny => Gemma2Config::tiny(),
        Preset::Mid => sized(32000, 768, 3072, 6, 8, 4, 96),
        Preset::TwoB => base,
    }
}

/// The prompter's sizes; `mid` matches `tools/reference/qwen3_bench.py`.
fn prompter_preset(p: Preset) -> Qwen3Config {
    match p {
        Preset::Tiny => Qwen3Config::tiny(),
        Preset::Mid => Qwen3Config {
            vocab_size: 32000,
            hidden_size: 512,
            intermediate_size: 1536,
            num_hidden_layers: 8,
            num_attention_heads: 8,
            num_key_value_heads: 4,
            head_dim: Some(64),
            ..Qwen3Config::qwen3_0_6b()
        },
        Preset::TwoB => Qwen3Config::qwen3_0_6b(),
    }
}

/// The median as Python's `statistics.median` computes it (the mean of the middle two for an
/// even count), so `tools/bench-compare` divides like by like; `None` when empty.
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![49.0, 55.0]), Some(52.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
