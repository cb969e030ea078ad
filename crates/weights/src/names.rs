//! The linear layers of a model and the names each key layout gives them: what adapters patch.
//!
//! A model lists its linears by walking its own module tree ([`linear_modules`]); each model crate
//! then names every linear in the layouts it loads from (original / ComfyUI, diffusers, Hugging
//! Face), so adapter keys written against any of them find their layer.

use std::ops::Range;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Tensor, backend::Backend};

/// One name of a linear layer in some key layout (without `.weight`), and the rows of the
/// layer's `[out, in]` weight it covers: diffusers splits the NextDiT's fused `attention.qkv`
/// into `attn.to_q`, `attn.to_k` and `attn.to_v`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyName {
    /// The name (`layers.0.attn.to_k`).
    pub name: String,
    /// The rows of the fused weight; `None`: all of them.
    pub rows: Option<Range<usize>>,
}

impl KeyName {
    /// A name for the whole layer.
    pub fn whole(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            rows: None,
        }
    }
}

/// A linear layer of a model, as adapters see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearKeys {
    /// The layer's module path in the Burn module (`layers.0.attention.qkv`): its parameters are
    /// `{module}.weight` and `{module}.bias`.
    pub module: String,
    /// `[out, in]`, PyTorch's orientation (Burn stores the weight transposed).
    pub shape: [usize; 2],
    /// Whether the layer has a bias.
    pub bias: bool,
    /// Its names in every key layout the model loads from.
    pub names: Vec<KeyName>,
}

/// Collects 2-D `weight` parameters (with their module paths) without touching their values:
/// parameters of a model built by `Config::init` stay lazy.
struct Linears {
    path: Vec<String>,
    found: Vec<(String, [usize; 2])>,
    biases: Vec<String>,
}

impl<B: Backend> ModuleVisitor<B> for Linears {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_owned());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some((last, parent)) = self.path.split_last() else {
            return;
        };
        let shape = param.lazy_shape().to_vec();
        match (last.as_str(), D) {
            // Burn's linear weight is [in, out].
            ("weight", 2) => self.found.push((parent.join("."), [shape[1], shape[0]])),
            ("bias", 1) => self.biases.push(parent.join(".")),
            _ => {}
        }
    }
}

/// Every linear layer of `module` (2-D `weight` parameters): its module path, `[out, in]` shape
/// and whether it has a bias, in module order.
pub fn linear_modules<B: Backend, M: Module<B>>(module: &M) -> Vec<(String, [usize; 2], bool)> {
    let mut visitor = Linears {
        path: Vec::new(),
        found: Vec::new(),
        biases: Vec::new(),
    };
    module.visit(&mut visitor);
    visitor
        .found
        .into_iter()
        .map(|(path, shape)| {
            let bias = visitor.biases.contains(&path);
            (path, shape, bias)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::nn::{Linear, LinearConfig};

    use super::*;

    #[derive(Module, Debug)]
    struct Block<B: Backend> {
        proj: Linear<B>,
        gate: Option<Linear<B>>,
    }

    #[derive(Module, Debug)]
    struct Net<B: Backend> {
        layers: Vec<Block<B>>,
        head: Linear<B>,
    }

    #[test]
    fn lists_linears_with_paths_shapes_and_biases() {
        let device = Default::default();
        let block = |gate: bool| Block::<Flex> {
            proj: LinearConfig::new(4, 6).init(&device),
            gate: gate.then(|| LinearConfig::new(4, 2).with_bias(false).init(&device)),
        };
        let net = Net {
            layers: vec![block(true), block(false)],
            head: LinearConfig::new(6, 3).init(&device),
        };
        assert_eq!(
            linear_modules::<Flex, _>(&net),
            vec![
                ("layers.0.proj".to_owned(), [6, 4], true),
                ("layers.0.gate".to_owned(), [2, 4], false),
                ("layers.1.proj".to_owned(), [6, 4], true),
                ("head".to_owned(), [3, 6], true),
            ]
        );
    }
}
