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

  python -m m2m_tf.evaluate --checkpoint=runs/reuters_ce_erm_s0 --posthoc_tau=select

Post-hoc logit adjustment (Menon et al. 2021; `m2m_tf.logit_adjustment`) of a
finished run folder, SavedModel or weights file: predicts argmax(z - tau log pi)
on val and test, pi the training prior. `--posthoc_tau=select` chooses tau from
0, 0.25, ..., 2.0 on validation bACC before the test split is read; a number
fixes it. The result (raw and adjusted metrics, the validation curve) goes to
posthoc_la.json in the run folder (or `--output`), written atomically; the
run's own files are only read.

A missing checkpoint, or one that does not fit the dataset (another input
shape or number of classes), is reported in one line (exit status 1).
"""

import argparse
import os
import sys
import time
from typing import Optional, Sequence, Tuple

import numpy as np

from m2m_tf import logit_adjustment as la
from m2m_tf import metrics
from m2m_tf.errors import CheckpointError
from m2m_tf.io_utils import atomic_write_json, atomic_write_text, read_json
from m2m_tf.recipes import get_recipe
from m2m_tf.run_records import NAMED_DATA_OPTIONS, flatten_record
from m2m_tf.training.output_dir import OUR_ENTRIES, POSTHOC_FILE, RESULTS_FILE

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


def predict_logits(logits_fn, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
  """The logits [N, K] of `logits_fn` over `x`, in order (uint8 images are scaled to [0, 1]);
  [0, 0] for an empty `x`."""
  from m2m_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  out = [np.asarray(logits_fn(xb)) for xb in pipeline.eval_dataset(x, batch_size=batch_size)]
  return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def predict(logits_fn, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
  """argmax predictions over `x` (uint8 images are scaled to [0, 1])."""
  logits = predict_logits(logits_fn, x, batch_size)
  return np.argmax(logits, axis=-1) if len(logits) else np.zeros(0, np.int64)


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


def _logits_fn(checkpoint: str, run_flags: dict, data, arch: Optional[str],
               normed_head: Optional[bool]):
  """(logits function, arch) of a resolved checkpoint: a SavedModel carries its own
  architecture (arch "saved_model"); a weights file takes `arch`, else the run's, else the
  recipe's, and the cosine head when the run's loss is LDAM (unless `normed_head` says)."""
  if normed_head is None:
    normed_head = run_flags.get("loss") == "ldam"
  arch = "saved_model" if os.path.isdir(checkpoint) else (
      arch or run_flags.get("arch") or get_recipe(data.name).arch)
  fn = load_classifier(checkpoint, arch=arch, input_shape=data.input_shape,
                       num_classes=data.num_classes, normed_head=normed_head,
                       hidden_units=_hidden_units(data.name, arch, run_flags),
                       data_name=data.name, normalization=_normalization(data, arch))
  return fn, arch


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
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  t0 = time.time()
  checkpoint, run_flags = resolve_checkpoint(checkpoint)
  fn, arch = _logits_fn(checkpoint, run_flags, data, arch, normed_head)
  x, y = {"test": (data.x_test, data.y_test), "val": (data.x_val, data.y_val),
          "train": (data.x_train, data.y_train)}[split]
  summary = metrics.summarize(y, predict(fn, x, batch_size), data.class_counts)
  return {"dataset": data.name, "data_label": data.label, "checkpoint": checkpoint,
          "arch": arch, "split": split, "n": int(len(y)),
          **{k: summary[k] for k in ("bacc", "gm", "acc", "n_zero_recall", "per_class_recall")},
          "class_names": list(data.class_names), "class_counts": data.class_counts.tolist(),
          "summary": summary, "seconds": time.time() - t0}


def posthoc_adjust(logits_fn, data, tau, *, scale: float = 1.0, batch_size: int = 1024) -> dict:
  """Post-hoc logit adjustment (`m2m_tf.logit_adjustment`) of a classifier on val and test.

  The validation split is predicted and tau chosen on its bACC BEFORE the test split is read:
  the test split never takes part in the choice.

  Args:
    logits_fn: a batch of inputs -> logits (`load_classifier`).
    data: a DatasetSplits; its training class counts are the prior pi.
    tau: la.SELECT (the grid la.TAU_GRID, best validation bACC, ties to the smallest tau) or
      a fixed tau >= 0.
    scale: the logit scale of the run's loss (`logit_scale`).
    batch_size: evaluation batch size.
  Returns:
    tau, mode ("select" or "fixed"), logit_scale, log_prior, the metrics of
    `metrics.summarize` at tau ("val", "test") and at tau 0 ("val_raw", "test_raw"),
    val_bacc, val_gm, test_bacc, test_gm at tau; with "select", also grid,
    grid_val_bacc (aligned with grid) and tied_taus.
  """
  counts = data.class_counts
  val, y_val = predict_logits(logits_fn, data.x_val, batch_size), data.y_val
  out = {"mode": "fixed", "logit_scale": scale, "log_prior": la.log_prior(counts).tolist()}
  if tau == la.SELECT:
    chosen = la.select_tau(val, y_val, counts, scale=scale)
    tau = chosen.tau
    out.update(mode=la.SELECT, grid=list(chosen.grid), grid_val_bacc=list(chosen.val_bacc),
               tied_taus=list(chosen.tied))
  tau = la.check_tau(tau)
  test = predict_logits(logits_fn, data.x_test, batch_size)  # read only once tau is fixed
  for name, z, y in (("val", val, y_val), ("test", test, data.y_test)):
    out[name] = metrics.summarize(y, la.predictions(z, counts, tau, scale), counts)
    out[name + "_raw"] = metrics.summarize(y, la.predictions(z, counts, 0.0, scale), counts)
  out.update({f"{split}_{m}": out[split][m] for split in ("val", "test") for m in ("bacc", "gm")})
  return dict(out, tau=tau)


def logit_scale(run_flags: dict) -> float:
  """The scale the run's loss put on f's logits before its softmax: LDAM's s (its f gives
  cosines), else 1. Post-hoc adjustment applies to the logits so scaled."""
  if run_flags.get("loss") == "ldam":
    return float(run_flags.get("ldam_scale") or 30.0)
  return 1.0


def _run_dir(path: str, checkpoint: str) -> str:
  """The run folder `path`, else the folder of the resolved checkpoint."""
  if os.path.isdir(path) and os.path.isfile(os.path.join(path, "flags.json")):
    return path
  return os.path.dirname(os.path.abspath(checkpoint))


def posthoc_output(path: str, checkpoint: str, output: Optional[str] = None) -> str:
  """Where post-hoc results go: `output`, else POSTHOC_FILE in the run folder (or beside a
  checkpoint that is in none).

  Raises:
    CheckpointError: the path names a file of a run's own (results.json, flags.json, ...).
  """
  target = output or os.path.join(_run_dir(path, checkpoint), POSTHOC_FILE)
  name = os.path.basename(os.path.normpath(target))
  if name in OUR_ENTRIES and name != POSTHOC_FILE:
    raise CheckpointError(f"{target!r} is a run's own {name}; post-hoc results never replace it "
                          "(choose another --output)")
  return target


def _check_finished(run_dir: str, data) -> None:
  """A run folder must be finished (results.json: its best f no longer changes) and trained
  on the data's class counts (they are the prior)."""
  if not os.path.isfile(os.path.join(run_dir, "flags.json")):
    return  # a checkpoint outside any run folder
  results = read_json(os.path.join(run_dir, RESULTS_FILE))
  if results is None:
    raise CheckpointError(f"run folder {run_dir!r} has no {RESULTS_FILE}: post-hoc adjustment "
                          "needs a finished run")
  counts = results.get("class_counts")
  if counts is not None and list(counts) != data.class_counts.tolist():
    raise CheckpointError(f"run folder {run_dir!r} was trained with class counts {counts}, the "
                          f"data has {data.class_counts.tolist()}: another dataset or option?")


