"""interp-agent tools: model loading and interventions over Hugging Face causal LMs.

>>> from tools import Component, load_model, patch
>>> str(Component.parse("L0H1"))
'L0H1'
"""

from tools.batch import TaskBatch
from tools.components import Component, Kind, parse_components
from tools.errors import ArchitectureError, BatchError, ComponentError, InterpAgentError, InterventionError
from tools.interventions import (
    ablate,
    attribution_patching,
    patch,
    patching_sweep,
    path_patch,
    position_mask,
    run_with_cache,
    run_with_interventions,
)
from tools.metrics import accuracy, get_metric, kl_to_clean, logit_diff, prob_correct
from tools.model import Model, load_model

__all__ = [
    "ArchitectureError", "BatchError", "Component", "ComponentError", "InterpAgentError", "InterventionError",
    "Kind", "Model", "TaskBatch", "ablate", "accuracy", "attribution_patching", "get_metric", "kl_to_clean",
    "load_model", "logit_diff", "parse_components", "patch", "path_patch", "patching_sweep", "position_mask",
    "prob_correct", "run_with_cache", "run_with_interventions",
]
