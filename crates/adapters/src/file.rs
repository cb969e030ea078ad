//! Reading an adapter file: its keys grouped into modules (one per patched layer), each module's
//! format, rank and alpha. Tensors stay in the file until the adapter is merged.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use sakiko_weights::WeightFile;

use crate::AdapterError;
use crate::keys::{Role, split_key};

/// The kind of update a module makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// Low rank: `ΔW = up · down` (kohya, PEFT, diffusers and LyCORIS LoCon).
    Lora,
    /// LyCORIS Kronecker product: `ΔW = W1 ⊗ W2`, each factor whole or a low-rank product.
    LoKr,
    /// LyCORIS Hadamard product: `ΔW = (w1_a · w1_b) ⊙ (w2_a · w2_b)`.
    LoHa,
    /// A whole difference `ΔW` (`.diff`), or only a bias difference (`.diff_b`).
    Full,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Lora => "LoRA",
            Self::LoKr => "LoKr",
            Self::LoHa => "LoHa",
            Self::Full => "full diff",
        })
    }
}

/// A tensor of the file: its key, its shape without trailing size-1 dimensions beyond the
/// second (a `[r, in, 1, 1]` LoRA of a 1×1 convolution is the `[r, in]` matrix) and its values
/// (read when the adapter is opened, so that merging reads no file and cannot fail half-way).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Part {
    pub key: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// A factor of a LoKr: stored whole, or as a low-rank product `a · b`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Factor {
    Whole(Part),
    Product(Part, Part),
}

impl Factor {
    fn shape(&self) -> [usize; 2] {
        match self {
            Self::Whole(w) => [w.shape[0], w.shape[1]],
            Self::Product(a, b) => [a.shape[0], b.shape[1]],
        }
    }

    fn rank(&self) -> Option<usize> {
        match self {
            Self::Whole(_) => None,
            Self::Product(_, b) => Some(b.shape[0]),
        }
    }
}

/// The tensors of one module's update.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Update {
    Lora {
        up: Part,
        down: Part,
    },
    LoKr {
        w1: Factor,
        w2: Factor,
    },
    LoHa {
        w1: (Part, Part),
        w2: (Part, Part),
    },
    Diff(Part),
    /// Only `diff_b`: the weight is untouched.
    BiasOnly,
}

/// One patched layer's update, as the file stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterModule {
    /// The name in the file (`lora_unet_layers_0_attention_qkv`, `transformer.layers.0.attn.to_q`).
    pub name: String,
    /// The update's kind.
    pub format: Format,
    /// The rank its scale divides alpha by (`None`: not a low-rank update, scale 1).
    pub rank: Option<usize>,
    /// The stored alpha.
    pub alpha: Option<f32>,
    /// The `[out, in]` shape of the update (`None` for a bias-only module).
    pub shape: Option<[usize; 2]>,
    /// Whether the update is weight-decomposed (DoRA: a `dora_scale` magnitude).
    pub dora: bool,
    pub(crate) update: Update,
    pub(crate) dora_scale: Option<Part>,
    pub(crate) diff_b: Option<Part>,
}

impl AdapterModule {
    /// Whether the DoRA magnitude is per output row (`[out]` or `[out, 1]`), not per input
    /// column (`[1, in]`).
    pub(crate) fn dora_per_row(&self) -> bool {
        !matches!(self.dora_scale.as_ref().map(|p| &p.shape[..]), Some([1, n]) if *n != 1)
    }

    /// The multiplier of the update at strength 1: `alpha ÷ rank`, or 1 without alpha or rank
    /// (ComfyUI's and sd-scripts' rule).
    pub fn scale(&self) -> f32 {
        match (self.alpha, self.rank) {
            (Some(alpha), Some(rank)) if rank > 0 => alpha / rank as f32,
            _ => 1.0,
        }
    }
}

/// An adapter file, parsed and read: its modules, with their tensors in memory as f32.
///
/// ```no_run
/// let adapter = sakiko_adapters::Adapter::open("style.safetensors")?;
/// for m in adapter.modules() {
///     println!("{}: {} rank {:?} alpha {:?}", m.name, m.format, m.rank, m.alpha);
/// }
/// # Ok::<(), sakiko_adapters::AdapterError>(())
/// ```
#[derive(Debug)]
pub struct Adapter {
    file: WeightFile,
    modules: Vec<AdapterModule>,
    ignored: Vec<String>,
}