def posthoc_checkpoint(path: str, data, tau, *, arch: Optional[str] = None,
                       batch_size: int = 1024, normed_head: Optional[bool] = None) -> dict:
  """`posthoc_adjust` of a finished run folder, a SavedModel (its `serve` logits) or a weights
  file (see `resolve_checkpoint`); the run's files are only read.

  Returns:
    `posthoc_adjust`'s dict with dataset, data_label, checkpoint, run_dir, arch, class_names,
    class_counts, the run's loss and seconds.
  Raises:
    FileNotFoundError: no such checkpoint.
    CheckpointError: an unfinished run, another dataset's run or checkpoint.
  """
  t0 = time.time()
  checkpoint, run_flags = resolve_checkpoint(path)
  run_dir = _run_dir(path, checkpoint)
  _check_finished(run_dir, data)
  fn, arch = _logits_fn(checkpoint, run_flags, data, arch, normed_head)
  out = posthoc_adjust(fn, data, tau, scale=logit_scale(run_flags), batch_size=batch_size)
  return dict(out, dataset=data.name, data_label=data.label, checkpoint=checkpoint,
              run_dir=run_dir, arch=arch, run_loss=run_flags.get("loss"),
              class_names=list(data.class_names), class_counts=data.class_counts.tolist(),
              seconds=time.time() - t0)


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
  parser.add_argument("--output", default=None, help="JSON path (a .md is written beside it; "
                      "with --posthoc_tau, default: posthoc_la.json in the run folder)")
  parser.add_argument("--posthoc_tau", default=None,
                      help="post-hoc logit adjustment (z - tau log pi, Menon et al. 2021) of a "
                      "finished run on val and test: 'select' (tau of 0, 0.25, ..., 2 with the "
                      "best validation bACC; the test split takes no part) or a fixed tau >= 0. "
                      "Writes only its own JSON; --split is not used.")
  return parser


