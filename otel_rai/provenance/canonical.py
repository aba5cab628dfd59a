"""Writing the parameters of a model record: ``get_params(deep=True)`` as canonical JSON, without training
data.

The canonical form of an estimator is ``{"class": "module.Qualname", "params": {name: value}}`` with its
``get_params(deep=False)``; a value that is an estimator takes the same form, recursively, so the tree
holds exactly what ``get_params(deep=True)`` lists: its key ``clf__C`` is ``params.clf.params.C``, and
``prep__scale__with_mean`` finds the part named ``scale`` in the ``(name, estimator, ...)`` list of a
composition (`flatten` gives the ``deep=True`` keys back). Other values:

* None, bools, strings, ints and finite floats as themselves (numpy scalars become Python ones);
* lists and tuples as arrays; dicts with string keys as objects; other dicts as
  ``{"type": "dict", "items": [[key, value], ...]}``; sets as ``{"type": "set", "items": [...]}``;
* classes and functions as ``{"type": "class" | "function", "repr": "module.qualname"}``;
* anything else as ``{"type": "module.Qualname", "repr": repr(value)}`` (memory addresses removed,
  at most `MAX_REPR` characters), for values of the libraries in `REPR_MODULES`.

Object keys are sorted, so one configuration always gives the same text.

**No raw training value.** Hyperparameters are configuration, recorded as given. Values that are, or
may well be, data are replaced by ``{"type": ..., "redacted": true, "digest": ...}`` (a keyed BLAKE2b of
the value under the input hash key, so ``otel-rai model diff`` still sees a change, plus its shape or
length):

* every array-like value (numpy, pandas, sparse): initial centroids, reference rows, masks;
* the values of the parameters in `DATA_PARAMETERS` (category levels, vocabularies, fill values,
  keyword arguments of user functions, initial points), unless they are None, a bool, a function, an
  estimator or one of the mode words in `MODE_WORDS` (``"auto"``, ``"first"``, ``"k-means++"``, ...);
* objects of other libraries, whose ``repr`` could print anything (``functools.partial`` included).

Column names and selectors, class labels (``class_weight``) and feature names are configuration: the
decision spans carry them already.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

import numpy as np

from otel_rai.audit.hashing import HashKey
from otel_rai.capture.fingerprint import feed
from otel_rai.provenance.params import dumps, qualname

#: Parameters whose values are domain data (feature values, levels, words, points), not settings.
DATA_PARAMETERS = frozenset({
    "categories",  # OneHotEncoder, OrdinalEncoder, TargetEncoder: the levels of each feature
    "drop",  # OneHotEncoder: levels to drop
    "fill_value",  # SimpleImputer: the value written into missing cells
    "vocabulary",  # CountVectorizer, TfidfVectorizer: the words
    "stop_words",  # the same, a custom word list
    "classes",  # MultiLabelBinarizer: the labels
    "kw_args", "inv_kw_args",  # FunctionTransformer: whatever the user's function takes
    "init", "means_init", "precisions_init", "weights_init",  # KMeans, GaussianMixture: initial points
    "quantiles",  # a custom list of cut points
})
#: The words that the parameters of `DATA_PARAMETERS` take as modes, not as data.
MODE_WORDS = frozenset({
    "auto", "first", "if_binary", "english", "k-means++", "random", "random_from_data", "kmeans", "k-means",
    "nndsvd", "nndsvda", "nndsvdar", "custom", "pca", "zero", "warn",
})
#: Top-level modules whose objects' ``repr`` is recorded (they print settings, not data).
REPR_MODULES = frozenset({
    "builtins", "numpy", "scipy", "sklearn", "xgboost", "lightgbm", "pandas", "re", "datetime", "decimal",
    "fractions", "enum",
})
#: Longest ``repr`` recorded; longer ones are cut and end with "…".
MAX_REPR = 200

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_PERSON = b"otel-rai.param"
_DIGEST_SIZE = 16


def is_estimator(value: Any) -> bool:
    """Whether `value` is an estimator instance (it has ``get_params``; a class is not one)."""
    return hasattr(value, "get_params") and not isinstance(value, type)


def canonical(model: Any, key: HashKey) -> dict[str, Any]:
    """``{"class": ..., "params": ...}`` of `model`, recursively (see the module docstring)."""
    return _Canonical(key).estimator(model)


class _Canonical:
    def __init__(self, key: HashKey) -> None:
        self._key = key
        self._visiting: set[int] = set()

    def estimator(self, model: Any) -> dict[str, Any]:
        """``{"class", "params"}`` of an estimator, its parameters in canonical form."""
        if id(model) in self._visiting:  # a parameter that points back at its owner
            return {"type": qualname(type(model)), "repr": "<cycle>"}
        self._visiting.add(id(model))
        try:
            params = model.get_params(deep=False)
            return {"class": qualname(type(model)),
                    "params": {str(k): self.value(v, str(k) in DATA_PARAMETERS) for k, v in params.items()}}
        finally:
            self._visiting.discard(id(model))

    def value(self, v: Any, data: bool = False) -> Any:
        """The canonical form of one parameter value; `data`: the parameter is one of `DATA_PARAMETERS`."""
        if v is None or isinstance(v, (bool, np.bool_)):
            return None if v is None else bool(v)
        if is_estimator(v):
            return self.estimator(v)
        if isinstance(v, type):
            return {"type": "class", "repr": qualname(v)}
        if callable(v) and hasattr(v, "__qualname__") and not hasattr(v, "shape"):
            return {"type": "function", "repr": f"{getattr(v, '__module__', None) or ''}.{v.__qualname__}"}
        if _array_like(v) or (data and not (isinstance(v, str) and v in MODE_WORDS)):
            return self.redacted(v)
        if isinstance(v, (str, np.str_)):
            return str(v)
        if isinstance(v, (int, np.integer)):
            return int(v)
        if isinstance(v, (float, np.floating)):
            f = float(v)
            return f if math.isfinite(f) else {"type": "float", "repr": repr(f)}
        if isinstance(v, (list, tuple)):
            return [self.value(x) for x in v]
        if isinstance(v, dict):
            if all(isinstance(k, str) for k in v):
                return {k: self.value(x) for k, x in v.items()}
            items = sorted(([self.value(k), self.value(x)] for k, x in v.items()), key=dumps)
            return {"type": "dict", "items": items}
        if isinstance(v, (set, frozenset)):
            return {"type": "set", "items": sorted((self.value(x) for x in v), key=dumps)}
        if type(v).__module__.split(".")[0] in REPR_MODULES:
            text = _ADDRESS.sub("", repr(v))
            return {"type": qualname(type(v)), "repr": text if len(text) <= MAX_REPR else text[: MAX_REPR - 1] + "…"}
        return self.redacted(v)

    def redacted(self, v: Any) -> dict[str, Any]:
        """What stands for a value that may be data: its type, size and keyed digest."""
        h = hashlib.blake2b(key=self._key.secret, digest_size=_DIGEST_SIZE, person=_PERSON)
        feed(h, _plain(v))
        out: dict[str, Any] = {"type": qualname(type(v)), "redacted": True, "digest": h.hexdigest()}
        shape = getattr(v, "shape", None)
        if isinstance(shape, tuple):
            out["shape"] = [int(n) for n in shape]
        elif hasattr(v, "__len__") and not isinstance(v, (str, bytes)):
            out["length"] = len(v)
        return out


def _array_like(v: Any) -> bool:
    if isinstance(v, (str, bytes, np.generic)):
        return False
    return hasattr(v, "__array__") or (hasattr(v, "shape") and hasattr(v, "dtype"))


def _plain(v: Any) -> Any:
    """A value the fingerprint's byte stream covers fully: frames and sparse matrices as arrays."""
    if hasattr(v, "to_numpy"):
        return v.to_numpy()
    if hasattr(v, "toarray"):
        return v.toarray()
    return v