impl Adapter {
    /// Opens a `.safetensors` adapter and groups its keys into modules. Files whose keys are
    /// not an adapter's, and modules with missing or inconsistent tensors, are errors.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, AdapterError> {
        Self::from_file(WeightFile::open(path)?)
    }

    /// Parses an open weight file.
    pub fn from_file(file: WeightFile) -> Result<Self, AdapterError> {
        let mut groups: BTreeMap<&str, BTreeMap<Role, Part>> = BTreeMap::new();
        let mut ignored = Vec::new();
        for key in file.keys() {
            let Some((module, role)) = split_key(key) else {
                ignored.push(key.to_owned());
                continue;
            };
            let shape = file.shape(key).unwrap_or(&[]);
            let trim = shape
                .iter()
                .rposition(|&d| d != 1)
                .map_or(0, |last| last + 1)
                .max(shape.len().min(2));
            let (values, _) = file.read_f32(key)?;
            if let Some(index) = values.iter().position(|v| !v.is_finite()) {
                return Err(AdapterError::Malformed {
                    path: file.path().to_path_buf(),
                    module: module.to_owned(),
                    reason: format!(
                        "{key} holds {} non-finite values (the first, {}, at index {index})",
                        values.iter().filter(|v| !v.is_finite()).count(),
                        values[index]
                    ),
                });
            }
            groups.entry(module).or_default().insert(
                role,
                Part {
                    key: key.to_owned(),
                    shape: shape[..trim].to_vec(),
                    values,
                },
            );
        }
        if groups.is_empty() {
            let mut keys: Vec<&str> = file.keys().collect();
            keys.sort_unstable();
            return Err(AdapterError::NotAnAdapter {
                path: file.path().to_path_buf(),
                example: keys.first().copied().unwrap_or("(no tensors)").to_owned(),
            });
        }
        let peft = PeftAlphas::read(&file)?;
        let mut modules = Vec::with_capacity(groups.len());
        for (name, parts) in groups {
            modules.push(module(&file, name, parts, &peft)?);
        }
        ignored.sort_unstable();
        Ok(Self {
            file,
            modules,
            ignored,
        })
    }

    /// A string in the file's safetensors metadata (kohya's `ss_network_module`, `ss_network_dim`,
    /// `ss_base_model_version`, diffusers' `lora_adapter_metadata`, …).
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.file.metadata(key).and_then(|v| v.as_str())
    }

    /// Keys that belong to no module (norm patches such as `w_norm`, `set_weight`, or unknown
    /// names): they are not applied, and a merge report lists them.
    pub fn ignored_keys(&self) -> &[String] {
        &self.ignored
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The modules, sorted by name.
    pub fn modules(&self) -> &[AdapterModule] {
        &self.modules
    }

    /// The formats its modules use.
    pub fn formats(&self) -> Vec<Format> {
        let mut formats: Vec<Format> = self.modules.iter().map(|m| m.format).collect();
        formats.sort_unstable();
        formats.dedup();
        formats
    }

    /// Whether any module is weight-decomposed (DoRA).
    pub fn has_dora(&self) -> bool {
        self.modules.iter().any(|m| m.dora)
    }

    /// The largest rank of its modules.
    pub fn rank(&self) -> Option<usize> {
        self.modules.iter().filter_map(|m| m.rank).max()
    }

    /// The alpha its modules share (`None` when they differ or none is stored).
    pub fn alpha(&self) -> Option<f32> {
        let first = self.modules.first()?.alpha?;
        self.modules
            .iter()
            .all(|m| m.alpha == Some(first))
            .then_some(first)
    }
}

/// The alphas of PEFT adapters saved by diffusers, which carry no `alpha` tensors: their
/// `LoraConfig` is in the safetensors metadata (`lora_adapter_metadata`), with keys prefixed by
/// component (`transformer.lora_alpha`, `text_encoder.lora_alpha`) or not.
#[derive(Debug, Default)]
struct PeftAlphas {
    /// (key prefix of the modules it applies to, alpha; with rsLoRA, alpha·√r so that
    /// alpha ÷ r is its alpha ÷ √r).
    by_prefix: Vec<(String, f64, bool)>,
}

