//! The encoder, the decoder, and loading them from the files users have.

use std::path::Path;

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, PaddingConfig2d};
use burn::tensor::{FloatDType, Tensor, backend::Backend};
use sakiko_ops::{group_norm, upsample_nearest2x};
use sakiko_weights::{ParamSource, WeightFile, Weights, load_module};

use crate::layers::{AttnBlock, Layout, ResnetBlock, conv, conv3, norm};
use crate::{VaeConfig, VaeError};

/// Prefixes under which checkpoints store the autoencoder.
pub const PREFIXES: [&str; 3] = ["", "vae.", "first_stage_model."];

/// ResNet → attention → ResNet at the lowest resolution.
#[derive(Module, Debug)]
pub struct MidBlock<B: Backend> {
    block_1: ResnetBlock<B>,
    attn_1: Option<AttnBlock<B>>,
    block_2: ResnetBlock<B>,
}

impl<B: Backend> MidBlock<B> {
    fn init(channels: usize, attention: bool, groups: usize, device: &B::Device) -> Self {
        Self {
            block_1: ResnetBlock::init(channels, channels, groups, device),
            attn_1: attention.then(|| AttnBlock::init(channels, groups, device)),
            block_2: ResnetBlock::init(channels, channels, groups, device),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.block_1.forward(x);
        let x = match &self.attn_1 {
            Some(attn) => attn.forward(x),
            None => x,
        };
        self.block_2.forward(x)
    }
}

/// One resolution level: ResNet blocks, then an optional resampling convolution.
#[derive(Module, Debug)]
pub struct Level<B: Backend> {
    block: Vec<ResnetBlock<B>>,
    resample: Option<Conv2d<B>>,
}

/// Image `[B, 3, H, W]` in [−1, 1] → latent mean `[B, 16, H/8, W/8]` (VAE space).
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    conv_in: Conv2d<B>,
    down: Vec<Level<B>>,
    mid: MidBlock<B>,
    norm_out: GroupNorm<B>,
    conv_out: Conv2d<B>,
    latent_channels: usize,
}

impl<B: Backend> Encoder<B> {
    fn init(c: &VaeConfig, device: &B::Device) -> Self {
        let (ch, g) = (&c.block_out_channels, c.norm_num_groups);
        let mut down = Vec::with_capacity(ch.len());
        let mut c_in = ch[0];
        for (i, &c_out) in ch.iter().enumerate() {
            let mut block = Vec::with_capacity(c.layers_per_block);
            for j in 0..c.layers_per_block {
                let from = if j == 0 { c_in } else { c_out };
                block.push(ResnetBlock::init(from, c_out, g, device));
            }
            // The last level keeps its resolution; the others halve it, padded right/bottom only
            // (by `pad_right_bottom`, before the convolution).
            let resample = (i + 1 < ch.len())
                .then(|| conv([c_out, c_out], 3, 2, PaddingConfig2d::Valid, device));
            down.push(Level { block, resample });
            c_in = c_out;
        }
        let top = *ch.last().unwrap_or(&c_in);
        Self {
            conv_in: conv3([c.in_channels, ch[0]], device),
            down,
            mid: MidBlock::init(top, c.mid_block_add_attention, g, device),
            norm_out: norm(g, top, device),
            conv_out: conv3([top, 2 * c.latent_channels], device),
            latent_channels: c.latent_channels,
        }
    }

    /// The mean of the latent distribution (what ComfyUI and diffusers' `mode()` return).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = sakiko_ops::conv2d(&self.conv_in, x);
        for level in &self.down {
            for block in &level.block {
                h = block.forward(h);
            }
            if let Some(conv) = &level.resample {
                h = sakiko_ops::conv2d(conv, pad_right_bottom(h));
            }
        }
        let h = self.mid.forward(h);
        let h = sakiko_ops::conv2d(&self.conv_out, group_norm(&self.norm_out, h, true));
        h.narrow(1, 0, self.latent_channels)
    }
}

/// One zero column on the right and one zero row at the bottom, in `x`'s dtype. (Burn 0.21's
/// asymmetric convolution padding builds its zeros in the default float dtype, so a bf16 input
/// fails on Flex.)
fn pad_right_bottom<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    let zeros = |shape: [usize; 4]| Tensor::zeros(shape, (&x.device(), x.dtype()));
    let x = Tensor::cat(vec![x.clone(), zeros([b, c, h, 1])], 3);
    Tensor::cat(vec![x, zeros([b, c, 1, w + 1])], 2)
}

