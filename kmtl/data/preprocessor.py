"""Raw text → model inputs, as TensorFlow ops (usable in `tf.data` and in serving graphs)."""

from __future__ import annotations

import tensorflow as tf


class Preprocessor:
    """Tokenizes and packs raw text with the backbone's keras-hub tokenizer, in the TF graph.

    The same object runs inside the training `tf.data` pipeline and inside the exported
    serving signatures, so training and serving tokenize identically. All methods take
    *batches* (``[batch]`` strings, or ragged ``[batch, (words)]`` for tagging) and return
    dense ``int32`` tensors of width ``max_length``; the pipeline later trims each batch to
    its longest sequence. The methods are `tf.function`s (keras-hub tokenizers return Python
    lists when called eagerly), so eager callers get tensors too.

    Args:
        tokenizer: a keras-hub WordPiece tokenizer (e.g. ``keras_hub.models.BertTokenizer``).
        max_length: sequence length including ``[CLS]``/``[SEP]``; longer inputs are truncated
            (pairs round-robin, as BERT does).

    Example:
        >>> pre = Preprocessor(tokenizer, max_length=64)
        >>> x = pre.encode_text(tf.constant(["a fine film"]))
        >>> sorted(x)
        ['padding_mask', 'segment_ids', 'token_ids']
    """

    def __init__(self, tokenizer, max_length: int = 128):
        if max_length < 4:
            raise ValueError(f"max_length must be at least 4, got {max_length}")
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.cls_id = int(tokenizer.token_to_id(tokenizer.cls_token))
        self.sep_id = int(tokenizer.token_to_id(tokenizer.sep_token))
        self.pad_id = int(tokenizer.token_to_id(tokenizer.pad_token))
        self.unk_id = int(tokenizer.token_to_id(getattr(tokenizer, "unk_token", None) or "[UNK]"))
        # tf.functions held by the instance (a decorated method would only keep a weak
        # reference to a temporary Preprocessor and fail once it is collected).
        self.encode_text = tf.function(self._encode_text, reduce_retracing=True)
        self.encode_words = tf.function(self._encode_words, reduce_retracing=True)

    def _inputs(self, token_ids, segment_ids, lengths):
        positions = tf.range(tf.shape(token_ids)[1])[tf.newaxis, :]
        mask = tf.cast(positions < tf.cast(lengths, tf.int32)[:, tf.newaxis], tf.int32)
        return {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": mask}

    def _encode_text(self, text, text_pair=None) -> dict:
        """``[batch]`` strings (and optional second strings) → packed model inputs.

        ``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]`` (segment ids 0 then 1). Pairs are
        truncated round-robin like BERT (the first segment keeps the odd token), with core
        TensorFlow ops only: stock TF Serving builds lack TF Text's ``RoundRobinTrim`` op.
        """
        a = tf.cast(self.tokenizer(text), tf.int32)
        budget = self.max_length - (2 if text_pair is None else 3)
        la = a.row_lengths()
        if text_pair is None:
            segments = [_keep_first(a, tf.minimum(la, budget))]
        else:
            b = tf.cast(self.tokenizer(text_pair), tf.int32)
            keep_a, keep_b = round_robin_lengths(la, b.row_lengths(), budget)
            segments = [_keep_first(a, keep_a), _keep_first(b, keep_b)]
        batch = tf.shape(la)[0]
        cls = tf.fill([batch, 1], self.cls_id)
        sep = tf.fill([batch, 1], self.sep_id)
        ids, segs = [cls], [tf.zeros([batch, 1], tf.int32)]
        for index, segment in enumerate(segments):
            ids += [segment, sep]
            segs += [tf.ones_like(segment) * index, tf.fill([batch, 1], index)]
        ids = tf.concat(ids, axis=1)
        shape = [None, self.max_length]
        token_ids = ids.to_tensor(self.pad_id, shape=shape)
        segment_ids = tf.concat(segs, axis=1).to_tensor(0, shape=shape)
        return self._inputs(token_ids, segment_ids, ids.row_lengths())

    def word_pieces(self, words) -> tf.RaggedTensor:
        """``[N]`` words → their word pieces, ragged ``[N, (pieces)]`` int32, each word at least one:
        a word with no pieces (only control characters, say) becomes ``[UNK]`` so it keeps a slot."""
        pieces = self.tokenizer(words)
        if not isinstance(pieces, tf.RaggedTensor):
            pieces = tf.RaggedTensor.from_tensor(pieces)
        counts = tf.maximum(pieces.row_lengths(), tf.constant(1, pieces.row_splits.dtype))
        dense = tf.pad(pieces.to_tensor(self.unk_id), [[0, 0], [0, 1]], constant_values=self.unk_id)
        return tf.RaggedTensor.from_tensor(tf.cast(dense, tf.int32), lengths=counts)

    def _encode_words(self, words: tf.RaggedTensor, word_labels: tf.RaggedTensor = None) -> dict:
        """Ragged ``[batch, (words)]`` → model inputs plus word/piece alignment.

        Returns the model inputs and:
            ``first_piece_mask``: ``[batch, max_length]`` 1.0 on each word's first piece;
            ``first_piece``: ``[batch, max_words]`` position of each word's first piece, ``-1``
                for padding and for words truncated away;
            ``piece_labels`` (when ``word_labels`` is given): ``[batch, max_length]`` the word's
                label on its first piece, 0 elsewhere.
        """
        pieces = self.word_pieces(words.flat_values)
        counts = pieces.row_lengths()

        word_rows = tf.cast(words.row_lengths(), counts.dtype)
        seq = tf.RaggedTensor.from_row_lengths(pieces, word_rows).merge_dims(1, 2)
        first = tf.cast(tf.ragged.range(counts) == 0, tf.float32)
        first = tf.RaggedTensor.from_row_lengths(first, word_rows).merge_dims(1, 2)

        keep = self.max_length - 2
        batch = tf.shape(word_rows)[0]
        cls = tf.fill([batch, 1], self.cls_id)
        sep = tf.fill([batch, 1], self.sep_id)
        zeros_f = tf.zeros([batch, 1], tf.float32)
        shape = [None, self.max_length]
        piece_splits = seq.row_splits
        seq = seq[:, :keep]
        token_ids = tf.concat([cls, seq, sep], axis=1).to_tensor(self.pad_id, shape=shape)
        lengths = seq.row_lengths() + 2
        out = self._inputs(token_ids, tf.zeros_like(token_ids), lengths)
        out["first_piece_mask"] = tf.concat([zeros_f, first[:, :keep], zeros_f], axis=1).to_tensor(0.0, shape=shape)

        # Position of each word's first piece: 1 + pieces of the words before it in its sentence.
        before = tf.math.cumsum(counts, exclusive=True)
        starts = tf.gather(tf.concat([before, tf.zeros([1], before.dtype)], 0), words.row_starts())
        position = before - tf.repeat(starts, word_rows) + 1
        position = tf.cast(tf.where(position <= keep, position, -1), tf.int32)
        out["first_piece"] = tf.RaggedTensor.from_row_lengths(position, word_rows).to_tensor(-1)

        if word_labels is not None:
            labels = tf.repeat(tf.cast(word_labels.flat_values, tf.int32), counts)
            labels = labels * tf.cast(first.flat_values, tf.int32)  # 0 on continuation pieces
            labels = tf.RaggedTensor.from_row_splits(labels, piece_splits)
            labels = labels[:, :keep]
            zeros_i = tf.zeros([batch, 1], tf.int32)
            out["piece_labels"] = tf.concat([zeros_i, labels, zeros_i], axis=1).to_tensor(0, shape=shape)
        return out


def round_robin_lengths(len_a, len_b, budget):
    """How many pieces of each segment round-robin truncation keeps (BERT's pair truncation).

    Both segments give up tokens in turn until they fit ``budget``; the first keeps the odd
    one. Example: lengths 10 and 3 with budget 8 keep 5 and 3; 10 and 10 keep 4 and 4.
    """
    half_b = budget // 2
    half_a = budget - half_b
    keep_a = tf.where(len_a + len_b <= budget, len_a,
                      tf.where(len_a < half_a, len_a, tf.where(len_b < half_b, budget - len_b, half_a)))
    keep_b = tf.minimum(len_b, budget - keep_a)
    return keep_a, keep_b


def _keep_first(ragged, counts):
    """The first ``counts[i]`` values of each row of ``ragged``."""
    positions = tf.ragged.range(ragged.row_lengths())
    return tf.ragged.boolean_mask(ragged, positions < tf.cast(counts, positions.dtype)[:, tf.newaxis])