impl PeftAlphas {
    fn read(file: &WeightFile) -> Result<Self, AdapterError> {
        let Some(text) = file
            .metadata("lora_adapter_metadata")
            .and_then(|v| v.as_str())
        else {
            return Ok(Self::default());
        };
        let malformed = |reason: String| AdapterError::Malformed {
            path: file.path().to_path_buf(),
            module: "lora_adapter_metadata".into(),
            reason,
        };
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|e| malformed(format!("not JSON: {e}")))?;
        let Some(map) = json.as_object() else {
            return Ok(Self::default());
        };
        let mut by_prefix = Vec::new();
        for (key, value) in map {
            let Some(prefix) = key.strip_suffix("lora_alpha") else {
                continue;
            };
            let Some(alpha) = value.as_f64() else {
                continue;
            };
            let setting = |name: &str| map.get(&format!("{prefix}{name}"));
            if setting("alpha_pattern")
                .and_then(|p| p.as_object())
                .is_some_and(|p| !p.is_empty())
            {
                return Err(malformed(format!(
                    "{prefix}alpha_pattern gives some modules their own alpha, which is not supported"
                )));
            }
            let rslora = setting("use_rslora")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            by_prefix.push((prefix.to_owned(), alpha, rslora));
        }
        Ok(Self { by_prefix })
    }

    /// The alpha of module `name` of rank `rank`: the entry whose prefix the name starts with
    /// (the longest), for PEFT-named modules only.
    fn alpha(&self, name: &str, rank: usize) -> Option<f32> {
        let (_, alpha, rslora) = self
            .by_prefix
            .iter()
            .filter(|(prefix, ..)| name.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, ..)| prefix.len())?;
        let alpha = if *rslora {
            alpha * (rank as f64).sqrt()
        } else {
            *alpha
        };
        Some(alpha as f32)
    }
}

