#!/usr/bin/env python3
"""Generate reference token ids for Kinema's CLIPTokenizer tests.

Runs transformers' `CLIPTokenizer.from_pretrained(FOLDER)` (transformers 5: the class backed by the
`tokenizers` library) on ~170 prompts exactly as diffusers' I2VGenXLPipeline calls it
(`padding="max_length", max_length=77, truncation=True`) and writes:

- Tests/KinemaModelsTests/Fixtures/clip_tokenizer_ids.json: every prompt's text and its 77 ids,
  plus the library versions that produced them.
- Tests/KinemaModelsTests/Fixtures/tokenizer_json/: a reduced CLIP tokenizer saved by transformers'
  `save_pretrained` (tokenizer.json + tokenizer_config.json). It keeps the original ids of the 512
  byte-level symbols, the two special tokens and every token and merge that BPE applies to the
  words of these prompts, in their original order. Dropping a merge BPE never applies to a word
  cannot change that word's result (every chosen merge is still the lowest-ranked one available),
  so this 70 KB folder reproduces the full vocabulary's ids on the fixture prompts; the script
  checks that by loading the saved folder back with transformers.

The prompts are fixed plus random strings from a fixed seed, so the output is deterministic for a
given transformers/tokenizers version. Run from the repository root:

    /work/venv/bin/python tools/make_tokenizer_fixtures.py \
        --tokenizer /work/shared/data/clip-tokenizer

Python is a developer tool only, never a build or run-time dependency of Kinema.
"""

import argparse
import json
import os
import random

import tokenizers
import transformers
from transformers import CLIPTokenizer

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO_ROOT, "Tests", "KinemaModelsTests", "Fixtures")
MAX_LENGTH = 77

LONG_PROMPT = (
    "A cinematic aerial shot of a lighthouse on a rocky cliff at sunset, waves crashing against the "
    "rocks below, seagulls circling overhead, golden light reflecting on the water, the camera slowly "
    "orbits the lighthouse while clouds drift across the orange and purple sky, highly detailed, "
    "photorealistic, 4k, smooth motion, volumetric lighting, dramatic atmosphere, film grain"
)

