r"""Evaluate a saved classifier on a dataset split (the metrics of docs/method.md#metrics).

  python -m m2m_tf.evaluate --dataset=cifar10_jpeg_lt \
      --checkpoint=../shared/pretrained/official_erm_resnet32_cifar10lt_r100.npz \
      --output=results/official_g_cifar10_jpeg.json

  python -m m2m_tf.evaluate --checkpoint=runs/reuters_m2m   # a run folder

The checkpoint may be a PyTorch-layout `.npz` state_dict (loaded with
`m2m_tf.models.load_torch_state_dict`, e.g. the official M2m g), a Keras
`.weights.h5` file (e.g. `best_f.weights.h5` of a run), a SavedModel
directory written by a run (`saved_model/`, its `serve` endpoint gives logits),
or a run folder (one with flags.json): its saved_model/, else its
best_f.weights.h5. A run's flags.json (beside the checkpoint) gives the
defaults of --dataset, its options, --data_dir and the LDAM cosine head.
The architecture defaults to the dataset's recipe. Metrics are those of
`m2m_tf.metrics.summarize` (bACC, GM with the 0.001 correction, per-class
recall, ...), with class counts = the training counts N_k; the result carries
the dataset's substitute label (e.g. the CIFAR-10 JPEG substitute).

Writes `--output` (JSON) and the same name with `.md` (a short table). Uses
argparse: only `m2m_tf.main` reads absl FLAGS.

A missing checkpoint, or one that does not fit the dataset (another input
shape or number of classes), is reported in one line (exit status 1).
"""

import argparse
import os
import sys
import time
from typing import Optional, Sequence, Tuple

import numpy as np

from m2m_tf.errors import CheckpointError
from m2m_tf.io_utils import read_json

SPLITS = ("test", "val", "train")
# What a run folder holds, in the order evaluated (the SavedModel needs no --arch).
RUN_CHECKPOINTS = ("saved_model", "best_f.weights.h5")


def resolve_checkpoint(path: str) -> Tuple[str, dict]:
  """The file or SavedModel to load for `path`, and its run's flags.json.

  Args:
    path: a checkpoint file, a SavedModel directory, or a run folder (one
      holding flags.json and saved_model/ or best_f.weights.h5).

  Returns:
    (checkpoint path, the run's configuration as {leaf name: value}, or {}
    when there is no flags.json in the run folder or beside the checkpoint).

  Raises:
    FileNotFoundError: `path` does not exist, or a run folder has no model.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint not found: {path!r}")
  run_dir = os.path.dirname(os.path.abspath(path))
  checkpoint = path
  if os.path.isdir(path) and os.path.isfile(os.path.join(path, "flags.json")):
    run_dir = path
    found = [os.path.join(path, n) for n in RUN_CHECKPOINTS
             if os.path.exists(os.path.join(path, n))]
    if not found:
      raise FileNotFoundError(f"run folder {path!r} has neither saved_model/ nor best_f.weights.h5 "
                              "(an unfinished run?)")
    checkpoint = found[0]
  from m2m_tf.run_records import flatten_record  # pylint: disable=g-import-not-at-top
  return checkpoint, flatten_record(read_json(os.path.join(run_dir, "flags.json")) or {})


def _saved_model_shapes(loaded) -> Optional[Tuple[tuple, Optional[int]]]:
  """(input shape without the batch axis, number of classes) of a Keras export, or None."""
  try:
    in_shape = tuple(loaded.serve.input_signature[0].shape[1:])
    outputs = list(loaded.signatures["serving_default"].structured_outputs.values())
  except (AttributeError, KeyError, IndexError, TypeError):
    return None  # not a Keras export: nothing to check before calling it
  k = outputs[0].shape[-1] if len(outputs) == 1 else None
  return in_shape, k


def _check_saved_model(loaded, checkpoint, data_name, input_shape, num_classes) -> None:
  """Raises CheckpointError when a SavedModel's signature does not fit the dataset."""
  from m2m_tf.models import weights_io  # pylint: disable=g-import-not-at-top
  shapes = _saved_model_shapes(loaded)
  if shapes is None:
    return
  in_shape, k = shapes
  fits_input = len(in_shape) == len(input_shape) and all(
      a is None or int(a) == int(b) for a, b in zip(in_shape, input_shape))
  if not fits_input or (k is not None and int(k) != num_classes):
    raise weights_io.mismatch_error(checkpoint, data_name, in_shape, k, input_shape, num_classes)