/// Builds one module from its parts, checking that they make a consistent update.
fn module(
    file: &WeightFile,
    name: &str,
    mut parts: BTreeMap<Role, Part>,
    peft: &PeftAlphas,
) -> Result<AdapterModule, AdapterError> {
    let malformed = |reason: String| AdapterError::Malformed {
        path: file.path().to_path_buf(),
        module: name.to_owned(),
        reason,
    };
    let alpha = match parts.remove(&Role::Alpha) {
        Some(part) => match part.values[..] {
            [a] => Some(a),
            _ => {
                return Err(malformed(format!(
                    "alpha has {} values, not 1",
                    part.values.len()
                )));
            }
        },
        None => None,
    };
    if let Some(role) = [Role::Mid, Role::LokrT2, Role::HadaT1, Role::HadaT2]
        .into_iter()
        .find(|r| parts.contains_key(r))
    {
        return Err(malformed(format!(
            "{} is a Tucker factor of a convolution update; the layers adapters patch here are linear",
            parts[&role].key
        )));
    }
    let dora_scale = parts.remove(&Role::DoraScale);
    let diff_b = parts.remove(&Role::DiffB);
    let matrix = |part: &Part| -> Result<(), AdapterError> {
        if part.shape.len() == 2 {
            Ok(())
        } else {
            Err(malformed(format!(
                "{} has shape {:?}, not a matrix",
                part.key, part.shape
            )))
        }
    };
    // The format is chosen by the roles present, before anything is taken, so that a partial
    // set (a truncated LoRA next to a diff) is reported, not silently read as another format.
    let present: Vec<String> = parts.values().map(|p| p.key.clone()).collect();
    let has = |roles: &[Role]| roles.iter().any(|r| parts.contains_key(r));
    let missing = |what: &str| {
        malformed(format!(
            "a {what}; its tensors are {}",
            if present.is_empty() {
                "none".into()
            } else {
                present.join(", ")
            }
        ))
    };
    let (format, update, rank) = if has(&[Role::Up, Role::Down]) {
        let (Some(up), Some(down)) = (parts.remove(&Role::Up), parts.remove(&Role::Down)) else {
            return Err(missing("LoRA needs both up and down"));
        };
        matrix(&up)?;
        matrix(&down)?;
        if up.shape[1] != down.shape[0] {
            return Err(malformed(format!(
                "up {:?} and down {:?} do not multiply",
                up.shape, down.shape
            )));
        }
        let rank = down.shape[0];
        (Format::Lora, Update::Lora { up, down }, Some(rank))
    } else if has(&[
        Role::LokrW1,
        Role::LokrW1A,
        Role::LokrW1B,
        Role::LokrW2,
        Role::LokrW2A,
        Role::LokrW2B,
    ]) {
        let mut take = |role: Role| parts.remove(&role);
        let (Some(w1), Some(w2)) = (
            factor(&mut take, Role::LokrW1, Role::LokrW1A, Role::LokrW1B),
            factor(&mut take, Role::LokrW2, Role::LokrW2A, Role::LokrW2B),
        ) else {
            return Err(missing(
                "LoKr needs lokr_w1 (or lokr_w1_a and _b) and lokr_w2 (or lokr_w2_a and _b)",
            ));
        };
        for f in [&w1, &w2] {
            match f {
                Factor::Whole(w) => matrix(w)?,
                Factor::Product(a, b) => {
                    matrix(a)?;
                    matrix(b)?;
                    if a.shape[1] != b.shape[0] {
                        return Err(malformed(format!(
                            "{} {:?} and {} {:?} do not multiply",
                            a.key, a.shape, b.key, b.shape
                        )));
                    }
                }
            }
        }
        // ComfyUI: the rank of w2's decomposition, else w1's; two whole factors have none.
        let rank = w2.rank().or(w1.rank());
        (Format::LoKr, Update::LoKr { w1, w2 }, rank)
    } else if has(&[Role::HadaW1A, Role::HadaW1B, Role::HadaW2A, Role::HadaW2B]) {
        let (Some(w1a), Some(w1b), Some(w2a), Some(w2b)) = (
            parts.remove(&Role::HadaW1A),
            parts.remove(&Role::HadaW1B),
            parts.remove(&Role::HadaW2A),
            parts.remove(&Role::HadaW2B),
        ) else {
            return Err(missing(
                "LoHa needs hada_w1_a, hada_w1_b, hada_w2_a and hada_w2_b",
            ));
        };
        for p in [&w1a, &w1b, &w2a, &w2b] {
            matrix(p)?;
        }
        let shape1 = [w1a.shape[0], w1b.shape[1]];
        if w1a.shape[1] != w1b.shape[0]
            || w2a.shape[1] != w2b.shape[0]
            || shape1 != [w2a.shape[0], w2b.shape[1]]
        {
            return Err(malformed(format!(
                "hada_w1_a {:?} · hada_w1_b {:?} and hada_w2_a {:?} · hada_w2_b {:?} are not two products of one shape",
                w1a.shape, w1b.shape, w2a.shape, w2b.shape
            )));
        }
        let rank = w1b.shape[0];
        let update = Update::LoHa {
            w1: (w1a, w1b),
            w2: (w2a, w2b),
        };
        (Format::LoHa, update, Some(rank))
    } else if let Some(diff) = parts.remove(&Role::Diff) {
        matrix(&diff)?;
        (Format::Full, Update::Diff(diff), None)
    } else if diff_b.is_some() && parts.is_empty() {
        (Format::Full, Update::BiasOnly, None)
    } else {
        return Err(missing(
            "module needs a LoRA (up and down), LoKr, LoHa or diff update",
        ));
    };
    if let Some(extra) = parts.values().next() {
        return Err(malformed(format!(
            "{} does not belong with a {format} update",
            extra.key
        )));
    }
    let shape = match &update {
        Update::Lora { up, down } => Some([up.shape[0], down.shape[1]]),
        Update::LoKr { w1, w2 } => {
            let ([a, c], [b, d]) = (w1.shape(), w2.shape());
            Some([a * b, c * d])
        }
        Update::LoHa { w1, .. } => Some([w1.0.shape[0], w1.1.shape[1]]),
        Update::Diff(d) => Some([d.shape[0], d.shape[1]]),
        Update::BiasOnly => None,
    };
    if let Some(scale) = &dora_scale {
        let out = shape.map(|s| s[0]);
        let ok = match scale.shape[..] {
            [n] | [n, 1] => Some(n) == out,
            [1, n] => Some(n) == shape.map(|s| s[1]),
            _ => false,
        };
        if !ok {
            return Err(malformed(format!(
                "dora_scale {:?} fits neither axis of the {shape:?} update",
                scale.shape
            )));
        }
    }
    Ok(AdapterModule {
        name: name.to_owned(),
        format,
        rank,
        // PEFT names (`lora_A` / `lora_B`) take their alpha from the metadata.
        alpha: match &update {
            Update::Lora { up, .. } if alpha.is_none() && up.key.contains("lora_B") => {
                peft.alpha(name, rank.unwrap_or(1))
            }
            _ => alpha,
        },
        shape,
        dora: dora_scale.is_some(),
        update,
        dora_scale,
        diff_b,
    })
}

/// A LoKr factor: whole, or the product of its `_a` and `_b` parts.
fn factor(
    take: &mut impl FnMut(Role) -> Option<Part>,
    whole: Role,
    a: Role,
    b: Role,
) -> Option<Factor> {
    if let Some(w) = take(whole) {
        return Some(Factor::Whole(w));
    }
    match (take(a), take(b)) {
        (Some(a), Some(b)) => Some(Factor::Product(a, b)),
        _ => None,
    }
}
