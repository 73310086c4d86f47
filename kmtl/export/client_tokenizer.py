"""What an ONNX client needs to tokenize like the model: ``vocab.txt`` and ``tokenizer.json``.

The ONNX graph takes token ids (tf2onnx cannot convert TF Text's tokenizer ops), so the export
ships the backbone's WordPiece vocabulary and a Hugging Face ``tokenizers`` file set up like
kmtl's own `kmtl.data.Preprocessor`: same normalisation (NFKC case folding when the backbone
is uncased), BERT's split on whitespace and punctuation, ``[CLS] a [SEP]`` (``[CLS] a [SEP]
b [SEP]`` for pairs, segment ids 0 then 1), truncation to the model's max length and padding
to the longest text of a batch.
"""

from __future__ import annotations

from pathlib import Path

VOCAB_FILE = "vocab.txt"
TOKENIZER_FILE = "tokenizer.json"


def tokenizer_settings(preprocessor) -> dict:
    """The settings a client needs besides the vocabulary (recorded in ``kmtl.json``).

    Example:
        >>> tokenizer_settings(model.preprocessor)["lowercase"]
        True
    """
    tok = preprocessor.tokenizer
    return {
        "kind": "wordpiece",
        "vocab_file": VOCAB_FILE,
        "tokenizer_file": TOKENIZER_FILE,
        "lowercase": bool(getattr(tok, "lowercase", False)),
        "strip_accents": bool(getattr(tok, "strip_accents", False)),
        "split_on_cjk": bool(getattr(tok, "split_on_cjk", True)),
        "suffix_indicator": getattr(tok, "suffix_indicator", "##"),
        "unk_token": getattr(tok, "oov_token", "[UNK]"),
        "cls_id": preprocessor.cls_id,
        "sep_id": preprocessor.sep_id,
        "pad_id": preprocessor.pad_id,
        "unk_id": preprocessor.unk_id,
        "max_length": preprocessor.max_length,
    }


def write_client_tokenizer(folder, preprocessor) -> dict:
    """Write ``vocab.txt`` and ``tokenizer.json`` into ``folder``; return `tokenizer_settings`.

    ``tokenizer.json`` loads with ``tokenizers.Tokenizer.from_file`` (the package keras-hub
    already depends on) and gives the ids, segment ids and padding mask of kmtl's
    preprocessor for ordinary text. Known differences: a word longer than 100 characters
    (kmtl counts bytes), the few characters where lower-casing and Unicode case folding
    disagree besides ``ß`` and ``ς`` (handled), and which segment keeps the odd token when a
    pair is truncated.

    Example:
        >>> write_client_tokenizer("saved_models/demo/1", model.preprocessor)
        >>> Tokenizer.from_file("saved_models/demo/1/tokenizer.json").encode("a fine film").ids
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    folder = Path(folder)
    settings = tokenizer_settings(preprocessor)
    vocabulary = list(preprocessor.tokenizer.vocabulary)
    (folder / VOCAB_FILE).write_text("".join(f"{token}\n" for token in vocabulary), encoding="utf-8")

    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocabulary)}, unk_token=settings["unk_token"],
                                     continuing_subword_prefix=settings["suffix_indicator"]))
    steps = [normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=settings["split_on_cjk"],
                                        strip_accents=settings["strip_accents"], lowercase=settings["lowercase"])]
    if settings["lowercase"]:  # TF Text's case_fold_utf8 is NFKC case folding, not lower()
        steps = [normalizers.NFKC(), *steps, normalizers.Replace("ß", "ss"), normalizers.Replace("ς", "σ")]
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = vocabulary[settings["cls_id"]], vocabulary[settings["sep_id"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, settings["cls_id"]), (sep, settings["sep_id"])])
    tok.enable_truncation(settings["max_length"])
    tok.enable_padding(pad_id=settings["pad_id"], pad_token=vocabulary[settings["pad_id"]])
    tok.save(str(folder / TOKENIZER_FILE))
    return settings