def _build(arch, input_shape, num_classes, normed_head, hidden_units, normalization):
  """The Keras model for `arch`; a CheckpointError when it cannot take the dataset's inputs."""
  from m2m_tf import models  # pylint: disable=g-import-not-at-top
  try:
    return models.build_classifier(arch, input_shape, num_classes, normed_head=normed_head,
                                   hidden_units=hidden_units, normalization=normalization)
  except ValueError as e:  # unknown arch, or inputs of the wrong rank or channels
    raise CheckpointError(str(e)) from e


def load_classifier(checkpoint: str, *, arch: str, input_shape, num_classes: int,
                    normed_head: bool = False, hidden_units=None, data_name: str = "?",
                    normalization=None):
  """Returns a callable `logits = fn(x_float01_batch)` for `checkpoint`.

  Args:
    checkpoint: `.npz` (PyTorch layout), `.weights.h5`, or a SavedModel dir.
    arch: architecture name for `.npz` / `.weights.h5` (m2m_tf.models).
    input_shape: one example's shape.
    num_classes: K.
    normed_head: the cosine head of LDAM models.
    hidden_units: the MLP's hidden layer sizes (None: the builder's default).
    data_name: the dataset's name, for error messages.
    normalization: (mean, std) the model standardises its input with (the
      runs on your own data build it in; None: none).

  Raises:
    FileNotFoundError: no such file or directory.
    CheckpointError (a ValueError): an unknown checkpoint kind, or a
      checkpoint whose input shape, number of classes or layers do not fit.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from m2m_tf.models import weights_io  # pylint: disable=g-import-not-at-top
  if not os.path.exists(checkpoint):
    raise FileNotFoundError(f"checkpoint not found: {checkpoint!r}")
  if os.path.isdir(checkpoint):
    if not os.path.isfile(os.path.join(checkpoint, "saved_model.pb")):
      raise CheckpointError(f"{checkpoint!r} is neither a SavedModel (no saved_model.pb) nor a "
                            "run folder (no flags.json)")
    loaded = tf.saved_model.load(checkpoint)
    if not hasattr(loaded, "serve"):
      raise CheckpointError(f"SavedModel {checkpoint!r} has no `serve` endpoint")
    _check_saved_model(loaded, checkpoint, data_name, input_shape, num_classes)
    return lambda x: loaded.serve(tf.convert_to_tensor(x, tf.float32))
  if not checkpoint.endswith((".npz", ".weights.h5")):
    raise CheckpointError(f"checkpoint {checkpoint!r} must be a .npz file, a .weights.h5 file, "
                          "a SavedModel directory or a run folder")
  model = _build(arch, input_shape, num_classes, normed_head, hidden_units, normalization)
  weights_io.load_weights(model, checkpoint, data_name)
  fn = tf.function(lambda x: model(x, training=False))
  return lambda x: fn(tf.convert_to_tensor(x, tf.float32))


def predict(logits_fn, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
  """argmax predictions over `x` (uint8 images are scaled to [0, 1])."""
  from m2m_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  preds = []
  for xb in pipeline.eval_dataset(x, batch_size=batch_size):
    preds.append(np.argmax(np.asarray(logits_fn(xb)), axis=-1))
  return np.concatenate(preds) if preds else np.zeros(0, np.int64)


def _normalization(data, arch: str):
  """Your own data's input standardisation, which its runs build into the model (weight files
  do not hold it: it has no weights); None for the paper's datasets and SavedModels."""
  from data_prep import user_recipe  # pylint: disable=g-import-not-at-top
  return None if arch == "saved_model" else user_recipe.model_normalization(data.name, data)


