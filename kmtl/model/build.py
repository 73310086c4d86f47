"""`build_model`: the one call that assembles a multi-task model."""

from kmtl.model.multitask_model import MultiTaskModel


def build_model(encoder, tasks, *, pooling: str = "mean", sharing="full", name: str = "kmtl",
                max_length: int = 128, **sharing_options) -> MultiTaskModel:
    """Assemble the shared encoder and one head per task into a `MultiTaskModel`.

    Args:
        encoder: from `kmtl.load_backbone` (or a keras-hub backbone).
        tasks: `kmtl.tasks.Task` objects with their label sets known (call
            ``task.fit_labels(train_examples)`` first for inferred label sets).
        pooling: ``mean`` or ``cls`` sentence vector for sentence-level heads.
        sharing: a mode name (`kmtl.sharing.SHARING_MODES`: ``full``, ``frozen``, ``lora``,
            ``adapters``...) or a `kmtl.sharing.Sharing` object (see `kmtl.sharing`). Default
            ``full``, which trains on any Keras ``(x, y)`` data; YAML configs with two or more
            tasks default to ``soft`` (`kmtl.defaults.MULTI_TASK_SHARING`, the better measured
            recipe), whose training inputs need ``task_id`` (kmtl's pipelines add it; ``predict``
            and serving do without).
        name: the Keras model name.
        max_length: sequence length of the preprocessor attached as ``model.preprocessor``
            (when ``encoder`` has a tokenizer), which ``model.predict`` uses on raw text.
        **sharing_options: the mode's options, keyed as in the YAML ``sharing`` section
            (`kmtl.sharing.make_sharing`): ``lora_rank`` (8), ``lora_alpha`` (the rank),
            ``lora_targets`` (``["query", "value"]``) for ``lora``; ``adapter_size`` (64) for
            ``adapters``; options of other modes are ignored, unknown keys are an error.

    Example:
        >>> tasks = [kmtl.tasks.Classification("sentiment", ["negative", "positive"]),
        ...          kmtl.tasks.Tagging("ner", kmtl.tasks.bio_labels(["PER", "LOC"]))]
        >>> model = kmtl.build_model(kmtl.load_backbone(), tasks)
        >>> sorted(model.output.keys())
        ['ner', 'sentiment']
        >>> adapted = kmtl.build_model(kmtl.load_backbone(), tasks, sharing="adapters", adapter_size=32)
    """
    model = MultiTaskModel(encoder, tasks, pooling=pooling, sharing=sharing, name=name, **sharing_options)
    if hasattr(encoder, "preprocessor"):
        model.preprocessor = encoder.preprocessor(max_length)
    return model