/// Latent `[B, 16, h, w]` (VAE space) → image `[B, 3, 8h, 8w]`, nominally in [−1, 1].
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    conv_in: Conv2d<B>,
    mid: MidBlock<B>,
    /// Indexed like the BFL keys: `up[0]` is the full-resolution level, run last.
    up: Vec<Level<B>>,
    norm_out: GroupNorm<B>,
    conv_out: Conv2d<B>,
}

impl<B: Backend> Decoder<B> {
    fn init(c: &VaeConfig, device: &B::Device) -> Self {
        let (ch, g) = (&c.block_out_channels, c.norm_num_groups);
        let top = *ch.last().unwrap_or(&ch[0]);
        let mut up = Vec::with_capacity(ch.len());
        for (b, &c_out) in ch.iter().enumerate() {
            // Level b receives the channels of level b + 1 (the top level receives its own).
            let c_in = ch.get(b + 1).copied().unwrap_or(top);
            let mut block = Vec::with_capacity(c.layers_per_block + 1);
            for j in 0..=c.layers_per_block {
                let from = if j == 0 { c_in } else { c_out };
                block.push(ResnetBlock::init(from, c_out, g, device));
            }
            let resample = (b > 0).then(|| conv3([c_out, c_out], device));
            up.push(Level { block, resample });
        }
        Self {
            conv_in: conv3([c.latent_channels, top], device),
            mid: MidBlock::init(top, c.mid_block_add_attention, g, device),
            up,
            norm_out: norm(g, ch[0], device),
            conv_out: conv3([ch[0], c.out_channels], device),
        }
    }

    /// Decodes VAE-space latents.
    pub fn forward(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = self.mid.forward(sakiko_ops::conv2d(&self.conv_in, z));
        for level in self.up.iter().rev() {
            for block in &level.block {
                h = block.forward(h);
            }
            if let Some(conv) = &level.resample {
                h = sakiko_ops::conv2d(conv, upsample_nearest2x(h));
            }
        }
        sakiko_ops::conv2d(&self.conv_out, group_norm(&self.norm_out, h, true))
    }
}

/// The FLUX autoencoder: encoder, decoder and configuration.
///
/// ```no_run
/// use burn::backend::Flex;
/// use sakiko_vae::{LatentFormat, Vae};
///
/// let device = Default::default();
/// let vae = Vae::<Flex>::load("models/vae/ae.safetensors", &device)?;
/// # let latent: burn::tensor::Tensor<Flex, 4> = burn::tensor::Tensor::zeros([1, 16, 128, 128], &device);
/// // `latent` comes from the sampler, in model space.
/// let image = vae.decode(vae.latent_format().to_vae(latent))?;
/// let pngs = sakiko_vae::to_rgb8(image);
/// # Ok::<(), sakiko_vae::VaeError>(())
/// ```
#[derive(Module, Debug)]
pub struct Vae<B: Backend> {
    /// The encoder.
    pub encoder: Encoder<B>,
    /// The decoder.
    pub decoder: Decoder<B>,
    #[module(skip)]
    config: VaeConfig,
    #[module(skip)]
    dtype: FloatDType,
}

impl VaeConfig {
    /// The autoencoder with this configuration and random weights (lazily made: loading
    /// replaces them without ever allocating them). Parameter paths are the BFL key names
    /// (`decoder.up.0.block.1.conv1.weight`), but GroupNorm's `gamma` / `beta` for `weight` /
    /// `bias` and a level's `resample` for its `downsample.conv` / `upsample.conv`.
    ///
    /// ```
    /// use burn::backend::Flex;
    /// use sakiko_vae::{Vae, VaeConfig};
    ///
    /// let config = VaeConfig { block_out_channels: vec![8, 8], layers_per_block: 1,
    ///     norm_num_groups: 4, ..VaeConfig::flux() };
    /// let vae: Vae<Flex> = config.init(&Default::default());
    /// let image = vae.decode(burn::tensor::Tensor::zeros([1, 16, 4, 4], &Default::default()))?;
    /// assert_eq!(image.dims(), [1, 3, 8, 8]);
    /// # Ok::<(), sakiko_vae::VaeError>(())
    /// ```
    pub fn init<B: Backend>(&self, device: &B::Device) -> Vae<B> {
        Vae {
            encoder: Encoder::init(self, device),
            decoder: Decoder::init(self, device),
            config: self.clone(),
            dtype: FloatDType::F32,
        }
    }
}

