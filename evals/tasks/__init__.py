"""Task specs (prompt generators, metrics, reference circuits) as validated data.

>>> from evals.tasks import load_task
>>> load_task("toy-ioi").model
'toy-ioi'
"""

from evals.tasks.errors import TaskSpecError, TokenizationError
from evals.tasks.metrics import accuracy, logit_diff
from evals.tasks.spec import (
    ReferenceEntry,
    TaskSpec,
    list_tasks,
    load_spec_file,
    load_task,
    map_reference,
    spec_from_yaml,
)

__all__ = ["ReferenceEntry", "TaskSpec", "TaskSpecError", "TokenizationError", "accuracy", "list_tasks",
           "load_spec_file", "load_task", "logit_diff", "map_reference", "spec_from_yaml"]
