//! safetensors files: every float dtype, shapes and errors, shards, synthetic checkpoints,
//! truncated and garbage files.

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::Tensor;
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use sakiko_weights::{StoredDtype, WeightError, WeightFile, write_synthetic};

fn write(dir: &Path, name: &str, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> PathBuf {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, d, s, b)| ((*k).to_owned(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let path = dir.join(name);
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("sakiko-weights-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn reads_every_float_dtype() {
    let d = dir();
    let f32s: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let f16s: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
        .collect();
    let bf16s: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
        .collect();
    let f64s: Vec<u8> = [1.5f64, -2.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let path = write(
        &d,
        "dtypes.safetensors",
        &[
            ("vae.a", Dtype::F32, vec![2], f32s),
            ("vae.b", Dtype::F16, vec![1, 2], f16s),
            ("vae.c", Dtype::BF16, vec![2, 1], bf16s),
            ("vae.d", Dtype::F64, vec![2], f64s),
            ("vae.e", Dtype::U8, vec![2], vec![1, 2]),
        ],
    );
    let file = WeightFile::open(&path).unwrap();
    assert_eq!(file.detect_prefix("a", &["", "vae."]).unwrap(), "vae.");
    let w = file.scope("vae.");
    for (name, shape) in [
        ("a", vec![2]),
        ("b", vec![1, 2]),
        ("c", vec![2, 1]),
        ("d", vec![2]),
    ] {
        assert_eq!(
            file.read_f32(&w.key(name)).unwrap(),
            (vec![1.5, -2.0], shape)
        );
    }
    let t: Tensor<Flex, 2> = w.tensor("b", [1, 2], &Default::default()).unwrap();
    let stored: Tensor<Flex, 2> = file.tensor("vae.c", &Default::default()).unwrap();
    assert_eq!(stored.dims(), [2, 1]);
    assert!(matches!(
        file.tensor::<Flex, 3>("vae.c", &Default::default()),
        Err(WeightError::Rank { expected: 3, .. })
    ));
    assert_eq!(t.into_data().to_vec::<f32>().unwrap(), [1.5, -2.0]);
    assert!(matches!(
        file.read_f32("vae.e"),
        Err(WeightError::Dtype {
            dtype: StoredDtype::Safetensors(Dtype::U8),
            ..
        })
    ));
    assert_eq!(file.read_bytes("vae.e").unwrap(), [1, 2]);
}

#[test]
fn errors_name_file_key_and_shapes() {
    let d = dir();
    let bytes: Vec<u8> = (0..6).flat_map(|v| (v as f32).to_le_bytes()).collect();
    let path = write(
        &d,
        "shapes.safetensors",
        &[("w", Dtype::F32, vec![2, 3], bytes)],
    );
    let file = WeightFile::open(&path).unwrap();
    let w = file.scope("");
    let err = w
        .tensor::<Flex, 2>("w", [3, 2], &Default::default())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: tensor `w` has shape [2, 3], expected [3, 2]",
            path.display()
        )
    );
    let err = w
        .tensor::<Flex, 1>("x", [1], &Default::default())
        .unwrap_err();
    assert!(matches!(err, WeightError::Missing { ref key, .. } if key == "x"));
    assert!(matches!(
        file.detect_prefix("q", &["", "vae."]),
        Err(WeightError::NoPrefix { .. })
    ));
}

#[test]
fn synthetic_files_are_valid() {
    let path = dir().join("synthetic.safetensors");
    let tensors = vec![("a".to_owned(), vec![3, 5]), ("b.c".to_owned(), vec![7])];
    write_synthetic(&path, &tensors, Dtype::BF16).unwrap();
    let file = WeightFile::open(&path).unwrap();
    assert_eq!(file.dtype("a"), Some(Dtype::BF16.into()));
    let (values, shape) = file.read_f32("b.c").unwrap();
    assert_eq!(shape, [7]);
    assert!(values.iter().all(|v| v.abs() <= 0.02) && values.iter().any(|&v| v != 0.0));
    assert!(matches!(
        write_synthetic(&path, &tensors, Dtype::F32),
        Err(WeightError::Dtype { .. })
    ));
}

#[test]
fn synthetic_checkpoints_equal_written_ones_without_a_file() {
    let path = dir().join("synthetic_same.safetensors");
    let tensors = vec![("a".to_owned(), vec![3, 5]), ("b".to_owned(), vec![9])];
    write_synthetic(&path, &tensors, Dtype::F16).unwrap();
    let written = WeightFile::open(&path).unwrap();
    let memory = WeightFile::synthetic("<bench>", &tensors, Dtype::F16).unwrap();
    for key in ["a", "b"] {
        assert_eq!(memory.shape(key), written.shape(key));
        assert_eq!(
            memory.read_bytes(key).unwrap(),
            written.read_bytes(key).unwrap()
        );
    }
    assert_ne!(
        memory.read_f32("a").unwrap().0[..9],
        memory.read_f32("b").unwrap().0[..]
    );
    assert!(matches!(
        memory.read_bytes("c"),
        Err(WeightError::Missing { .. })
    ));
    assert!(matches!(
        WeightFile::synthetic("<bench>", &tensors, Dtype::F32),
        Err(WeightError::Dtype { .. })
    ));
}

#[test]
fn sharded_checkpoints_read_through_their_index() {
    let d = dir().join("sharded");
    std::fs::create_dir_all(&d).unwrap();
    let a: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let b: Vec<u8> = [3.0f32].iter().flat_map(|v| v.to_le_bytes()).collect();
    write(
        &d,
        "model-00001-of-00002.safetensors",
        &[("x.a", Dtype::F32, vec![2], a)],
    );
    write(
        &d,
        "model-00002-of-00002.safetensors",
        &[("x.b", Dtype::F32, vec![1], b)],
    );
    let index = d.join("model.safetensors.index.json");
    std::fs::write(
        &index,
        r#"{"metadata": {}, "weight_map": {"x.a": "model-00001-of-00002.safetensors", "x.b": "model-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let file = WeightFile::open_index(&index).unwrap();
    assert_eq!(file.read_f32("x.a").unwrap().0, [1.0, 2.0]);
    assert_eq!(file.read_f32("x.b").unwrap().0, [3.0]);
    std::fs::write(
        &index,
        r#"{"weight_map": {"x.c": "model-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    assert!(matches!(
        WeightFile::open_index(&index),
        Err(WeightError::Corrupt { .. })
    ));
}

#[test]
fn truncated_and_garbage_files_are_errors() {
    let d = dir();
    let bytes: Vec<u8> = (0..64).flat_map(|v| (v as f32).to_le_bytes()).collect();
    let path = write(
        &d,
        "full.safetensors",
        &[("w", Dtype::F32, vec![64], bytes)],
    );
    let full = std::fs::read(&path).unwrap();
    let cut = d.join("cut.safetensors");
    std::fs::write(&cut, &full[..full.len() - 10]).unwrap();
    let err = WeightFile::open(&cut).unwrap_err();
    assert!(matches!(err, WeightError::Corrupt { .. }));
    assert!(err.to_string().contains("truncated"), "{err}");
    for garbage in [&b"abc"[..], &[255u8; 64][..], b"\x08\0\0\0\0\0\0\0not json"] {
        let g = d.join("garbage.safetensors");
        std::fs::write(&g, garbage).unwrap();
        assert!(
            matches!(WeightFile::open(&g), Err(WeightError::Corrupt { .. })),
            "{garbage:?}"
        );
    }
    assert!(matches!(
        WeightFile::open(d.join("absent.safetensors")),
        Err(WeightError::Io { .. })
    ));
}

/// In-memory tensors: stored dtypes kept and read like a file's; bad input refused up front.
#[test]
fn in_memory_tensors_read_like_a_file() {
    use burn::tensor::{DType, TensorData};
    let bf16 = TensorData::new(vec![half::bf16::from_f32(-2.5); 6], [2, 3]);
    let f32s = TensorData::new(vec![0.25f32, 4.0], [2]);
    let ids = TensorData::new(vec![1i64, 2], [2]);
    let file = WeightFile::from_tensors(
        "in memory",
        [
            ("a.weight".to_owned(), bf16),
            ("b".to_owned(), f32s),
            ("ids".to_owned(), ids),
        ],
    )
    .unwrap();
    assert_eq!(
        file.dtype("a.weight"),
        Some(StoredDtype::Safetensors(Dtype::BF16))
    );
    assert_eq!(file.stored_bytes("a.weight"), Some(12));
    assert_eq!(
        file.read_f32("a.weight").unwrap(),
        (vec![-2.5; 6], vec![2, 3])
    );
    assert_eq!(file.read_f32("b").unwrap(), (vec![0.25, 4.0], vec![2]));
    assert!(matches!(file.read_f32("ids"), Err(WeightError::Dtype { key, .. }) if key == "ids"));
    assert!(matches!(file.read_f32("c"), Err(WeightError::Missing { key, .. }) if key == "c"));

    let corrupt = |tensors: Vec<(String, TensorData)>| match WeightFile::from_tensors("m", tensors)
    {
        Err(WeightError::Corrupt { reason, .. }) => reason,
        other => panic!("expected a Corrupt error, got {other:?}"),
    };
    let one = || TensorData::new(vec![1.0f32], [1]);
    assert_eq!(
        corrupt(vec![("x".into(), one()), ("x".into(), one())]),
        "`x` is given twice"
    );
    let short = TensorData::from_bytes_vec(vec![0; 6], [2], DType::F32);
    assert_eq!(
        corrupt(vec![("x".into(), short)]),
        "`x` has 6 bytes for shape [2] of F32"
    );
    let flags = TensorData::new(vec![true, false], [2]);
    assert!(corrupt(vec![("mask".into(), flags)]).starts_with("`mask` is a Bool"));
}
