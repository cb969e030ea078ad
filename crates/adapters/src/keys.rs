//! Adapter key suffixes: which tensor of which module a key holds, under every spelling the
//! trainers use.

/// What a tensor is within its module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Role {
    Up,
    Down,
    Mid,
    Alpha,
    DoraScale,
    LokrW1,
    LokrW1A,
    LokrW1B,
    LokrW2,
    LokrW2A,
    LokrW2B,
    LokrT2,
    HadaW1A,
    HadaW1B,
    HadaW2A,
    HadaW2B,
    HadaT1,
    HadaT2,
    Diff,
    DiffB,
}

/// Key suffixes and what they hold: the names kohya sd-scripts, LyCORIS, PEFT / diffusers and
/// ComfyUI's loader accept (ComfyUI's `weight_adapter` modules list the same pairs).
const SUFFIXES: [(&str, Role); 28] = [
    (".lora_up.weight", Role::Up),
    (".lora_down.weight", Role::Down),
    (".lora_mid.weight", Role::Mid),
    ("_lora.up.weight", Role::Up),
    ("_lora.down.weight", Role::Down),
    (".lora_B.weight", Role::Up),
    (".lora_A.weight", Role::Down),
    (".lora.up.weight", Role::Up),
    (".lora.down.weight", Role::Down),
    (".lora_B", Role::Up),
    (".lora_A", Role::Down),
    (".lora_linear_layer.up.weight", Role::Up),
    (".lora_linear_layer.down.weight", Role::Down),
    (".lora_B.default.weight", Role::Up),
    (".lora_A.default.weight", Role::Down),
    (".alpha", Role::Alpha),
    (".dora_scale", Role::DoraScale),
    (".lokr_w1", Role::LokrW1),
    (".lokr_w1_a", Role::LokrW1A),
    (".lokr_w1_b", Role::LokrW1B),
    (".lokr_w2", Role::LokrW2),
    (".lokr_w2_a", Role::LokrW2A),
    (".lokr_w2_b", Role::LokrW2B),
    (".lokr_t2", Role::LokrT2),
    (".hada_w1_a", Role::HadaW1A),
    (".hada_w1_b", Role::HadaW1B),
    (".hada_w2_a", Role::HadaW2A),
    (".hada_w2_b", Role::HadaW2B),
];

/// Suffixes beyond [`SUFFIXES`] (kept apart so the table above stays the common names).
const MORE_SUFFIXES: [(&str, Role); 6] = [
    // PEFT's DoRA magnitude (`[out]`), LyCORIS's `dora_scale` on the output axis by another name.
    (".lora_magnitude_vector", Role::DoraScale),
    (".lora_magnitude_vector.weight", Role::DoraScale),
    (".hada_t1", Role::HadaT1),
    (".hada_t2", Role::HadaT2),
    (".diff", Role::Diff),
    (".diff_b", Role::DiffB),
];

/// The module name and role of `key`, by its longest known suffix.
pub(crate) fn split_key(key: &str) -> Option<(&str, Role)> {
    SUFFIXES
        .iter()
        .chain(&MORE_SUFFIXES)
        .filter(|(suffix, _)| key.len() > suffix.len() && key.ends_with(suffix))
        .max_by_key(|(suffix, _)| suffix.len())
        .map(|(suffix, role)| (&key[..key.len() - suffix.len()], *role))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_at_their_longest_suffix() {
        let cases = [
            (
                "lora_unet_layers_0_attention_qkv.lora_up.weight",
                "lora_unet_layers_0_attention_qkv",
                Role::Up,
            ),
            (
                "transformer.layers.0.attn.to_q.lora_A.weight",
                "transformer.layers.0.attn.to_q",
                Role::Down,
            ),
            (
                "layers.0.attn.to_q.lora_B.default.weight",
                "layers.0.attn.to_q",
                Role::Up,
            ),
            ("a.b_lora.down.weight", "a.b", Role::Down),
            ("x.lora_B", "x", Role::Up),
            (
                "lycoris_layers_1_feed_forward_w1.lokr_w2_b",
                "lycoris_layers_1_feed_forward_w1",
                Role::LokrW2B,
            ),
            (
                "lycoris_layers_1_feed_forward_w1.lokr_w2",
                "lycoris_layers_1_feed_forward_w1",
                Role::LokrW2,
            ),
            ("m.diff_b", "m", Role::DiffB),
            ("m.diff", "m", Role::Diff),
        ];
        for (key, module, role) in cases {
            assert_eq!(split_key(key), Some((module, role)), "{key}");
        }
        assert_eq!(split_key("layers.0.attention.qkv.weight"), None);
        assert_eq!(split_key(".alpha"), None);
    }
}
