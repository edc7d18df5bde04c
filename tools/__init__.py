"""interp-agent tools: model loading and interventions over Hugging Face causal LMs.

>>> from tools import Component, load_model, patch
>>> str(Component.parse("L0H1"))
'L0H1'
"""

from tools import experiments  # kernel cells call tools.experiments.*
from tools.batch import TaskBatch
from tools.components import Component, Kind, parse_components
from tools.errors import ArchitectureError, BatchError, ComponentError, InterpAgentError, InterventionError
from tools.inspection import (
    AttentionSummary,
    HeadScores,
    attention_patterns,
    attention_summary,
    direct_logit_attribution,
    head_scores,
    logit_lens,
)
from tools.interventions import (
    ablate,
    ablation_sweep,
    attribution_ablation,
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
from tools.permute import map_components, permute_heads
from tools.probe import ProbeResult, activations, diff_of_means_vector, steer, train_probe

__all__ = [
    "ArchitectureError", "AttentionSummary", "BatchError", "Component", "ComponentError", "HeadScores",
    "InterpAgentError", "InterventionError", "Kind", "Model", "ProbeResult", "TaskBatch", "ablate", "ablation_sweep",
    "accuracy", "attribution_ablation",
    "activations", "attention_patterns", "attention_summary", "attribution_patching", "diff_of_means_vector",
    "direct_logit_attribution", "experiments", "get_metric", "head_scores", "kl_to_clean", "load_model", "logit_diff",
    "logit_lens", "map_components", "parse_components", "patch", "patching_sweep", "path_patch",
    "permute_heads", "position_mask", "prob_correct", "run_with_cache", "run_with_interventions", "steer",
    "train_probe",
]
