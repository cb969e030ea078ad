//! # sakiko-adapters
//!
//! Adapters for the Lumina 2 NextDiT and its Gemma-2 text encoder, merged into the models'
//! weights: LoRA (kohya `lora_up` / `lora_down` + `alpha`, PEFT / diffusers `lora_A` / `lora_B`
//! and their other spellings), LyCORIS LoKr and LoHa, DoRA (`dora_scale`, PEFT's
//! `lora_magnitude_vector`) and full diffs (`diff`, `diff_b`), under the names kohya sd-scripts,
//! LyCORIS, PEFT / diffusers, ai-toolkit, SimpleTuner and ComfyUI give the layers. Adapters on
//! diffusers' separate `to_q` / `to_k` / `to_v` patch their rows of the fused `attention.qkv`,
//! split by the model's grouped-query head counts.
//!
//! Updates are computed in f32 on the model's device and cast into the weight's dtype, as
//! ComfyUI's `calculate_weight` does; merging keeps the original weights so that they can be
//! restored without reading the base checkpoint again.
//!
//! ```
//! use std::sync::Arc;
//! use burn::backend::Flex;
//! use sakiko_adapters::{Adapter, Plan, Strength};
//! use sakiko_nextdit::NextDitConfig;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("lora.safetensors");
//! # let (up, down) = (vec![0.5f32; 24 * 2], vec![0.25f32; 2 * 24]);
//! # let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
//! # let (up, down) = (bytes(&up), bytes(&down));
//! # safetensors::serialize_to_file([
//! #     ("lora_unet_layers_0_attention_out.lora_up.weight",
//! #      safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![24, 2], &up)?),
//! #     ("lora_unet_layers_0_attention_out.lora_down.weight",
//! #      safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 24], &down)?),
//! # ], None, &path)?;
//! let config = NextDitConfig { hidden_size: 24, num_layers: 1, num_refiner_layers: 1,
//!     num_attention_heads: 2, num_kv_heads: 1, multiple_of: 16, axes_dim_rope: vec![4, 4, 4],
//!     cap_feat_dim: 16, ..NextDitConfig::lumina2_2b() };
//! let dit = config.init::<Flex>(&Default::default());
//!
//! let adapter = Arc::new(Adapter::open(&path)?);
//! let plan = Plan::new(vec![(adapter, Strength::both(0.8))], &dit.linear_keys(), &[])?;
//! assert_eq!(plan.reports()[0].dit_layers, 1);
//! let merged = plan.dit().merge(dit);
//! let dit = merged.backup.restore(merged.model); // the base weights, without reading a file
//! # let _ = dit;
//! # Ok(())
//! # }
//! ```

mod error;
mod file;
mod hash;
mod keys;
mod merge;
mod names;
mod tags;
mod update;

pub use error::AdapterError;
pub use file::{Adapter, AdapterModule, Format};
pub use hash::short_hash;
pub use merge::{AdapterReport, Backup, Merged, Patches, Plan, Strength, Targets};
pub use names::Component;
pub use tags::{PromptAdapter, extract_tags, find_adapter};