/// The BFL key of module path `path`.
fn bfl_key(path: &str) -> String {
    // Encoder levels downsample, decoder levels upsample.
    let resample = if path.starts_with("encoder.") {
        ".downsample.conv."
    } else {
        ".upsample.conv."
    };
    path.replace(".gamma", ".weight")
        .replace(".beta", ".bias")
        .replace(".resample.", resample)
}

/// Where `layout` stores the parameter at module path `path` of shape `shape`, in `dtype`
/// (GroupNorm parameters stay f32).
fn source(
    path: &str,
    shape: &[usize],
    layout: Layout,
    levels: usize,
    dtype: FloatDType,
) -> ParamSource {
    let key = layout.key(&bfl_key(path), levels);
    let dtype = if path.ends_with(".gamma") || path.ends_with(".beta") {
        FloatDType::F32
    } else {
        dtype
    };
    let mut source = ParamSource::tensor(key, dtype);
    // The attention projections are linear layers here, 1×1 convolutions in BFL files.
    if shape.len() == 2 {
        source.transpose = true;
        if layout == Layout::Bfl {
            source.stored_shape = Some(vec![shape[1], shape[0], 1, 1]);
        }
    }
    source
}

impl<B: Backend> Vae<B> {
    /// Loads from a path: a safetensors file (ComfyUI `ae.safetensors`, an all-in-one checkpoint
    /// with a `vae.` or `first_stage_model.` prefix, or diffusers-named weights), or a diffusers
    /// folder (`config.json` + `diffusion_pytorch_model.safetensors`, also as its `vae/` subfolder).
    pub fn load(path: impl AsRef<Path>, device: &B::Device) -> Result<Self, VaeError> {
        let path = path.as_ref();
        if let Some((config, weights)) = sakiko_weights::diffusers_component(path, "vae") {
            let config = VaeConfig::from_file(config)?;
            return Self::from_weights(&WeightFile::open_any(weights)?, Some(config), device);
        }
        Self::from_weights(&WeightFile::open_any(path)?, None, device)
    }

    /// Builds from an open weight file; without `config`, the configuration is detected from the
    /// tensor shapes (scale and shift are FLUX's).
    pub fn from_weights(
        file: &WeightFile,
        config: Option<VaeConfig>,
        device: &B::Device,
    ) -> Result<Self, VaeError> {
        Self::from_weights_as(file, config, FloatDType::F32, device)
    }

    /// [`Vae::from_weights`] with weights and activations in `dtype` (`BF16` or `F16`: half the
    /// memory and, on GPUs, the time of f32): GroupNorms compute in f32, and in f16 block outputs
    /// are clamped to its range. Images and latents go in and come out in f32.
    pub fn from_weights_as(
        file: &WeightFile,
        config: Option<VaeConfig>,
        dtype: FloatDType,
        device: &B::Device,
    ) -> Result<Self, VaeError> {
        check_dtype::<B>(dtype, device)?;
        let (prefix, layout) = identify(file)?;
        let weights = file.scope(prefix);
        let config = match config {
            Some(c) => {
                c.validate()?;
                c
            }
            None => detect_config(file, &weights, layout)?,
        };
        config
            .init(device)
            .load_weights(&weights, layout, dtype, device)
    }

    /// Fills this autoencoder's parameters from `weights` (named in `layout`), kept and
    /// computed in `dtype`.
    pub fn load_weights(
        self,
        weights: &Weights<'_>,
        layout: Layout,
        dtype: FloatDType,
        device: &B::Device,
    ) -> Result<Self, VaeError> {
        check_dtype::<B>(dtype, device)?;
        let levels = self.config.block_out_channels.len();
        let model = load_module(self, weights, |path, shape| {
            Ok(source(path, shape, layout, levels, dtype))
        })?;
        Ok(Self { dtype, ..model })
    }

