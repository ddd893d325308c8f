"""Is a Keras model exactly the standard architecture of movielens.model.keras_model.build_model?

The compiled engine (movielens.training.compiled.fit, movielens.training.compiled.kernels) and the NumPy scoring (movielens.ranking.scorers) implement
one formula, `lo + (hi - lo) * sigmoid(u . m + b_u + b_m)`, on four tables found by layer name.
They may only touch a model that is exactly that: this module reads the model's Keras config (the
`config` of `model.get_config()`, or of config.json inside a saved .keras file, so no TensorFlow
is needed) and names the first thing that differs. Anything it does not recognise is a difference.
"""

from __future__ import annotations

from typing import Any

from movielens.model.layers import (
    MOVIE_BIAS,
    MOVIE_EMBEDDING,
    MOVIE_INPUT,
    RATING,
    TABLES,
    USER_BIAS,
    USER_EMBEDDING,
    USER_INPUT,
)

# table -> the input it must read and whether it is an embedding (output_dim = embedding_dim) or a
# bias (output_dim = 1)
TABLE_ROLES = dict(
    zip(
        TABLES,
        [
            (USER_INPUT, "embedding"),
            (USER_INPUT, "bias"),
            (MOVIE_INPUT, "embedding"),
            (MOVIE_INPUT, "bias"),
        ],
        strict=True,
    )
)
REGULARIZERS = ("embeddings_regularizer", "activity_regularizer")
KNOWN_CLASSES = ("InputLayer", "Embedding", "Dot", "Add", "Activation", "Rescaling")


def inputs_of(layer: dict) -> list[str]:
    """The names of the layers whose outputs feed `layer` (its one call), in order."""
    names: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            history = value.get("config", {}).get("keras_history")
            if value.get("class_name") == "__keras_tensor__" and history:
                names.append(history[0])
                return
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(layer.get("inbound_nodes", []))
    return names


def _dtype(config: dict) -> str | None:
    dtype = config.get("dtype")
    if isinstance(dtype, dict):
        return dtype.get("config", {}).get("name")
    return dtype


def _table_problem(layer: dict, role: str) -> str | None:
    config, name = layer["config"], layer["name"]
    if config.get("embeddings_constraint") is not None:
        return f"layer '{name}' has an embeddings constraint"
    if config.get("mask_zero"):
        return f"layer '{name}' masks index 0 (mask_zero=True)"
    if config.get("quantization_config") is not None or config.get("lora_rank"):
        return f"layer '{name}' is quantised or has LoRA weights"
    for key in REGULARIZERS:
        regularizer = config.get(key)
        if regularizer is not None and regularizer.get("class_name") != "L2":
            return f"layer '{name}' has a {regularizer.get('class_name')} {key} (only L2 is implemented)"
    if role == "bias" and config.get("output_dim") != 1:
        return f"bias layer '{name}' has output_dim={config.get('output_dim')}, not 1"
    return None


def _wiring_problem(by_name: dict[str, dict]) -> str | None:
    """The dot, add, sigmoid and rescaling chain that joins the four tables into the rating."""
    rating = by_name[RATING]
    if rating["class_name"] != "Rescaling":
        return f"layer '{RATING}' is a {rating['class_name']}, not Rescaling"
    config = rating["config"]
    if not all(isinstance(config.get(k), (int, float)) for k in ("scale", "offset")):
        return f"layer '{RATING}' has a non-scalar scale or offset"
    chain = inputs_of(rating)
    if len(chain) != 1 or by_name.get(chain[0], {}).get("class_name") != "Activation":
        return f"layer '{RATING}' does not rescale a sigmoid Activation"
    sigmoid = by_name[chain[0]]
    if sigmoid["config"].get("activation") != "sigmoid":
        return f"activation '{sigmoid['name']}' is {sigmoid['config'].get('activation')!r}, not sigmoid"
    chain = inputs_of(sigmoid)
    if len(chain) != 1 or by_name.get(chain[0], {}).get("class_name") != "Add":
        return f"the sigmoid '{sigmoid['name']}' does not take an Add of the dot product and biases"
    add = by_name[chain[0]]
    terms = inputs_of(add)
    dots = [t for t in terms if by_name.get(t, {}).get("class_name") == "Dot"]
    if len(dots) != 1 or sorted(set(terms) - set(dots)) != sorted([USER_BIAS, MOVIE_BIAS]):
        return f"the Add '{add['name']}' is not dot + {USER_BIAS} + {MOVIE_BIAS}"
    if len(terms) != 3:
        return f"the Add '{add['name']}' adds {len(terms)} terms, not 3"
    dot = by_name[dots[0]]
    if dot["config"].get("normalize"):
        return f"the Dot '{dot['name']}' normalises its inputs (cosine similarity)"
    if dot["config"].get("axes") not in (1, -1, [1, 1], [-1, -1]):
        return f"the Dot '{dot['name']}' contracts axes {dot['config'].get('axes')}, not 1"
    if sorted(inputs_of(dot)) != sorted([USER_EMBEDDING, MOVIE_EMBEDDING]):
        return f"the Dot '{dot['name']}' is not {USER_EMBEDDING} . {MOVIE_EMBEDDING}"
    return None