def _load_data(args, run_flags: dict):
  """The dataset to evaluate on: the flags', else the run's (with the run's options)."""
  from data_prep.registry import load_dataset  # pylint: disable=g-import-not-at-top
  dataset = args.dataset or run_flags.get("dataset")
  options = {}
  if dataset == run_flags.get("dataset"):  # the run's data: every option it was built with
    options = dict(run_flags.get("dataset_options") or {})
    options.update({k: run_flags[k] for k in NAMED_DATA_OPTIONS if run_flags.get(k) is not None})
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
    atomic_write_json(output, result)
    md = os.path.splitext(output)[0] + ".md"
    atomic_write_text(md, markdown(result))
    print(f"wrote {output} and {md}")


def _fail(message) -> int:
  """Prints a user error in one line; returns the exit status 1."""
  print(f"m2m_tf.evaluate: error: {message}", file=sys.stderr)
  return 1


def _posthoc_main(args, data, tau, output: str) -> int:
  """`--posthoc_tau`: adjusts, prints the raw and adjusted test bACC, writes `output`."""
  try:
    result = posthoc_checkpoint(args.checkpoint, data, tau, arch=args.arch,
                                batch_size=args.batch_size, normed_head=args.normed_head)
  except (FileNotFoundError, CheckpointError, ValueError) as e:
    return _fail(e)
  atomic_write_json(output, result)
  print(f"{result['dataset']} post-hoc logit adjustment ({result['mode']}): tau {result['tau']:g}"
        f" | test bACC {result['test_raw']['bacc']:.2f} -> {result['test_bacc']:.2f}, GM "
        f"{result['test_raw']['gm']:.2f} -> {result['test_gm']:.2f} | val bACC "
        f"{result['val_raw']['bacc']:.2f} -> {result['val_bacc']:.2f}")
  print(f"wrote {output}")
  return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Command line: see the module docstring. Returns the exit status."""
  parser = _parser()
  args = parser.parse_args(argv)
  try:
    tau = None if args.posthoc_tau is None else la.parse_tau(args.posthoc_tau)
    checkpoint, run_flags = resolve_checkpoint(args.checkpoint)
    output = args.output if tau is None else posthoc_output(args.checkpoint, checkpoint,
                                                            args.output)
  except (FileNotFoundError, CheckpointError, ValueError) as e:
    return _fail(e)
  if not (args.dataset or run_flags.get("dataset")):
    parser.error("--dataset is required unless --checkpoint is in a run folder (with flags.json)")
  # Data errors (unknown dataset or option, missing raw files) are the user's to fix.
  try:
    data = _load_data(args, run_flags)
  except (FileNotFoundError, ValueError) as e:
    return _fail(e)
  if tau is not None:
    return _posthoc_main(args, data, tau, output)
  try:
    result = evaluate_checkpoint(checkpoint, data, arch=args.arch, split=args.split,
                                 batch_size=args.batch_size, normed_head=args.normed_head)
  except (FileNotFoundError, CheckpointError) as e:
    return _fail(e)
  _report(result, output)
  return 0


if __name__ == "__main__":
  sys.exit(main())