def _hidden_units(dataset: str, arch: str, run_flags: dict):
  """The MLP hidden sizes: the run's, else the dataset recipe's (None: not an MLP)."""
  from m2m_tf.recipes import RECIPES  # pylint: disable=g-import-not-at-top
  if arch != "mlp":
    return None
  if run_flags.get("hidden_units"):
    return tuple(run_flags["hidden_units"])
  return RECIPES[dataset].hidden_units if dataset in RECIPES else None


def evaluate_checkpoint(checkpoint: str, data, *, arch: Optional[str] = None,
                        split: str = "test", batch_size: int = 1024,
                        normed_head: Optional[bool] = None) -> dict:
  """Evaluates `checkpoint` on `data` (a DatasetSplits) and returns a JSON-able dict.

  Args:
    checkpoint: see `resolve_checkpoint` (a file, a SavedModel or a run folder).
    data: the dataset.
    arch: the architecture (default: the dataset's recipe; unused for a SavedModel).
    split: one of SPLITS.
    batch_size: evaluation batch size.
    normed_head: the LDAM cosine head (default: the run's loss is LDAM).

  Returns:
    Keys: dataset, data_label, checkpoint, arch, split, n, bacc, gm, acc,
    n_zero_recall, per_class_recall, class_names, class_counts, summary (the
    full `metrics.summarize` dict) and seconds.
  """
  from m2m_tf import metrics  # pylint: disable=g-import-not-at-top
  from m2m_tf.recipes import get_recipe  # pylint: disable=g-import-not-at-top
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  t0 = time.time()
  checkpoint, run_flags = resolve_checkpoint(checkpoint)
  if normed_head is None:
    normed_head = run_flags.get("loss") == "ldam"
  # A SavedModel carries its own architecture; --arch applies to weight files only.
  arch = "saved_model" if os.path.isdir(checkpoint) else (
      arch or run_flags.get("arch") or get_recipe(data.name).arch)
  x, y = {"test": (data.x_test, data.y_test), "val": (data.x_val, data.y_val),
          "train": (data.x_train, data.y_train)}[split]
  fn = load_classifier(checkpoint, arch=arch, input_shape=data.input_shape,
                       num_classes=data.num_classes, normed_head=normed_head,
                       hidden_units=_hidden_units(data.name, arch, run_flags),
                       data_name=data.name, normalization=_normalization(data, arch))
  summary = metrics.summarize(y, predict(fn, x, batch_size), data.class_counts)
  return {"dataset": data.name, "data_label": data.label, "checkpoint": checkpoint,
          "arch": arch, "split": split, "n": int(len(y)),
          **{k: summary[k] for k in ("bacc", "gm", "acc", "n_zero_recall", "per_class_recall")},
          "class_names": list(data.class_names), "class_counts": data.class_counts.tolist(),
          "summary": summary, "seconds": time.time() - t0}


