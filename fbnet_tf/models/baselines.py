"""The paper's "(3x) VGG-FACE single-task" baselines as configs of the same machinery.

A baseline is FaceBehaviorNet with one head (`model.tasks=[task]`): the trainer then reads only that task's stream,
masks the other tasks' targets and skips their losses and metrics. No separate model or training code exists.

    python -m fbnet_tf.train --experiment single_task_expr --run-dir runs/expr_only
"""
from __future__ import annotations

SINGLE_TASK = {"va": "single_task_va", "expr": "single_task_expr", "au": "single_task_au"}

SINGLE_TASK_EXPERIMENTS: dict[str, dict] = {
    name: {"model": {"tasks": [task]}, "loss": {"coupling": "none"}} for task, name in SINGLE_TASK.items()
}


def single_task_experiment(task: str) -> str:
    """The experiment name of the single-task baseline for `task` ("va", "expr" or "au")."""
    if task not in SINGLE_TASK:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(SINGLE_TASK)}")
    return SINGLE_TASK[task]
