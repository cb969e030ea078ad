//! The Gemma tokenizer: from `tokenizer.json`, or from a SentencePiece model proto (a
//! `tokenizer.model` file, or the `spiece_model` U8 tensor that ComfyUI embeds in
//! `gemma_2_2b_fp16.safetensors`), parsed here without the C++ library.
//!
//! A BPE SentencePiece model becomes an equivalent `tokenizers` BPE: the pieces are the vocabulary,
//! merges are derived from the piece scores (as transformers' converter does), unknown characters
//! fall back to `<0xXX>` byte pieces, spaces become `▁`, and user-defined pieces match in raw text.
//! Ids equal SentencePiece's (tested on 240 strings).

use std::path::Path;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, Tokenizer};

use crate::GemmaError;

/// The BOS id Gemma prepends to every prompt.
pub const BOS: u32 = 2;

/// A SentencePiece piece type (`ModelProto.SentencePiece.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PieceType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

#[derive(Debug, Clone)]
struct Piece {
    piece: String,
    score: f32,
    kind: PieceType,
}

/// The parts of a SentencePiece `ModelProto` the tokenizer needs.
#[derive(Debug, Clone)]
struct SentencePieceModel {
    pieces: Vec<Piece>,
    bpe: bool,
    byte_fallback: bool,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
}

/// A minimal protobuf wire-format reader (varints, fixed32/64, length-delimited fields).
struct Wire<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Wire<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    fn varint(&mut self) -> Result<u64, GemmaError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .bytes
                .get(self.at)
                .ok_or_else(|| proto_error("truncated varint"))?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(proto_error("varint too long"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], GemmaError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| proto_error("truncated field"))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    /// The next `(field number, value)`; `None` at the end.
    fn field(&mut self) -> Result<Option<(u64, Value<'a>)>, GemmaError> {
        if self.at >= self.bytes.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => Value::Fixed(self.take(8)?),
            2 => {
                let n =
                    usize::try_from(self.varint()?).map_err(|_| proto_error("length overflow"))?;
                Value::Bytes(self.take(n)?)
            }
            5 => Value::Fixed(self.take(4)?),
            other => return Err(proto_error(&format!("unsupported wire type {other}"))),
        };
        Ok(Some((key >> 3, value)))
    }
}

