"""The model families and the one interface train, evaluate, export and predict use for all of them.

A family is a module in `fbnet_tf/models/` that provides:
    build_network(model_config) -> network          the raw-output Keras model
    build_trainer(config, network=None, stage=None) the `model.fit` wrapper (losses, masks, metrics) of a stage
    inference_model(network) -> keras.Model          image -> named outputs (`valence_arousal`, `expression`,
                                                     `action_units`, `attributes`: those the family has)
    network_of(model) -> network                     the network inside an inference model or trainer
    stage_names(config) -> [name, ...]               training stages, in order (one for a jointly trained family)
    training_data(config, stage, strategy)           (train dataset, steps per epoch, validation dataset or None)
and its network has `label_names()` -> {output: [column names]}. Nothing outside `models/` names a family.
A task model built on a family's features (`compound_classifier.CompoundClassifier`) has `label_names()` itself.
"""
from __future__ import annotations

import importlib

FAMILIES = {"facebehaviornet": "fbnet_tf.models.facebehaviornet", "fatauvanet": "fbnet_tf.models.fatauvanet"}


def family(config_or_name):
    """The family module of a config (its `model.family`), a `ModelConfig`, or a family name."""
    name = config_or_name
    if not isinstance(name, str):
        name = getattr(getattr(config_or_name, "model", config_or_name), "family")
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; expected one of {sorted(FAMILIES)}")
    return importlib.import_module(FAMILIES[name])


def network_in(model, network_class):
    """The `network_class` network inside an inference model or a trainer, or `model` itself; ValueError
    otherwise (what each family's `network_of` is)."""
    if isinstance(model, network_class):
        return model
    if isinstance(getattr(model, "network", None), network_class):
        return model.network
    for layer in model.layers:
        if isinstance(layer, network_class):
            return layer
    raise ValueError(f"model {model.name!r} contains no {network_class.__name__}")


def family_of(model):
    """(family module, network) of a Keras model of any family (an inference model, trainer or network)."""
    for name in FAMILIES:
        module = family(name)
        try:
            return module, module.network_of(model)
        except ValueError:
            continue
    raise ValueError(f"model {model.name!r} is no network of the families {sorted(FAMILIES)}")


def label_names(model) -> dict[str, list[str]]:
    """{output name: column names} of the outputs `model` (an inference model) gives.

    A task model on a family's features names its own (the compound classifier: `compound` over its class set). A
    model that holds no family's network (e.g. a hand-made Keras model with the same output names) gets the
    canonical label spaces of `fbnet_tf.labels`."""
    from fbnet_tf.labels import AU_NAMES, EXPRESSIONS, VA_NAMES

    try:
        names = model.label_names() if callable(getattr(model, "label_names", None)) \
            else family_of(model)[1].label_names()
    except ValueError:
        names = {"valence_arousal": list(VA_NAMES), "expression": list(EXPRESSIONS), "action_units": list(AU_NAMES)}
    outputs = model.output if isinstance(model.output, dict) else {}
    return {key: names[key] for key in names if key in outputs}
