//! GGUF and fp8 files against the tools that wrote them (`tools/reference/lowp.py`: llama.cpp's
//! `gguf` package and PyTorch): every value bit-exact; and every malformed GGUF header a clear
//! error.

use std::path::{Path, PathBuf};

use safetensors::Dtype;
use safetensors::tensor::TensorView;
use sakiko_weights::{Format, GgmlType, MetaValue, StoredDtype, WeightError, WeightFile};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn expected(key: &str) -> (Vec<f32>, Vec<usize>) {
    WeightFile::open(fixture("lowp_expected.safetensors"))
        .and_then(|f| f.read_f32(key))
        .unwrap_or_else(|e| panic!("{key}: {e}"))
}

/// Bit-for-bit equality (NaN codes included).
fn assert_bits(key: &str, ours: &[f32], want: &[f32]) {
    assert_eq!(ours.len(), want.len(), "{key}");
    for (i, (a, b)) in ours.iter().zip(want).enumerate() {
        assert!(
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            "{key}[{i}]: {a} vs {b}"
        );
    }
}

#[test]
fn every_gguf_type_dequantises_like_the_gguf_package() {
    let file = WeightFile::open_any(fixture("types.gguf")).expect("types.gguf");
    assert_eq!(file.format(), Format::Gguf);
    assert_eq!(
        file.metadata("general.architecture")
            .and_then(MetaValue::as_str),
        Some("lumina2")
    );
    let mut seen = Vec::new();
    for key in file
        .keys()
        .filter(|k| k.starts_with("q.") || k.starts_with("r."))
    {
        let (ours, shape) = file.read_f32(key).expect("read");
        let (want, want_shape) = expected(key);
        assert_eq!(shape, want_shape, "{key}");
        assert_bits(key, &ours, &want);
        let Some(StoredDtype::Gguf(ty)) = file.dtype(key) else {
            panic!("{key}: not a GGML type");
        };
        assert_eq!(key[2..], ty.to_string());
        seen.push(ty);
    }
    seen.sort();
    seen.dedup();
    use GgmlType::*;
    assert_eq!(
        seen,
        [
            F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, BF16
        ]
    );
}

#[test]
fn gguf_shapes_are_pytorch_order_and_alignment_is_honoured() {
    let file = WeightFile::open_gguf(fixture("types.gguf")).expect("types.gguf");
    for key in ["rank1", "rank3", "conv"] {
        let (ours, shape) = file.read_f32(key).expect("read");
        let (want, want_shape) = expected(key);
        assert_eq!(shape, want_shape, "{key}");
        assert_bits(key, &ours, &want);
    }
    assert_eq!(file.shape("rank3"), Some(&[2, 3, 4][..]));
    // ComfyUI-GGUF's recorded shape wins over the stored 2-D one.
    assert_eq!(file.shape("conv"), Some(&[4, 8, 1, 1][..]));
    let aligned = WeightFile::open_any(fixture("aligned64.gguf")).expect("aligned64.gguf");
    assert_eq!(
        aligned.metadata("general.alignment"),
        Some(&MetaValue::Uint(64))
    );
    for key in ["a64", "b64"] {
        assert_bits(
            key,
            &aligned.read_f32(key).expect("read").0,
            &expected(key).0,
        );
    }
}

#[test]
fn fp8_codes_and_scaled_layers_match_pytorch() {
    let file = WeightFile::open(fixture("fp8.safetensors")).expect("fp8.safetensors");
    for key in ["codes.e4m3", "codes.e5m2", "legacy.weight", "newer.weight"] {
        let (ours, shape) = file.read_f32(key).expect("read");
        let (want, want_shape) = expected(key);
        assert_eq!(shape, want_shape, "{key}");
        assert_bits(key, &ours, &want);
    }
    assert_eq!(file.fp8_scale("codes.e4m3").expect("plain"), None);
    assert!(file.fp8_scale("legacy.weight").expect("legacy").is_some());
}

fn write_safetensors(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, d, s, b)| {
            (
                (*k).to_owned(),
                TensorView::new(*d, s.clone(), b).expect("view"),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).expect("write");
}

