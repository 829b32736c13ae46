"""Training with LLaMA-Factory: YAML generation, launch, results, write-back and run history.

``run_training`` is the entry point the Kedro train node calls; the modules below are usable alone:
``lf_args`` (argument-name checks), ``yaml_gen`` (the training YAML and output-dir rules), ``launch``
(the ``llamafactory-cli`` launcher), ``wandb_setup``, ``results`` and ``history``.
"""

from sft.train.run import TrainingError, run_training

__all__ = ["TrainingError", "run_training"]