enum Value<'a> {
    Varint(u64),
    Fixed(&'a [u8]),
    Bytes(&'a [u8]),
}

fn proto_error(what: &str) -> GemmaError {
    GemmaError::Tokenizer(format!("invalid SentencePiece model: {what}"))
}

impl SentencePieceModel {
    fn parse(bytes: &[u8]) -> Result<Self, GemmaError> {
        let mut model = Self {
            pieces: Vec::new(),
            bpe: false,
            byte_fallback: false,
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
        };
        let mut wire = Wire::new(bytes);
        while let Some((field, value)) = wire.field()? {
            match (field, value) {
                (1, Value::Bytes(b)) => model.pieces.push(Self::piece(b)?),
                (2, Value::Bytes(b)) => {
                    let mut spec = Wire::new(b);
                    while let Some((f, v)) = spec.field()? {
                        match (f, v) {
                            (3, Value::Varint(t)) => model.bpe = t == 2,
                            (35, Value::Varint(v)) => model.byte_fallback = v != 0,
                            _ => {}
                        }
                    }
                }
                (3, Value::Bytes(b)) => {
                    let mut spec = Wire::new(b);
                    while let Some((f, v)) = spec.field()? {
                        match (f, v) {
                            (3, Value::Varint(v)) => model.add_dummy_prefix = v != 0,
                            (4, Value::Varint(v)) => model.remove_extra_whitespaces = v != 0,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if model.pieces.is_empty() {
            return Err(proto_error("no pieces"));
        }
        Ok(model)
    }

    fn piece(bytes: &[u8]) -> Result<Piece, GemmaError> {
        let mut piece = Piece {
            piece: String::new(),
            score: 0.0,
            kind: PieceType::Normal,
        };
        let mut wire = Wire::new(bytes);
        while let Some((field, value)) = wire.field()? {
            match (field, value) {
                (1, Value::Bytes(b)) => {
                    piece.piece = String::from_utf8(b.to_vec())
                        .map_err(|_| proto_error("a piece is not UTF-8"))?;
                }
                (2, Value::Fixed(b)) if b.len() == 4 => {
                    piece.score = f32::from_le_bytes([b[0], b[1], b[2], b[3]])
                }
                (3, Value::Varint(t)) => {
                    piece.kind = match t {
                        2 => PieceType::Unknown,
                        3 => PieceType::Control,
                        4 => PieceType::UserDefined,
                        5 => PieceType::Unused,
                        6 => PieceType::Byte,
                        _ => PieceType::Normal,
                    }
                }
                _ => {}
            }
        }
        Ok(piece)
    }

    /// BPE merges from the scores, as transformers' `SpmConverter`: every split of every piece
    /// into two vocabulary pieces, ordered by the piece's score (then the halves' lengths), descending.
    fn merges(&self, vocab: &Vocab) -> Vec<(String, String)> {
        let mut merges: Vec<(String, String, f32)> = Vec::new();
        for piece in &self.pieces {
            let chars: Vec<(usize, char)> = piece.piece.char_indices().collect();
            let mut local: Vec<(String, String, f32)> = chars
                .iter()
                .skip(1)
                .filter_map(|&(at, _)| {
                    let (l, r) = piece.piece.split_at(at);
                    (vocab.contains_key(l) && vocab.contains_key(r))
                        .then(|| (l.to_owned(), r.to_owned(), piece.score))
                })
                .collect();
            local.sort_by_key(|(l, r, _)| (vocab[l], vocab[r]));
            merges.extend(local);
        }
        // Stable sort, descending by (score, len(left), len(right)), as Python's sorted(reverse=True).
        merges.sort_by(|a, b| {
            let key = |m: &(String, String, f32)| (m.2, m.0.chars().count(), m.1.chars().count());
            let (ka, kb) = (key(a), key(b));
            kb.0.total_cmp(&ka.0)
                .then(kb.1.cmp(&ka.1))
                .then(kb.2.cmp(&ka.2))
        });
        merges.into_iter().map(|(l, r, _)| (l, r)).collect()
    }

    fn into_tokenizer(self) -> Result<Tokenizer, GemmaError> {
        if !self.bpe {
            return Err(GemmaError::Tokenizer(
                "only BPE SentencePiece models are supported (Gemma's is BPE)".into(),
            ));
        }
        if self.remove_extra_whitespaces {
            return Err(GemmaError::Tokenizer(
                "models that fold whitespace are not supported (Gemma's does not)".into(),
            ));
        }
        let vocab: Vocab = self
            .pieces
            .iter()
            .enumerate()
            .map(|(i, p)| (p.piece.clone(), i as u32))
            .collect();
        let merges = self.merges(&vocab);
        let unk = self
            .pieces
            .iter()
            .find(|p| p.kind == PieceType::Unknown)
            .map_or_else(|| "<unk>".to_owned(), |p| p.piece.clone());
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .unk_token(unk)
            .fuse_unk(true)
            .byte_fallback(self.byte_fallback)
            .build()
            .map_err(|e| GemmaError::Tokenizer(e.to_string()))?;
        let mut tokenizer = Tokenizer::new(bpe);
        let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
        if self.add_dummy_prefix {
            normalizers.push(Prepend::new("▁".into()).into());
        }
        normalizers.push(
            Replace::new(" ", "▁")
                .map_err(|e| GemmaError::Tokenizer(e.to_string()))?
                .into(),
        );
        tokenizer.with_normalizer(Some(NormalizerSequence::new(normalizers)));
        let decoders: Vec<DecoderWrapper> = vec![
            tokenizers::decoders::DecoderWrapper::Replace(
                tokenizers::normalizers::Replace::new("▁", " ")
                    .map_err(|e| GemmaError::Tokenizer(e.to_string()))?,
            ),
            ByteFallback::new().into(),
            Fuse::new().into(),
        ];
        tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));
        // SentencePiece matches user-defined pieces in raw text (control pieces are not matched).
        let user: Vec<AddedToken> = self
            .pieces
            .iter()
            .filter(|p| p.kind == PieceType::UserDefined)
            .map(|p| AddedToken::from(p.piece.clone(), true).normalized(false))
            .collect();
        tokenizer.add_special_tokens(&user);
        Ok(tokenizer)
    }
}

/// Where ComfyUI files keep the SentencePiece model: text-encoder files at the top level,
/// all-in-one checkpoints under the encoder's name.
const SPIECE_PREFIXES: [&str; 3] = [
    "",
    "text_encoders.gemma2_2b.",
    "text_encoders.gemma2_2b.transformer.",
];

/// Gemma's tokenizer with the encoder's conventions: BOS prepended, no EOS, no truncation.
#[derive(Debug, Clone)]
pub struct GemmaTokenizer {
    inner: Tokenizer,
}

impl GemmaTokenizer {
    /// From a Hugging Face `tokenizer.json`.
    pub fn from_tokenizer_json(path: impl AsRef<Path>) -> Result<Self, GemmaError> {
        let inner = Tokenizer::from_file(path.as_ref())
            .map_err(|e| GemmaError::Tokenizer(format!("{}: {e}", path.as_ref().display())))?;
        Ok(Self { inner })
    }

    /// From SentencePiece model bytes (`tokenizer.model`, or the `spiece_model` tensor).
    pub fn from_sentencepiece(bytes: &[u8]) -> Result<Self, GemmaError> {
        Ok(Self {
            inner: SentencePieceModel::parse(bytes)?.into_tokenizer()?,
        })
    }

    /// From the `spiece_model` U8 tensor of a ComfyUI text-encoder file (any of the encoder prefixes).
    pub fn from_weights(file: &sakiko_weights::WeightFile) -> Result<Self, GemmaError> {
        let prefix = file.detect_prefix("spiece_model", &SPIECE_PREFIXES)?;
        Self::from_sentencepiece(&file.read_bytes(&format!("{prefix}spiece_model"))?)
    }

    /// The prefix of the embedded `spiece_model` tensor, if `file` has one.
    pub(crate) fn embedded_prefix(file: &sakiko_weights::WeightFile) -> Option<&'static str> {
        file.detect_prefix("spiece_model", &SPIECE_PREFIXES).ok()
    }

    /// The ids of `text` without BOS, as SentencePiece's `encode`.
    pub fn encode_raw(&self, text: &str) -> Result<Vec<u32>, GemmaError> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| GemmaError::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The model input: BOS, then the ids of `text`; never truncated. Its length is the token
    /// count to report.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, GemmaError> {
        let mut ids = vec![BOS];
        ids.extend(self.encode_raw(text)?);
        Ok(ids)
    }

    /// transformers' convention for diffusers-style pipelines: BOS + ids cut to `max_length`
    /// tokens (BOS included). Returns the ids and how many tokens were cut, so that the caller
    /// can warn; nothing is ever cut silently. Padding is the encoder's job (batches of
    /// different lengths are masked there).
    pub fn encode_truncated(
        &self,
        text: &str,
        max_length: usize,
    ) -> Result<(Vec<u32>, usize), GemmaError> {
        if max_length == 0 {
            return Err(GemmaError::Input(
                "max_length must be at least 1 (BOS)".into(),
            ));
        }
        let mut ids = self.encode(text)?;
        let cut = ids.len().saturating_sub(max_length);
        ids.truncate(max_length);
        Ok((ids, cut))
    }

    /// The underlying `tokenizers::Tokenizer`.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}