PROMPTS = [
    # Plain motion prompts and the pipeline's documented negative prompt.
    "",
    "the camera pans to the left",
    "slowly zoom in",
    "A red panda eating bamboo in a forest",
    "Papers were floating in the air on a table in the library",
    "a dog running on the beach, slow motion",
    "time-lapse of clouds over a mountain range",
    "Distorted, discontinuous, Ugly, blurry, low resolution, motionless, static, disfigured, "
    "disconnected limbs, Ugly faces, incomplete arms",
    # Case.
    "THE CAMERA PANS TO THE LEFT",
    "The Camera Pans To The Left",
    "tHe CaMeRa PaNs",
    "HTTPS://EXAMPLE.COM/Video?ID=42",
    # Punctuation runs.
    "!!!",
    "...",
    "a,b;c",
    "wow!!! really??? yes...",
    "(((masterpiece))), [best quality], {4k}",
    "a--b__c//d\\\\e",
    "#hashtag @mention $100 50% ^caret* ~tilde` |pipe|",
    "<html><body>hi</body></html>",
    "\"quoted\" and 'single quoted'",
    # Apostrophes and contractions.
    "don't",
    "it's",
    "we'll",
    "they're, we've, I'm, you'd, can't, won't",
    "DON'T IT'S WE'LL THEY'RE",
    "rock'n'roll",
    "the dog's bone's owner's",
    "'s 't 're 've 'm 'll 'd",
    "''s '''t",
    "it’s (typographic apostrophe)",
    "o'clock 'tis",
    # Numbers.
    "1280x704",
    "16 fps",
    "3.14159",
    "2026",
    "1,000,000 frames at 24fps",
    "v2.0-beta3",
    "0x1F 0b1010 1e-5",
    "9:16 aspect ratio",
    "²³ ½ ⅔ Ⅻ ① ١٢٣ １２３ ߁߂",
    # Accents and Latin-1.
    "café crème",
    "naïve façade, résumé, jalapeño",
    "Straße ß STRASSE ẞ",
    "Ångström Øresund Æsir œuvre",
    "İstanbul ıi",
    "KELVIN K and OHM Ω and ANGSTROM Å",
    # Greek, Cyrillic, other scripts.
    "Ελληνικά γράμματα ΟΔΟΣ",
    "Σίσυφος ΣΊΣΥΦΟΣ",
    "Москва — столица России",
    "ПРИВЕТ мир",
    "日本の風景",
    "一只熊猫在竹林里吃竹子",
    "한국어 텍스트 비디오",
    "ภาษาไทย สวัสดี",
    "हिन्दी में वीडियो",
    "مرحبا بالعالم",
    "שלום עולם",
    "ქართული Հայերեն",
    # Emoji.
    "🚀🔥",
    "a rocket 🚀 launching 🔥 at night",
    "👨‍👩‍👧 family 👍🏽 thumbs ❤️ heart 🇯🇵 flag",
    "☃ ★ ♥ ✓ ✗ ⚡",
    # Combining characters, composition and ligatures.
    "cafe\u0301",
    "e\u0301\u0327 a\u030a o\u0308\u0304",
    "\u1100\u1161\u11a8 \u1112\u1161\u11ab",
    "n\u0303o\u0303 Z\u0335\u0321a\u0336\u0322l\u0337g\u0338o\u0334",
    "\u0301leading combining mark",
    # NFC corner cases: a decomposition whose marks sort before earlier marks, an astral letter
    # before a mark, and marks and compositions newer than the reference's Unicode 9.0 tables.
    "o\u030a\u0f75w a\u0301\u0f73",
    "c\U0001004b\u0327 \U00010041\u0301",
    "x\u0308\u08d3 \u0ad7\u0301\u08d0 \U00011935\U00011930",
    "ﬁne ﬂow ﬀ ﬃ ǆ ǅ Ǆ",
    "ＡＢＣ ｆｕｌｌｗｉｄｔｈ ！",
    "ℌ ℍ ℕ 𝐀𝐁𝐂 𝔸",
    # Zero-width and invisible characters.
    "zero\u200bwidth space",
    "zero\u200cwidth\u200dnon-joiner",
    "word\u2060joiner and \ufeffbyte order mark",
    "soft\u00adhyphen",
    "mongolian\u180evowel separator",
    "left\u200eto\u200fright",
    # Whitespace of every kind.
    "   leading spaces",
    "trailing spaces   ",
    "multiple    spaces   between     words",
    "tab\tseparated\twords",
    "new\nline\r\nand\rcarriage",
    "vertical\x0btab\x0cform feed",
    "non\u00a0breaking\u00a0space",
    "ogham\u1680en\u2002em\u2003thin\u2009hair\u200aspace",
    "line\u2028separator\u2029paragraph",
    "narrow\u202fnbsp\u205fmath\u3000ideographic",
    "next\u0085line",
    "file\x1cgroup\x1drecord\x1eunit\x1fseparators",
    "control\x00null\x07bell\x1bescape\x7fdelete",
    " \t\n ",
    # HTML entities stay text in transformers 5 (the slow tokenizer used to unescape them).
    "&amp;",
    "rock &amp; roll &lt;b&gt; &quot;hi&quot; &#39;x&#39; &nbsp;",
    "AT&T R&D",
    # Special tokens written literally in the prompt.
    "<|endoftext|>",
    "<|startoftext|>",
    "a <|endoftext|> b",
    "before<|endoftext|>after",
    "<|startoftext|>a photo<|endoftext|>",
    "<|endoftext|><|endoftext|><|endoftext|>",
    "<|ENDOFTEXT|> is not special when upper case",
    "<|EndOfText|>!! and <|startoftext|>??",
    "<|endoftext",
    "endoftext|>",
    "<| endoftext |>",
    "x<|endoftext|>y<|startoftext|>z",
    "!<|endoftext|>",
    # Characters assigned in Unicode 17, which the reference's regex engine does not know.
    "a\U00010940b \U00010941\U00010942 c\U00011de0\U00011de1d 7\U00011de2 x\ua7cey",
    # Truncation: more than 75 content tokens.
    LONG_PROMPT,
    " ".join(["word"] * 74),
    " ".join(["word"] * 75),
    " ".join(["word"] * 76),
    " ".join(["word"] * 200),
    "1234567890" * 10,
    "!" * 300,
    "supercalifragilisticexpialidocious" * 8,
    " ".join(["word"] * 74) + " <|endoftext|> tail",
    " ".join(["word"] * 80) + " <|endoftext|>",
]

# Characters random prompts are drawn from: every character class the tokenizer treats differently.
RANDOM_ALPHABET = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "0123456789"
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
    "      \t\n"
    "éèêëàâäôöûüçñßÉÀÇÑœæøåÅ"
    "αβγδεζηθλμπσςΩΣΔ"
    "абвгдежзийклмнопрстуфхцчшщъыьэюяАБВГД"
    "日本語中文字風景한국어"
    "🚀🔥😀👍🏽❤️"
    "\u0301\u0308\u0327\u200b\u200c\u200d\u00a0\u2003\u3000\ufeff"
    "½²Ⅻ١"
    "ﬁﬂ"
)

