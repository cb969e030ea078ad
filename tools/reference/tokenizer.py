"""Reference fixtures for `sakiko-gemma`'s tokenizer: a tiny SentencePiece BPE model with byte
fallback and Gemma's normaliser settings (no dummy prefix, no whitespace folding, digits split),
trained on Danbooru tags, the model card's prompts, CJK, emoji, digits and odd whitespace; the
model as a `.model` proto and embedded as ComfyUI's `spiece_model` U8 tensor; and SentencePiece's
ids for at least 200 strings.

    .venv-ref/bin/python tools/reference/tokenizer.py   # writes crates/gemma/tests/fixtures/tokenizer/
"""

import json
import os

import numpy as np
import sentencepiece as spm
import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "gemma", "tests", "fixtures", "tokenizer")
PREFIX = "You are an assistant designed to generate anime images based on textual prompts. <Prompt Start>"
CORPUS = [
    PREFIX,
    "<tags>\n<special>1girl</special>\n<artists>artist name</artists>\n<characters>togawa sakiko</characters>\n"
    "<copyright>bang dream! it's mygo!!!!!</copyright>\n<general>blue hair, long hair, school uniform, sky</general>\n"
    "<rating>safe</rating>\n<meta>masterpiece, newest, highres</meta>\n</tags>",
    "<tags>\n<artists>artist_name</artists>\nanything tag list, solo, 1girl, smile...\n</tags>",
    "The image features a full-body illustration of Sakiko Togawa from the Bang Dream! It's MyGO!!!!! series.",
    "She is depicted in a formal suit, with a long black coat and pants. The coat has a red lining.",
    "1girl, 2girls, 6+girls, 1boy, male focus, 1other, solo, looking at viewer, smile, open mouth, ^_^, >_<, o_o",
    "masterpiece, best quality, good quality, normal quality, worst quality, newest, recent, mid, early, old",
    "highres, lowres, absurdres, safe, sensitive, nsfw, explicit",
    "blue hair, two side up, black ribbon, yellow eyes, white gloves, school uniform, cherry blossoms",
    "豊川祥子 バンドリ 少女 桜 東京 青い髪 初音ミク 中文测试 한국어 테스트",
    "emoji 😀🎉✨🌸 and symbols ★☆♪ © ™",
    "digits 0123456789 1024x1024 832x1216 2024 3.14159 42",
    "tabs\tand\nnewlines\r\n  double  spaces   triple   spaces",
]


def samples():
    base = [
        "", " ", "  ", "a", "A", "1", "12", "1girl", "hello world", "Hello  World", " leading", "trailing ",
        "\t", "\n", "\n\n", "a\tb", "x\r\ny", "🎉", "😀😀", "中", "豊川祥子", "バンドリ", "한국어", "ÀÉÎÕÜ", "ß", "ﬁ",
        "<tags>", "</tags>", "<meta>masterpiece</meta>", "^_^", ">_<", "(o)_(o)", "$100", "50%", "a+b=c",
        "zzzzzzzz", "qwertyuiop", "Ω≈ç√∫", "\u00a0nbsp", "\u3000ideographic space", "x" * 40, " " * 5,
    ]
    rng = np.random.default_rng(0)
    words = " ".join(CORPUS).replace("\n", " ").split(" ")
    words = [w for w in words if w]
    out = list(base) + CORPUS
    while len(out) < 240:
        n = int(rng.integers(1, 12))
        sep = [" ", ", ", "  ", "\n", "\t", ""][int(rng.integers(0, 6))]
        out.append(sep.join(rng.choice(words, n)))
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    corpus_path = os.path.join(OUT, "corpus.txt")
    with open(corpus_path, "w") as f:
        for _ in range(20):
            for line in CORPUS:
                f.write(line.replace("\n", " ") + "\n")
    prefix = os.path.join(OUT, "tiny_bpe")
    spm.SentencePieceTrainer.train(
        input=corpus_path, model_prefix=prefix, model_type="bpe", vocab_size=400, byte_fallback=True,
        character_coverage=0.9995, add_dummy_prefix=False, remove_extra_whitespaces=False,
        normalization_rule_name="identity", split_digits=True, allow_whitespace_only_pieces=True,
        split_by_whitespace=False, unk_id=3, bos_id=2, eos_id=1, pad_id=0,
        user_defined_symbols=["<start_of_turn>", "<end_of_turn>"], minloglevel=2,
    )
    os.remove(corpus_path)
    os.remove(prefix + ".vocab")
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    with open(prefix + ".model", "rb") as f:
        proto = f.read()
    save_file({"spiece_model": torch.frombuffer(bytearray(proto), dtype=torch.uint8)}, os.path.join(OUT, "embedded.safetensors"))
    cases = [{"text": s, "ids": sp.encode(s)} for s in samples()]
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"sentencepiece": spm.__version__, "cases": cases}, f, ensure_ascii=False, indent=0)
    print(f"{len(cases)} cases, vocab {sp.get_piece_size()}, model {len(proto)} bytes")


if __name__ == "__main__":
    main()