#[test]
fn a_scaled_fp8_layer_without_its_scale_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weight = (
        "layer.weight",
        Dtype::F8_E4M3,
        vec![2, 2],
        vec![0x38, 0x40, 0xB8, 0],
    );
    let marker = ("scaled_fp8", Dtype::F8_E4M3, vec![2], vec![0, 0]);
    // Negative control: a plain fp8 cast has no scales and reads as stored (0x38 is 1.0).
    let plain = dir.path().join("plain.safetensors");
    write_safetensors(&plain, std::slice::from_ref(&weight));
    let values = WeightFile::open(&plain).and_then(|f| f.read_f32("layer.weight"));
    assert_eq!(values.expect("plain fp8").0, [1.0, 2.0, -1.0, 0.0]);

    let scaled = dir.path().join("scaled.safetensors");
    write_safetensors(&scaled, &[weight.clone(), marker]);
    let err = WeightFile::open(&scaled)
        .and_then(|f| f.read_f32("layer.weight"))
        .expect_err("missing scale");
    assert!(
        matches!(&err, WeightError::Scale { key, .. } if key == "layer.weight"),
        "{err}"
    );
    assert!(err.to_string().contains("layer.scale_weight"), "{err}");

    // Block-wise scales (Kohya's layout) are refused rather than misread.
    let blockwise = dir.path().join("blockwise.safetensors");
    let scale: Vec<u8> = [0.5f32, 0.25]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    write_safetensors(
        &blockwise,
        &[
            weight,
            ("layer.scale_weight", Dtype::F32, vec![2, 1], scale),
        ],
    );
    let err = WeightFile::open(&blockwise)
        .and_then(|f| f.read_f32("layer.weight"))
        .expect_err("block-wise scale");
    assert!(err.to_string().contains("[2, 1]"), "{err}");
}

/// A GGUF file written field by field, to break one field at a time.
struct Gguf {
    magic: u32,
    version: u32,
    tensor_count: Option<u64>,
    kv: Vec<u8>,
    kv_count: u64,
    tensors: Vec<(String, Vec<u64>, u32, u64)>,
    data: Vec<u8>,
}

impl Gguf {
    /// Two F32 tensors `a` [4] and `b` [2, 4] at offsets 0 and 32.
    fn valid() -> Self {
        Self {
            magic: 0x4655_4747,
            version: 3,
            tensor_count: None,
            kv: Vec::new(),
            kv_count: 0,
            tensors: vec![("a".into(), vec![4], 0, 0), ("b".into(), vec![4, 2], 0, 32)],
            data: (0..16).flat_map(|v| (v as f32).to_le_bytes()).collect(),
        }
    }

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    fn kv_u32(mut self, key: &str, value: u32) -> Self {
        Self::string(&mut self.kv, key);
        self.kv.extend(4u32.to_le_bytes());
        self.kv.extend(value.to_le_bytes());
        self.kv_count += 1;
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(self.magic.to_le_bytes());
        out.extend(self.version.to_le_bytes());
        out.extend(
            self.tensor_count
                .unwrap_or(self.tensors.len() as u64)
                .to_le_bytes(),
        );
        out.extend(self.kv_count.to_le_bytes());
        out.extend(&self.kv);
        for (name, dims, ty, offset) in &self.tensors {
            Self::string(&mut out, name);
            out.extend((dims.len() as u32).to_le_bytes());
            dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
            out.extend(ty.to_le_bytes());
            out.extend(offset.to_le_bytes());
        }
        out.resize(out.len().next_multiple_of(32), 0);
        out.extend(&self.data);
        out
    }
}

fn open_bytes(dir: &Path, name: &str, bytes: &[u8]) -> Result<WeightFile, WeightError> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write");
    WeightFile::open_gguf(path)
}

fn reason(result: Result<WeightFile, WeightError>) -> String {
    match result {
        Err(e @ WeightError::Corrupt { format: "GGUF", .. }) => e.to_string(),
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("accepted"),
    }
}