    /// The compute dtype.
    pub fn dtype(&self) -> FloatDType {
        self.dtype
    }

    /// The configuration.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// The latent format (scale and shift).
    pub fn latent_format(&self) -> crate::LatentFormat {
        self.config.latent_format()
    }

    /// Decodes VAE-space latents `[B, C, h, w]` to images `[B, 3, 8h, 8w]` in about [−1, 1].
    pub fn decode(&self, z: Tensor<B, 4>) -> Result<Tensor<B, 4>, VaeError> {
        let [_, c, _, _] = z.dims();
        if c != self.config.latent_channels {
            return Err(VaeError::Channels {
                what: "the latent",
                expected: self.config.latent_channels,
                found: c,
            });
        }
        Ok(self
            .decoder
            .forward(z.cast(self.dtype))
            .cast(FloatDType::F32))
    }

    /// Encodes images `[B, 3, H, W]` in [−1, 1] (sides multiples of 8) to VAE-space latent means.
    pub fn encode(&self, image: Tensor<B, 4>) -> Result<Tensor<B, 4>, VaeError> {
        let [_, c, h, w] = image.dims();
        if c != self.config.in_channels {
            return Err(VaeError::Channels {
                what: "the image",
                expected: self.config.in_channels,
                found: c,
            });
        }
        let f = self.config.downscale();
        if h % f != 0 || w % f != 0 || h == 0 || w == 0 {
            return Err(VaeError::Size {
                width: w,
                height: h,
                reason: format!(
                    "both sides must be positive multiples of {f} (see `image_to_tensor`, which crops)"
                ),
            });
        }
        Ok(self
            .encoder
            .forward(image.cast(self.dtype))
            .cast(FloatDType::F32))
    }
}

/// Refuses compute dtypes other than f32/bf16/f16, and those the device lacks.
fn check_dtype<B: Backend>(dtype: FloatDType, device: &B::Device) -> Result<(), VaeError> {
    sakiko_ops::check_compute_dtype::<B>(dtype, device).map_err(VaeError::Unsupported)
}

/// What a checkpoint holds: prefix, [`Layout`] and configuration.
pub type Detected = sakiko_weights::Detected<Layout, VaeConfig>;

/// Identifies an autoencoder checkpoint (prefix, layout) and detects its configuration, without
/// loading it.
pub fn detect(file: &WeightFile) -> Result<Detected, VaeError> {
    let (prefix, layout) = identify(file)?;
    let config = detect_config(file, &file.scope(prefix), layout)?;
    Ok(Detected {
        prefix,
        layout,
        config,
    })
}

/// Where an autoencoder checkpoint's tensors are in `file` (prefix) and how they are named, from the keys alone;
/// an error when `file` holds none.
pub fn identify(file: &WeightFile) -> Result<(&'static str, Layout), VaeError> {
    let prefix = file.detect_prefix("decoder.conv_in.weight", &PREFIXES)?;
    let layout = if file.contains(&format!(
        "{prefix}decoder.up_blocks.0.resnets.0.conv1.weight"
    )) {
        Layout::Diffusers
    } else {
        Layout::Bfl
    };
    Ok((prefix, layout))
}

/// The configuration from the shapes, with FLUX's 32 normalisation groups; channel counts those
/// groups do not divide mean another model, whose configuration the user has to give.
fn detect_config(
    file: &WeightFile,
    weights: &Weights<'_>,
    layout: Layout,
) -> Result<VaeConfig, VaeError> {
    let levels = (0..)
        .take_while(|i| {
            weights.contains(&layout.key(&format!("encoder.down.{i}.block.0.conv1.weight"), 0))
        })
        .count();
    let config = VaeConfig::detect_with(
        |name| weights.shape(&layout.key(name, levels)),
        |name| weights.contains(&layout.key(&format!("{name}.weight"), levels)),
    )?;
    let groups = config.norm_num_groups;
    if let Some(c) = config
        .block_out_channels
        .iter()
        .find(|&&c| !c.is_multiple_of(groups))
    {
        return Err(VaeError::UndetectableConfig {
            path: file.path().to_path_buf(),
            found: format!(
                "levels of {:?} channels, which FLUX's {groups} normalisation groups do not \
                 divide ({c})",
                config.block_out_channels
            ),
        });
    }
    config.validate()?;
    Ok(config)
}
