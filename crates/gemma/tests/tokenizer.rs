//! The tokenizer built from a SentencePiece proto gives SentencePiece's ids
//! (`tools/reference/tokenizer.py`: a tiny BPE model with byte fallback and Gemma's settings).

use sakiko_gemma::{BOS, GemmaError, GemmaTokenizer};
use sakiko_weights::WeightFile;

fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/tokenizer/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn cases() -> Vec<(String, Vec<u32>)> {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("cases.json")).unwrap()).unwrap();
    json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ids = c["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            (c["text"].as_str().unwrap().to_owned(), ids)
        })
        .collect()
}

fn check(tokenizer: &GemmaTokenizer, source: &str) {
    let cases = cases();
    assert!(cases.len() >= 200);
    let mut wrong = Vec::new();
    for (text, want) in &cases {
        let got = tokenizer.encode_raw(text).unwrap();
        if &got != want {
            wrong.push(format!("{text:?}: got {got:?}, SentencePiece {want:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{source}: {} of {} differ:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

#[test]
fn ids_equal_sentencepiece_from_the_proto_file() {
    let bytes = std::fs::read(fixture("tiny_bpe.model")).unwrap();
    check(
        &GemmaTokenizer::from_sentencepiece(&bytes).unwrap(),
        "proto file",
    );
}

#[test]
fn ids_equal_sentencepiece_from_the_embedded_tensor() {
    let file = WeightFile::open(fixture("embedded.safetensors")).unwrap();
    check(
        &GemmaTokenizer::from_weights(&file).unwrap(),
        "spiece_model tensor",
    );
}

#[test]
fn encode_prepends_bos_and_never_truncates() {
    let bytes = std::fs::read(fixture("tiny_bpe.model")).unwrap();
    let t = GemmaTokenizer::from_sentencepiece(&bytes).unwrap();
    let long = "blue hair, ".repeat(200);
    let ids = t.encode(&long).unwrap();
    assert_eq!(ids[0], BOS);
    assert_eq!(ids.len(), 1 + t.encode_raw(&long).unwrap().len());
    assert!(ids.len() > 256);
    assert_eq!(t.encode("").unwrap(), [BOS]);
}

#[test]
fn corrupt_protos_are_errors() {
    let bytes = std::fs::read(fixture("tiny_bpe.model")).unwrap();
    for bad in [&bytes[..bytes.len() / 2], &[0xff, 0xff][..], &[][..]] {
        assert!(matches!(
            GemmaTokenizer::from_sentencepiece(bad),
            Err(GemmaError::Tokenizer(_))
        ));
    }
}

#[test]
fn tokenizer_json_round_trip() {
    let bytes = std::fs::read(fixture("tiny_bpe.model")).unwrap();
    let t = GemmaTokenizer::from_sentencepiece(&bytes).unwrap();
    let path = std::env::temp_dir().join(format!("sakiko-tokenizer-{}.json", std::process::id()));
    t.inner().save(&path, false).unwrap();
    let reloaded = GemmaTokenizer::from_tokenizer_json(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    check(&reloaded, "tokenizer.json");
    assert!(matches!(
        GemmaTokenizer::from_tokenizer_json("/nonexistent/tokenizer.json"),
        Err(GemmaError::Tokenizer(_))
    ));
}

#[test]
fn truncation_is_explicit_and_reported() {
    let bytes = std::fs::read(fixture("tiny_bpe.model")).unwrap();
    let t = GemmaTokenizer::from_sentencepiece(&bytes).unwrap();
    let text = "blue hair, ".repeat(100);
    let full = t.encode(&text).unwrap();
    let (ids, cut) = t.encode_truncated(&text, 256).unwrap();
    assert_eq!(ids, full[..256]);
    assert_eq!(cut, full.len() - 256);
    let (short, none) = t.encode_truncated("sky", 256).unwrap();
    assert_eq!((short, none), (t.encode("sky").unwrap(), 0));
    assert!(matches!(
        t.encode_truncated("sky", 0),
        Err(GemmaError::Input(_))
    ));
}