def standard_problem(config: dict) -> str | None:
    """What makes a model's config differ from the standard architecture, or None when it is it.

    Args:
        config: a functional model's config, as model.get_config() returns it (the `config` entry
            of a .keras file's config.json).

    Returns:
        One phrase naming the first difference found, e.g. "layer 'dense' (Dense) is not part of
        it", or None.
    """
    layers = config.get("layers")
    if not isinstance(layers, list):
        return "it is not a functional model of layers"
    by_name = {layer["name"]: layer for layer in layers}
    for layer in layers:
        if layer["class_name"] not in KNOWN_CLASSES:
            return f"layer '{layer['name']}' ({layer['class_name']}) is not part of it"
        if layer.get("config", {}).get("trainable") is False:
            return f"layer '{layer['name']}' is frozen (trainable=False)"
        if layer["class_name"] != "InputLayer" and _dtype(layer["config"]) != "float32":
            return f"layer '{layer['name']}' computes in {_dtype(layer['config'])}, not float32"
        if len(layer.get("inbound_nodes", [])) > 1:
            return f"layer '{layer['name']}' is called more than once"
    for name in (*TABLES, RATING):
        if name not in by_name:
            return f"it has no layer named '{name}'"
    for name, (source, role) in TABLE_ROLES.items():
        layer = by_name[name]
        if layer["class_name"] != "Embedding":
            return f"layer '{name}' is a {layer['class_name']}, not an Embedding"
        if inputs_of(layer) != [source]:
            return f"layer '{name}' does not read the '{source}' input"
        problem = _table_problem(layer, role)
        if problem:
            return problem
    dim = {by_name[USER_EMBEDDING]["config"]["output_dim"]}
    if dim != {by_name[MOVIE_EMBEDDING]["config"]["output_dim"]}:
        return "the user and movie embeddings have different lengths"
    problem = _wiring_problem(by_name)
    if problem:
        return problem
    # Layers outside the chain rating <- sigmoid <- add <- dot/biases <- tables <- inputs.
    core = _chain(by_name)
    for layer in layers:
        if layer["name"] not in core:
            return f"layer '{layer['name']}' ({layer['class_name']}) is not part of it"
    outputs = config.get("output_layers")
    if _names(outputs) != [RATING]:
        return f"its output is {_names(outputs)}, not the '{RATING}' layer alone"
    if sorted(_names(config.get("input_layers"))) != sorted([USER_INPUT, MOVIE_INPUT]):
        return f"its inputs are not exactly '{USER_INPUT}' and '{MOVIE_INPUT}'"
    return None


def _chain(by_name: dict[str, dict]) -> set[str]:
    """Every layer the rating layer depends on, itself included."""
    seen, todo = set(), [RATING]
    while todo:
        name = todo.pop()
        if name in seen or name not in by_name:
            continue
        seen.add(name)
        todo.extend(inputs_of(by_name[name]))
    return seen


def _names(spec: Any) -> list[str]:
    """Layer names of a config's input_layers / output_layers (a list, a dict or one entry)."""
    if isinstance(spec, dict):
        return [entry[0] for entry in spec.values()]
    if isinstance(spec, list) and spec and isinstance(spec[0], str):
        return [spec[0]]
    return [entry[0] for entry in spec or []]
