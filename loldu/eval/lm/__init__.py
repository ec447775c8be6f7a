"""lm-evaluation-harness benchmarks of a finished language-model run.

    python -m loldu.eval.lm RUN_DIR [--tasks paper|name[:shots],...] [--limit N]
        [--include-path DIR] [--batch-size N] [--device cpu|cuda]
        [--dtype auto|bfloat16|float32] [--allow-code-execution] [--out FILE]

``RUN_DIR`` is a run folder of ``train.py`` (it holds ``config.yaml``; its merged
model ``RUN_DIR/merged`` is written first if missing) or directly a Hugging
Face model folder (``config.json`` and tokenizer files). Results go to
``RUN_DIR/benchmarks.json`` unless ``--out`` says otherwise.

The paper's suite (:data:`PAPER_SUITE`), for instruction-tuned LLaMA2-7B, in
lm-eval 0.4.13 task names. The shot counts are those of the InstructEval suite
(MMLU 5, BBH 3, DROP 3, HumanEval 0), whose BBH prompts are answer-only:

* ``mmlu``, 5-shot (accuracy; few-shot examples are the dev split, in order).
* ``bbh_fewshot``, 3-shot: the 27 BIG-Bench Hard subtasks, each with three
  answer-only exemplars built into its YAML, scored by exact match of the
  direct answer. ``bbh_cot_fewshot`` uses chain-of-thought exemplars and
  ``bbh`` is an alias group of those, so neither is the matching task.
  Differences that remain: lm-eval's exemplars and "Q:/A:" format are the
  BBH paper's, and its group score is weighted by subtask size, where
  InstructEval takes the first three test items as exemplars, counts a
  prediction that starts with the target, and averages subtasks unweighted.
* ``drop``, 3-shot (exact match and F1; few-shot examples from the train split).
* ``humaneval``, 0-shot pass@1 with greedy decoding. It runs model-written
  code: it needs ``--allow-code-execution`` (which sets ``HF_ALLOW_CODE_EVAL=1``
  and confirms lm-eval's unsafe-code prompt); use a sandbox.

Prompts are given as plain text without a chat template, as in the paper's
evaluation. Everything (model folder, task names, unsafe tasks) is checked
before lm-eval loads the model or any data.

``benchmarks/lm_eval_tasks`` holds a small offline task (``loldu_local_mc``,
multiple choice; ``loldu_local_gen``, the same items as short generation):
``--tasks loldu_local_mc:2 --include-path benchmarks/lm_eval_tasks``.
"""

from loldu.eval.lm.cli import main, run_benchmarks
from loldu.eval.lm.tasks import PAPER_SUITE, parse_tasks

__all__ = ["PAPER_SUITE", "main", "parse_tasks", "run_benchmarks"]
