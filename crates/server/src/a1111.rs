//! AUTOMATIC1111's `/sdapi/v1`: what SillyTavern, Open WebUI, Discord bots and stable-ui call.
//!
//! Unknown fields are ignored as A1111 does (clients send its whole settings set: `enable_hr`,
//! `restore_faces`, …); known fields of the wrong type are a 400.

use std::path::{Path, PathBuf};

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use sakiko_pipeline::file_name;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::jobs::b64;
use crate::openai::result;
use crate::{ApiError, ApiJson, AppState, LoraRef, Settings};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sdapi/v1/txt2img", post(txt2img))
        .route("/sdapi/v1/img2img", post(img2img))
        .route("/sdapi/v1/progress", get(progress))
        .route("/sdapi/v1/interrupt", post(interrupt))
        .route("/sdapi/v1/skip", post(interrupt))
        .route("/sdapi/v1/samplers", get(samplers))
        .route("/sdapi/v1/schedulers", get(schedulers))
        .route("/sdapi/v1/sd-models", get(sd_models))
        .route("/sdapi/v1/loras", get(loras))
        .route("/sdapi/v1/options", get(options).post(set_options))
}

#[derive(Debug, Clone, Deserialize)]
struct Processing {
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    negative_prompt: String,
    width: Option<usize>,
    height: Option<usize>,
    steps: Option<usize>,
    cfg_scale: Option<f32>,
    seed: Option<i64>,
    batch_size: Option<usize>,
    n_iter: Option<usize>,
    sampler_name: Option<String>,
    sampler_index: Option<String>,
    scheduler: Option<String>,
    denoising_strength: Option<f64>,
    // img2img.
    #[serde(default)]
    init_images: Vec<String>,
    // Ours.
    shift: Option<f32>,
    #[serde(default)]
    loras: Vec<LoraRef>,
}

impl Processing {
    fn settings(&self, img2img: bool) -> Result<Settings, ApiError> {
        let init_image = if img2img {
            match self.init_images.as_slice() {
                [first, ..] => Some(first.clone()),
                [] => return Err(ApiError::bad_request("img2img needs init_images (base64)")),
            }
        } else {
            None
        };
        Ok(Settings {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            width: self.width,
            height: self.height,
            steps: self.steps,
            cfg_scale: self.cfg_scale,
            sampler: self
                .sampler_name
                .clone()
                .or_else(|| self.sampler_index.clone()),
            scheduler: self.scheduler.clone(),
            shift: self.shift,
            seed: self.seed,
            n: Some(self.batch_size.unwrap_or(1) * self.n_iter.unwrap_or(1)),
            init_image,
            denoising_strength: if img2img {
                Some(self.denoising_strength.unwrap_or(0.75))
            } else {
                None
            },
            loras: self.loras.clone(),
            preview_every: None,
        })
    }
}

async fn txt2img(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    generate(state, body, false).await
}

async fn img2img(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    generate(state, body, true).await
}

async fn generate(state: AppState, body: Value, img2img: bool) -> Result<Json<Value>, ApiError> {
    let processing: Processing = serde_json::from_value(body.clone())
        .map_err(|e| ApiError::bad_request(format!("request body: {e}")))?;
    let request = processing
        .settings(img2img)?
        .to_request(&state.config.context)?;
    let job = state.engine.submit(request)?;
    let done = job.finished().await;
    let images = result(done)?;
    let r = &job.request;
    let info = state.engine.info();
    let n = images.len();
    let infotexts: Vec<&str> = images.iter().map(|i| i.infotext.as_str()).collect();
    let info_json = json!({
        "prompt": r.prompt,
        "all_prompts": vec![&r.prompt; n],
        "negative_prompt": r.negative,
        "all_negative_prompts": vec![&r.negative; n],
        "seed": r.seed,
        // The batch shares one noise draw (as ComfyUI), so every image has the request's seed.
        "all_seeds": vec![r.seed; n],
        "subseed": -1,
        "all_subseeds": vec![-1; n],
        "subseed_strength": 0,
        "width": r.width,
        "height": r.height,
        "sampler_name": r.sampler.name(),
        "scheduler": r.scheduler.name(),
        "cfg_scale": r.guidance.scale(),
        "steps": r.steps,
        "batch_size": n,
        "sd_model_name": info.model_name(),
        "sd_model_hash": Value::Null,
        "denoising_strength": if img2img { json!(r.denoise) } else { Value::Null },
        "extra_generation_params": {"Shift": r.shift},
        "index_of_first_image": 0,
        "infotexts": infotexts,
        "styles": [],
        "job_timestamp": job.created.to_string(),
        "clip_skip": 1,
        "is_using_inpainting_conditioning": false,
        "version": concat!("sakiko-lumina ", env!("CARGO_PKG_VERSION")),
    });
    // A1111 echoes the request; the base64 input images would only double the answer.
    let mut parameters = body;
    if let Some(o) = parameters.as_object_mut() {
        o.remove("init_images");
    }
    Ok(Json(json!({
        "images": images.iter().map(|i| b64(&i.png)).collect::<Vec<_>>(),
        "parameters": parameters,
        "info": info_json.to_string(),
    })))
}

