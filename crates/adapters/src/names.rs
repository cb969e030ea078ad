//! Which layer an adapter module patches: every name trainers give a layer, built from the
//! model's own key layouts ([`LinearKeys`]) and each trainer's prefix, looked up exactly.
//!
//! Trainers name a layer by a model key layout plus a prefix, sometimes with `.` turned into `_`:
//! kohya sd-scripts `lora_unet_layers_0_attention_qkv` / `lora_te_layers_0_self_attn_q_proj`,
//! LyCORIS `lycoris_layers_0_attn_to_q`, PEFT / diffusers `transformer.layers.0.attn.to_q`,
//! ComfyUI `diffusion_model.layers.0.attention.qkv` and `text_encoders.…`. Building the names from
//! the model (rather than parsing `_`-joined names back) keeps the lookup exact.

use std::collections::HashMap;
use std::ops::Range;

use sakiko_weights::LinearKeys;

/// The model an adapter module patches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    /// The NextDiT denoiser.
    Dit,
    /// The Gemma-2 text encoder.
    TextEncoder,
}

/// Prefixes of dotted names: ComfyUI's, diffusers' and PEFT's wrappers of the model.
const DIT_PREFIXES: [&str; 6] = [
    "",
    "diffusion_model.",
    "model.diffusion_model.",
    "transformer.",
    "base_model.model.",
    "unet.",
];
/// Prefixes of `_`-joined names: kohya, LyCORIS's standalone wrapper, ai-toolkit's kohya export.
const DIT_FLAT_PREFIXES: [&str; 3] = ["lora_unet_", "lycoris_", "lora_transformer_"];
const TE_PREFIXES: [&str; 7] = [
    "",
    "model.",
    "text_encoder.",
    "text_encoder.model.",
    "text_encoders.gemma2_2b.transformer.model.",
    "base_model.model.",
    "base_model.model.model.",
];
const TE_FLAT_PREFIXES: [&str; 5] = [
    "lora_te_",
    "lora_te1_",
    "lora_te_model_",
    "lora_te1_model_",
    "lycoris_",
];

/// A layer an adapter module names: the component, the index of the layer in its
/// [`LinearKeys`] list and the rows of its weight the module covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub component: Component,
    pub layer: usize,
    pub rows: Option<Range<usize>>,
}

/// Every name of every layer of the models.
#[derive(Debug, Default)]
pub(crate) struct Names {
    map: HashMap<String, Target>,
    ambiguous: Vec<String>,
}

impl Names {
    pub fn new(dit: &[LinearKeys], text_encoder: &[LinearKeys]) -> Self {
        let mut names = Self::default();
        for (component, layers, dotted, flat) in [
            (
                Component::Dit,
                dit,
                &DIT_PREFIXES[..],
                &DIT_FLAT_PREFIXES[..],
            ),
            (
                Component::TextEncoder,
                text_encoder,
                &TE_PREFIXES[..],
                &TE_FLAT_PREFIXES[..],
            ),
        ] {
            for (layer, keys) in layers.iter().enumerate() {
                for key in &keys.names {
                    let target = Target {
                        component,
                        layer,
                        rows: key.rows.clone(),
                    };
                    let flat_name = key.name.replace('.', "_");
                    let all = dotted
                        .iter()
                        .map(|p| format!("{p}{}", key.name))
                        .chain(flat.iter().map(|p| format!("{p}{flat_name}")));
                    for alias in all {
                        names.insert(alias, target.clone());
                    }
                }
            }
        }
        for alias in &names.ambiguous {
            names.map.remove(alias);
        }
        names
    }

    fn insert(&mut self, alias: String, target: Target) {
        match self.map.get(&alias) {
            Some(t) if *t != target => self.ambiguous.push(alias),
            Some(_) => {}
            None => {
                self.map.insert(alias, target);
            }
        }
    }

    /// The layer `name` (a module name in an adapter file) patches.
    pub fn find(&self, name: &str) -> Option<&Target> {
        self.map.get(name)
    }

    /// The known name closest to `name`, for an error message.
    pub fn closest(&self, name: &str) -> Option<&str> {
        self.map
            .keys()
            .map(|k| (strsim::normalized_levenshtein(name, k), k))
            .filter(|(score, _)| *score > 0.6)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, k)| k.as_str())
    }
}

#[cfg(test)]
mod tests {
    use sakiko_weights::KeyName;

    use super::*;

    fn layer(module: &str, names: Vec<KeyName>) -> LinearKeys {
        LinearKeys {
            module: module.into(),
            shape: [12, 8],
            bias: false,
            names,
        }
    }

    #[test]
    fn every_trainer_naming_finds_its_layer() {
        let dit = [
            layer(
                "layers.0.attention.qkv",
                vec![
                    KeyName::whole("layers.0.attention.qkv"),
                    KeyName {
                        name: "layers.0.attn.to_q".into(),
                        rows: Some(0..8),
                    },
                    KeyName {
                        name: "layers.0.attn.to_k".into(),
                        rows: Some(8..10),
                    },
                ],
            ),
            layer(
                "layers.0.ada_ln_modulation",
                vec![
                    KeyName::whole("layers.0.adaLN_modulation.1"),
                    KeyName::whole("layers.0.norm1.linear"),
                ],
            ),
        ];
        let te = [layer(
            "layers.0.self_attn.q_proj",
            vec![KeyName::whole("layers.0.self_attn.q_proj")],
        )];
        let names = Names::new(&dit, &te);
        let dit_at = |layer: usize, rows: Option<Range<usize>>| Target {
            component: Component::Dit,
            layer,
            rows,
        };
        for (name, target) in [
            ("lora_unet_layers_0_attention_qkv", dit_at(0, None)),
            ("diffusion_model.layers.0.attention.qkv", dit_at(0, None)),
            ("transformer.layers.0.attn.to_k", dit_at(0, Some(8..10))),
            ("lycoris_layers_0_attn_to_q", dit_at(0, Some(0..8))),
            ("lora_unet_layers_0_adaLN_modulation_1", dit_at(1, None)),
            ("base_model.model.layers.0.norm1.linear", dit_at(1, None)),
        ] {
            assert_eq!(names.find(name), Some(&target), "{name}");
        }
        for name in [
            "lora_te_layers_0_self_attn_q_proj",
            "text_encoders.gemma2_2b.transformer.model.layers.0.self_attn.q_proj",
            "text_encoder.layers.0.self_attn.q_proj",
        ] {
            assert_eq!(
                names.find(name).map(|t| t.component),
                Some(Component::TextEncoder),
                "{name}"
            );
        }
        assert_eq!(names.find("lora_unet_layers_1_attention_qkv"), None);
        assert_eq!(
            names.closest("lora_unet_layers_0_attention_qvk"),
            Some("lora_unet_layers_0_attention_qkv")
        );
    }
}