#[test]
fn malformed_gguf_headers_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // Negative control: the unbroken file opens and reads.
    let file = open_bytes(d, "valid.gguf", &Gguf::valid().bytes()).expect("valid");
    assert_eq!(
        file.read_f32("b").expect("b"),
        ((8..16).map(|v| v as f32).collect(), vec![2, 4])
    );

    let cases: Vec<(&str, Gguf, &str)> = vec![
        (
            "magic",
            Gguf {
                magic: 0x4655_4748,
                ..Gguf::valid()
            },
            "wrong magic",
        ),
        (
            "version",
            Gguf {
                version: 1,
                ..Gguf::valid()
            },
            "version 1",
        ),
        (
            "endian",
            Gguf {
                version: 3u32.swap_bytes(),
                ..Gguf::valid()
            },
            "big-endian",
        ),
        (
            "count",
            Gguf {
                tensor_count: Some(u64::MAX),
                ..Gguf::valid()
            },
            "tensor count",
        ),
        (
            "kv",
            Gguf {
                kv_count: 1 << 40,
                ..Gguf::valid()
            },
            "metadata count",
        ),
        (
            "type",
            Gguf {
                tensors: vec![("a".into(), vec![4], 99, 0)],
                ..Gguf::valid()
            },
            "unknown GGML type id 99",
        ),
        (
            "aligned",
            Gguf {
                tensors: vec![("a".into(), vec![4], 0, 4)],
                ..Gguf::valid()
            },
            "not a multiple of the alignment",
        ),
        (
            "overlap",
            Gguf {
                tensors: vec![("a".into(), vec![16], 0, 0), ("b".into(), vec![4], 0, 32)],
                ..Gguf::valid()
            },
            "overlap",
        ),
        (
            "past",
            Gguf {
                tensors: vec![("a".into(), vec![4], 0, 64)],
                ..Gguf::valid()
            },
            "ends past",
        ),
        (
            "rank",
            Gguf {
                tensors: vec![("a".into(), vec![1; 5], 0, 0)],
                ..Gguf::valid()
            },
            "5 dimensions",
        ),
        (
            "blocks",
            Gguf {
                tensors: vec![("a".into(), vec![16], 8, 0)],
                ..Gguf::valid()
            },
            "not a whole number of blocks",
        ),
        (
            "huge",
            Gguf {
                tensors: vec![("a".into(), vec![u64::MAX, 4], 0, 0)],
                ..Gguf::valid()
            },
            "more elements than can be addressed",
        ),
        (
            "alignment",
            Gguf::valid().kv_u32("general.alignment", 24),
            "not a power of two",
        ),
        (
            "twice",
            Gguf {
                tensors: vec![("a".into(), vec![4], 0, 0), ("a".into(), vec![4], 0, 32)],
                ..Gguf::valid()
            },
            "listed twice",
        ),
        // Found by fuzzing: a zero dimension hid the overflow of the others until the shape was
        // reversed.
        (
            "zero",
            Gguf {
                tensors: vec![("a".into(), vec![4, 0, 1 << 40, 1 << 40], 0, 0)],
                ..Gguf::valid()
            },
            "more elements than can be addressed",
        ),
    ];
    for (name, gguf, wanted) in cases {
        let message = reason(open_bytes(d, &format!("{name}.gguf"), &gguf.bytes()));
        assert!(message.contains(wanted), "{name}: {message}");
        assert!(
            message.contains(&format!("{name}.gguf")),
            "{name}: {message}"
        );
    }

    // An absurd string length in metadata, and an absurd array length.
    let mut kv = Vec::new();
    kv.extend(u64::MAX.to_le_bytes());
    let gguf = Gguf {
        kv,
        kv_count: 1,
        ..Gguf::valid()
    };
    assert!(reason(open_bytes(d, "string.gguf", &gguf.bytes())).contains("cannot fit"));
    let mut kv = Vec::new();
    Gguf::string(&mut kv, "tokenizer.ggml.tokens");
    kv.extend(9u32.to_le_bytes());
    kv.extend(8u32.to_le_bytes());
    kv.extend((1u64 << 60).to_le_bytes());
    let gguf = Gguf {
        kv,
        kv_count: 1,
        ..Gguf::valid()
    };
    assert!(reason(open_bytes(d, "array.gguf", &gguf.bytes())).contains("cannot fit"));

    // Every truncation of a valid file is an error, none a panic.
    let full = std::fs::read(fixture("types.gguf")).expect("types.gguf");
    for cut in (0..full.len()).step_by(97) {
        let message = reason(open_bytes(d, "cut.gguf", &full[..cut]));
        assert!(message.contains("cut.gguf"), "{message}");
    }
}

#[test]
fn a_known_type_that_cannot_be_read_names_the_tensor_and_the_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    // IQ2_XXS (id 16): 256 elements in 66 bytes.
    let gguf = Gguf {
        tensors: vec![("iq".into(), vec![256], 16, 0)],
        data: vec![0; 66],
        ..Gguf::valid()
    };
    let file = open_bytes(dir.path(), "iq.gguf", &gguf.bytes()).expect("opens");
    let err = file.read_f32("iq").expect_err("IQ2_XXS");
    assert!(
        matches!(err, WeightError::Dtype { ref key, dtype: StoredDtype::Gguf(GgmlType::IQ2_XXS), .. } if key == "iq"),
        "{err}"
    );
    assert!(err.to_string().contains("Q8_0"), "{err}");
}
