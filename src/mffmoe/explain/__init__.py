"""Where the experts look: class-activation maps of the "fake" class, combined into one ensemble map and
placed back on the original image (`explain_result`, a post-pass over a finished result).

A map shows where the evidence that moved the score lies, not proof that a region was manipulated.
Nothing here is imported by the scoring path: without an explanation asked for, torch and captum are
not touched (lazy exports).
"""
from mffmoe._util.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "explain_result": "mffmoe.explain.explainer",
    "explained": "mffmoe.explain.explainer",
    "ExplainOptions": "mffmoe.explain.base",
    "Explainer": "mffmoe.explain.explainer",
    "Explanation": "mffmoe.results",
    "ExplainedItem": "mffmoe.results",
    "full_size_map": "mffmoe.explain.placement",
    "Placement": "mffmoe.explain.placement",
    "METHODS": "mffmoe.explain.base",
})