def markdown(result: dict) -> str:
  """A short Markdown report of an `evaluate_checkpoint` result."""
  lines = [f"# Evaluation of `{os.path.basename(result['checkpoint'])}`", ""]
  if result.get("data_label"):
    lines += [f"**Data: {result['data_label']}.**", ""]
  lines += [f"- dataset: `{result['dataset']}`, split `{result['split']}` "
            f"({result['n']} examples), arch `{result['arch']}`",
            f"- checkpoint: `{result['checkpoint']}`",
            f"- bACC {result['bacc']:.2f}%, GM {result['gm']:.2f}%, "
            f"accuracy {result['acc']:.2f}%, classes with zero recall: "
            f"{result['n_zero_recall']}", "",
            "| class | train N_k | recall (%) |", "|---|---|---|"]
  for name, n_k, r in zip(result["class_names"], result["class_counts"],
                          result["per_class_recall"]):
    lines.append(f"| {name} | {n_k} | {'-' if r is None else f'{r:.1f}'} |")
  return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
  """The command line (see the module docstring)."""
  parser = argparse.ArgumentParser(description="Evaluate a checkpoint (bACC, GM, per-class "
                                   "recall).")
  parser.add_argument("--dataset", default=None, help="default: the run's (flags.json)")
  parser.add_argument("--checkpoint", required=True,
                      help=".npz (PyTorch layout), .weights.h5, a SavedModel directory or a run "
                      "folder (flags.json + saved_model/ or best_f.weights.h5)")
  parser.add_argument("--arch", default=None, help="default: the dataset's recipe")
  parser.add_argument("--split", default="test", choices=SPLITS)
  parser.add_argument("--data_dir", default=None, help="default: the run's")
  parser.add_argument("--imbalance_ratio", type=float, default=None)
  parser.add_argument("--normed_head", action="store_true", default=None,
                      help="LDAM cosine head (default: the run's loss is LDAM)")
  parser.add_argument("--batch_size", type=int, default=1024)
  parser.add_argument("--output", default=None, help="JSON path (a .md is written beside it)")
  return parser


def _load_data(args, run_flags: dict):
  """The dataset to evaluate on: the flags', else the run's (with the run's options)."""
  from data_prep.registry import load_dataset  # pylint: disable=g-import-not-at-top
  dataset = args.dataset or run_flags.get("dataset")
  options = {k: run_flags[k] for k in ("imbalance_ratio", "vocab_size", "embeddings")
             if run_flags.get(k) is not None and dataset == run_flags.get("dataset")}
  if args.imbalance_ratio is not None:
    options["imbalance_ratio"] = args.imbalance_ratio
  return load_dataset(dataset, args.data_dir or run_flags.get("data_dir"), **options)


def _report(result: dict, output: Optional[str]) -> None:
  """Prints the metrics and writes `output` (JSON) and its .md when asked."""
  line = (f"{result['dataset']} {result['split']} ({result['n']}): bACC {result['bacc']:.2f} "
          f"GM {result['gm']:.2f} acc {result['acc']:.2f} zero-recall {result['n_zero_recall']}")
  if result["data_label"]:
    line += f" [{result['data_label']}]"
  print(line)
  print("per-class recall: " + ", ".join(
      f"{n} {'-' if r is None else f'{r:.1f}'}" for n, r in
      zip(result["class_names"], result["per_class_recall"])))
  if output:
    from m2m_tf.io_utils import atomic_write_json  # pylint: disable=g-import-not-at-top
    from m2m_tf.io_utils import atomic_write_text  # pylint: disable=g-import-not-at-top
    atomic_write_json(output, result)
    md = os.path.splitext(output)[0] + ".md"
    atomic_write_text(md, markdown(result))
    print(f"wrote {output} and {md}")


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Command line: see the module docstring. Returns the exit status."""
  parser = _parser()
  args = parser.parse_args(argv)
  try:
    checkpoint, run_flags = resolve_checkpoint(args.checkpoint)
  except FileNotFoundError as e:
    print(f"m2m_tf.evaluate: error: {e}", file=sys.stderr)
    return 1
  if not (args.dataset or run_flags.get("dataset")):
    parser.error("--dataset is required unless --checkpoint is in a run folder (with flags.json)")
  # Data errors (unknown dataset or option, missing raw files) are the user's to fix.
  try:
    data = _load_data(args, run_flags)
  except (FileNotFoundError, ValueError) as e:
    print(f"m2m_tf.evaluate: error: {e}", file=sys.stderr)
    return 1
  try:
    result = evaluate_checkpoint(checkpoint, data, arch=args.arch, split=args.split,
                                 batch_size=args.batch_size, normed_head=args.normed_head)
  except (FileNotFoundError, CheckpointError) as e:
    print(f"m2m_tf.evaluate: error: {e}", file=sys.stderr)
    return 1
  _report(result, args.output)
  return 0


if __name__ == "__main__":
  sys.exit(main())