RANDOM_FRAGMENTS = ["'s", "'t", "'re", "'ll", "<|endoftext|>", "<|startoftext|>", "&amp;", "e\u0301"]


def random_prompts(count, seed):
    """Random strings mixing single characters and the fragments with special handling."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(count):
        pieces = []
        for _ in range(rng.randint(1, 40)):
            if rng.random() < 0.1:
                pieces.append(rng.choice(RANDOM_FRAGMENTS))
            else:
                pieces.append(rng.choice(RANDOM_ALPHABET))
        prompts.append("".join(pieces))
    return prompts


def encode(tokenizer, texts):
    return tokenizer(texts, padding="max_length", max_length=MAX_LENGTH, truncation=True)["input_ids"]


def bpe_trace(word, ranks):
    """The merges BPE applies to one byte-level word, lowest rank first (ties: leftmost)."""
    symbols = list(word[:-1]) + [word[-1] + "</w>"]
    applied = []
    while len(symbols) > 1:
        candidates = [(ranks[pair], i) for i, pair in enumerate(zip(symbols, symbols[1:])) if pair in ranks]
        if not candidates:
            break
        _, i = min(candidates)
        applied.append((symbols[i], symbols[i + 1]))
        symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
    return applied, symbols


def reduced_tokenizer(tokenizer, texts):
    """A CLIPTokenizer keeping only the tokens and merges these texts use, with their original ids."""
    backend = tokenizer.backend_tokenizer
    full = json.loads(backend.to_str())["model"]
    vocab, merges = full["vocab"], [tuple(m) for m in full["merges"]]
    ranks = {pair: rank for rank, pair in enumerate(merges)}
    used = set()
    for text in texts:
        for word, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text)):
            applied, symbols = bpe_trace(word, ranks)
            expected = [token.id for token in backend.model.tokenize(word)]
            assert [vocab[s] for s in symbols] == expected, f"the script's BPE disagrees on {word!r}"
            used.update(applied)
    kept_merges = [m for m in merges if m in used]
    kept_tokens = {token for token, index in vocab.items() if index < 512}  # the byte-level alphabet
    kept_tokens.update({tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token})
    for a, b in kept_merges:
        kept_tokens.update((a, b, a + b))
    kept_vocab = {token: index for token, index in vocab.items() if token in kept_tokens}
    return CLIPTokenizer(vocab=kept_vocab, merges=kept_merges, model_max_length=MAX_LENGTH)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", default="/work/shared/data/clip-tokenizer",
                        help="folder with vocab.json, merges.txt and tokenizer_config.json")
    parser.add_argument("--out", default=FIXTURES, help="the KinemaModelsTests Fixtures folder")
    parser.add_argument("--random-count", type=int, default=48)
    parser.add_argument("--seed", type=int, default=20260)
    args = parser.parse_args()

    tokenizer = CLIPTokenizer.from_pretrained(args.tokenizer)
    texts = PROMPTS + random_prompts(args.random_count, args.seed)
    assert len(set(texts)) == len(texts), "duplicate prompt"
    ids = encode(tokenizer, texts)
    assert all(len(row) == MAX_LENGTH for row in ids)

    layout_folder = os.path.join(args.out, "tokenizer_json")
    os.makedirs(layout_folder, exist_ok=True)
    reduced_tokenizer(tokenizer, texts).save_pretrained(layout_folder)
    reloaded = CLIPTokenizer.from_pretrained(layout_folder)
    for text, expected, actual in zip(texts, ids, encode(reloaded, texts)):
        assert actual == expected, f"the reduced tokenizer differs on {text!r}"

    lines = [
        "{",
        f'  "generator": "tools/make_tokenizer_fixtures.py --tokenizer {os.path.basename(args.tokenizer)}",',
        f'  "transformers": "{transformers.__version__}",',
        f'  "tokenizers": "{tokenizers.__version__}",',
        f'  "maxLength": {MAX_LENGTH},',
        '  "cases": [',
    ]
    cases = [json.dumps({"text": text, "ids": row}, ensure_ascii=True, separators=(",", ":"))
             for text, row in zip(texts, ids)]
    lines.append(",\n".join("    " + case for case in cases))
    lines += ["  ]", "}", ""]
    path = os.path.join(args.out, "clip_tokenizer_ids.json")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    print(f"wrote {len(texts)} cases to {path} and a reduced tokenizer.json to {layout_folder}")


if __name__ == "__main__":
    main()