#[derive(Debug, Deserialize)]
struct ProgressQuery {
    #[serde(default)]
    skip_current_image: bool,
}

async fn progress(State(state): State<AppState>, Query(q): Query<ProgressQuery>) -> Json<Value> {
    let engine = &state.engine;
    let current = engine.current();
    let queued = engine.queue_len();
    let (progress, eta, step, steps, image, job, interrupted) = match &current {
        Some(job) => {
            let s = job.state();
            let done = if s.steps > 0 {
                s.step as f64 / s.steps as f64
            } else {
                0.0
            };
            let elapsed = s.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
            let eta = if done > 0.0 {
                elapsed / done - elapsed
            } else {
                0.0
            };
            let image = (!q.skip_current_image)
                .then(|| s.preview.as_ref().map(|(_, png)| b64(png)))
                .flatten();
            (
                done,
                eta,
                s.step,
                s.steps,
                image,
                job.id.clone(),
                s.status == crate::Status::Cancelled,
            )
        }
        None => (0.0, 0.0, 0, 0, None, String::new(), false),
    };
    Json(json!({
        "progress": progress,
        "eta_relative": eta,
        "state": {
            "skipped": false,
            "interrupted": interrupted,
            "stopping_generation": false,
            "job": job,
            "job_count": queued + usize::from(current.is_some()),
            "job_timestamp": "0",
            "job_no": 0,
            "sampling_step": step,
            "sampling_steps": steps,
        },
        "current_image": image,
        "textinfo": current.map(|j| j.state().stage),
    }))
}

async fn interrupt(State(state): State<AppState>) -> Json<Value> {
    if let Some(job) = state.engine.current() {
        job.cancel();
    }
    Json(json!({}))
}

async fn samplers() -> Json<Value> {
    let a1111 = |name: &str| match name {
        "euler_ancestral" => vec!["Euler a"],
        "euler" => vec!["Euler"],
        "dpmpp_2m" => vec!["DPM++ 2M"],
        "heun" => vec!["Heun"],
        _ => vec![],
    };
    Json(Value::Array(
        sakiko_sampling::Sampler::ALL
            .iter()
            .map(|s| json!({"name": s.name(), "aliases": a1111(s.name()), "options": {}}))
            .collect(),
    ))
}

async fn schedulers() -> Json<Value> {
    Json(Value::Array(
        sakiko_sampling::Scheduler::ALL
            .iter()
            .map(|s| {
                json!({"name": s.name(), "label": s.name(), "aliases": [], "default_rho": -1, "need_inner_model": false})
            })
            .collect(),
    ))
}

fn stem(path: &Path) -> String {
    path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

/// The checkpoints a client may switch to: the configured ones, and the one loaded.
fn checkpoints(state: &AppState) -> Vec<PathBuf> {
    let mut list = state.config.checkpoints.clone();
    let current = state.engine.info().dit;
    if !list.contains(&current) {
        list.insert(0, current);
    }
    list
}

async fn sd_models(State(state): State<AppState>) -> Json<Value> {
    Json(Value::Array(
        checkpoints(&state)
            .iter()
            .map(|p| {
                json!({
                    "title": file_name(p),
                    "model_name": stem(p),
                    "hash": Value::Null,
                    "sha256": Value::Null,
                    "filename": file_name(p),
                    "config": Value::Null,
                })
            })
            .collect(),
    ))
}

async fn loras(State(state): State<AppState>) -> Json<Value> {
    let mut files: Vec<PathBuf> = state
        .config
        .context
        .lora_dir
        .as_deref()
        .and_then(|d| std::fs::read_dir(d).ok())
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    Json(Value::Array(
        files
            .iter()
            .map(|p| json!({"name": stem(p), "alias": stem(p), "path": file_name(p), "metadata": {}}))
            .collect(),
    ))
}

async fn options(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "sd_model_checkpoint": state.engine.info().model_name(),
        "samples_format": "png",
        "show_progress_every_n_steps": state.config.context.preview_every,
    }))
}

async fn set_options(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<serde_json::Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let Some(wanted) = body.get("sd_model_checkpoint") else {
        return Ok(Json(json!({})));
    };
    let wanted = wanted
        .as_str()
        .ok_or_else(|| ApiError::bad_request("sd_model_checkpoint must be a string"))?;
    let list = checkpoints(&state);
    // A1111 titles may carry a hash suffix: "name.safetensors [abcd1234]".
    let name = wanted.split(" [").next().unwrap_or(wanted);
    let Some(path) = list
        .iter()
        .find(|p| file_name(p) == name || stem(p) == name)
    else {
        let names: Vec<String> = list.iter().map(|p| file_name(p)).collect();
        return Err(ApiError::bad_request(format!(
            "no checkpoint `{wanted}`; this server has: {}",
            names.join(", ")
        )));
    };
    if *path != state.engine.info().dit {
        state.engine.switch_model(path.clone()).await?;
    }
    Ok(Json(json!({})))
}
