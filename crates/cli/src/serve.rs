//! `sakiko serve`: the models resident behind the OpenAI Images, AUTOMATIC1111 and native APIs,
//! with a web page (crate `sakiko-server`).

use std::net::SocketAddr;
use std::path::PathBuf;

use burn::tensor::backend::{Backend, Device, DeviceId};
use clap::Args;
use sakiko_pipeline::{PipelineOptions, Tiling};
use sakiko_server::{Context, Engine, EngineOptions, Limits, ServerConfig};

use crate::CliError;
use crate::backend::{BackendChoice, Job};
use crate::files::{DtypeArgs, ModelArgs};

/// `sakiko serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    models: ModelArgs,
    #[command(flatten)]
    dtypes: DtypeArgs,
    /// The address to listen on (loopback only by default; 0.0.0.0 opens it to the network:
    /// set an API key then).
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// The port (0: any free port; the one chosen is printed).
    #[arg(long, default_value_t = 7860)]
    port: u16,
    /// Require this key on every API route (Bearer, X-Api-Key, or Basic with the key as
    /// password); `/health` and the page stay open.
    #[arg(long, env = "SAKIKO_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Allow browsers on this origin to call the API (CORS); repeatable. Off by default.
    #[arg(long = "cors", value_name = "ORIGIN")]
    cors: Vec<String>,
    /// The largest request body, in MiB (img2img sends base64 images).
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    body_limit: usize,
    /// Jobs that may wait; one more is answered 429.
    #[arg(long, default_value_t = 16)]
    queue: usize,
    /// The largest width or height a request may ask for.
    #[arg(long, default_value_t = 2048)]
    max_side: usize,
    /// The most sampling steps a request may ask for.
    #[arg(long, default_value_t = 100)]
    max_steps: usize,
    /// The most images per request.
    #[arg(long, default_value_t = 4)]
    max_images: usize,
    /// A preview every this many steps when a request does not say (0: none).
    #[arg(long, value_name = "N", default_value_t = 5)]
    preview_every: usize,
    /// Where adapters named by requests are found (default: the models folder's loras/).
    #[arg(long, value_name = "D")]
    lora_dir: Option<PathBuf>,
    /// Also write every image here.
    #[arg(long, value_name = "D")]
    output_dir: Option<PathBuf>,
    /// Load every model at start (otherwise at the first request).
    #[arg(long)]
    preload: bool,
    /// Skip the load-time check of every weight for NaN, infinity and f16 overflow.
    #[arg(long)]
    no_weight_check: bool,
    /// Decode the latent in tiles of this many latent pixels (less memory).
    #[arg(long, value_name = "N")]
    vae_tile: Option<usize>,
    /// One worker, with its own copy of the models, on each of these GPUs (CUDA's, or wgpu's
    /// discrete GPUs, by index: `--devices 0,1`); jobs go to whichever is free. Default: the
    /// backend's default device. On Flex every entry is another worker on the same CPU cores.
    #[arg(long, value_name = "N,…", value_delimiter = ',')]
    devices: Vec<u16>,
    /// The backend to run on.
    #[arg(long, value_enum, default_value_t = BackendChoice::Flex)]
    backend: BackendChoice,
}

impl ServeArgs {
    pub fn run(self) -> Result<(), CliError> {
        let backend = self.backend;
        backend.run(self)
    }

    /// The denoiser files of the models folder, which A1111 clients may switch between.
    fn checkpoints(&self) -> Vec<PathBuf> {
        let Some(dir) = &self.models.models_dir else {
            return Vec::new();
        };
        ["diffusion_models", "unet"]
            .iter()
            .filter_map(|sub| sakiko_pipeline::weight_files(&dir.join(sub)))
            .flatten()
            .collect()
    }
}

impl Job for ServeArgs {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> Result<(), CliError> {
        for dir in self.output_dir.iter().chain(&self.lora_dir) {
            if !dir.is_dir() {
                return Err(CliError::Usage(format!(
                    "{} is not a folder",
                    dir.display()
                )));
            }
        }
        let devices: Vec<B::Device> = if self.devices.is_empty() {
            vec![device]
        } else {
            // Type 0 is a CUDA GPU, and a discrete GPU on wgpu; Flex has one device.
            self.devices
                .iter()
                .map(|&i| B::Device::from_id(DeviceId::new(0, i)))
                .collect()
        };
        for device in &devices {
            crate::backend::probe::<B>(device)?;
        }
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info,tower_http=info".into()),
            )
            .with_writer(std::io::stderr)
            .try_init();
        let files = self.models.files()?;
        let options = EngineOptions {
            pipeline: PipelineOptions {
                vae_tiling: self.vae_tile.map(|tile| Tiling {
                    tile,
                    overlap: (tile / 8).max(1),
                }),
                dit_dtype: self.dtypes.dit(),
                text_encoder_dtype: self.dtypes.text_encoder(),
                vae_dtype: self.dtypes.vae(),
                check_weights: !self.no_weight_check,
                keep_quantized: self.dtypes.keep_quantized(),
                ..PipelineOptions::default()
            },
            queue: self.queue,
            output_dir: self.output_dir.clone(),
            preload: self.preload,
        };
        eprintln!(
            "{}",
            if self.preload {
                "loading the models"
            } else {
                "reading the model headers"
            }
        );
        let engine = Engine::start::<B>(files, devices, options)?;
        let config = ServerConfig {
            api_key: self.api_key.clone().filter(|k| !k.is_empty()),
            cors_origins: self.cors.clone(),
            body_limit: self.body_limit << 20,
            context: Context {
                limits: Limits {
                    max_side: self.max_side,
                    max_pixels: self.max_side * self.max_side,
                    max_steps: self.max_steps,
                    max_images: self.max_images,
                },
                lora_dir: self
                    .lora_dir
                    .clone()
                    .or_else(|| self.models.models_dir.as_ref().map(|d| d.join("loras")))
                    .filter(|d| d.is_dir()),
                preview_every: self.preview_every,
            },
            checkpoints: self.checkpoints(),
        };
        let runtime = tokio::runtime::Runtime::new()
            .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))?;
        let addr = SocketAddr::new(self.host, self.port);
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| CliError::Usage(format!("cannot listen on {addr}: {e}")))?;
            let local = listener
                .local_addr()
                .map_err(|e| CliError::Failed(e.to_string()))?;
            let info = engine.info();
            eprintln!(
                "serving {} on {} [{}] ({}) at http://{local}/{}",
                info.model_name(),
                info.backend,
                info.devices.join(", "),
                info.dtype,
                if config.api_key.is_some() {
                    " (API key required)"
                } else {
                    ""
                }
            );
            sakiko_server::serve(listener, engine, config, sakiko_server::shutdown_signal())
                .await
                .map_err(|e| CliError::Failed(format!("server: {e}")))
        })?;
        eprintln!("stopped");
        Ok(())
    }
}
