r"""Evaluates a saved classifier on a dataset split, and post-hoc logit adjustment of a run:
`python -m m2m_tf.evaluate --checkpoint=runs/reuters_m2m [--posthoc_tau=select]`.

See docs/method.md#evaluating-a-checkpoint and docs/method.md#logit-adjustment-and-balanced-softmax.
"""

import argparse
import os
import sys
import time
from typing import Optional, Sequence, Tuple

import numpy as np

from data_prep import registry
from data_prep.atomic import atomic_write_json, atomic_write_text, read_json
from m2m_tf import logit_adjustment as la
from m2m_tf import metrics
from m2m_tf import quiet
from m2m_tf.errors import CheckpointError
from m2m_tf.run_records import BEST_WEIGHTS_FILE, EXPORT_DIR, FLAGS_FILE, POSTHOC_FILE, RESULTS_FILE
from m2m_tf.run_records import NAMED_DATA_OPTIONS, flatten_record
from m2m_tf.training.output_dir import OUR_ENTRIES

SPLITS = ("test", "val", "train")
# What a run folder holds, in the order evaluated (the SavedModel needs no --arch).
RUN_CHECKPOINTS = (EXPORT_DIR, BEST_WEIGHTS_FILE)


def resolve_checkpoint(path: str) -> Tuple[str, dict]:
  """(checkpoint to load, the run's flags.json as {leaf name: value} or {}) for `path`.

  `path` is a checkpoint file, a SavedModel directory or a run folder (flags.json with
  saved_model/ or best_f.weights.h5). Raises FileNotFoundError if it or the model is missing.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint not found: {path!r}")
  run_dir = os.path.dirname(os.path.abspath(path))
  checkpoint = path
  if os.path.isdir(path) and os.path.isfile(os.path.join(path, FLAGS_FILE)):
    run_dir = path
    found = [os.path.join(path, n) for n in RUN_CHECKPOINTS
             if os.path.exists(os.path.join(path, n))]
    if not found:
      raise FileNotFoundError(f"run folder {path!r} has neither saved_model/ nor best_f.weights.h5 "
                              "(an unfinished run?)")
    checkpoint = found[0]
  return checkpoint, flatten_record(read_json(os.path.join(run_dir, FLAGS_FILE)) or {})


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
  from m2m_tf.models import weights_io  # lazy: TensorFlow loads only when a model is used
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
  from m2m_tf import models  # lazy: TensorFlow loads only when a model is used
  try:
    return models.build_classifier(arch, input_shape, num_classes, normed_head=normed_head,
                                   hidden_units=hidden_units, normalization=normalization)
  except ValueError as e:  # unknown arch, or inputs of the wrong rank or channels
    raise CheckpointError(str(e)) from e


def load_classifier(checkpoint: str, *, arch: str, input_shape, num_classes: int,
                    normed_head: bool = False, hidden_units=None, data_name: str = "?",
                    normalization=None):
  """Returns `logits = fn(x_float01_batch)` for a `.npz`, `.weights.h5` or SavedModel.

  arch, normed_head, hidden_units and normalization ((mean, std) or None) build the model for
  a weights file; data_name is for messages. Raises FileNotFoundError, or CheckpointError for
  an unknown kind or a checkpoint whose input shape, classes or layers do not fit.
  """
  import tensorflow as tf  # lazy: TensorFlow loads only when a model is used
  from m2m_tf.models import weights_io
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
  """The logits [N, K] of `logits_fn` over `x` (uint8 scaled to [0, 1]); [0, 0] if `x` is empty."""
  from m2m_tf.data import pipeline  # lazy: TensorFlow loads only when a model is used
  out = [np.asarray(logits_fn(xb)) for xb in pipeline.eval_dataset(x, batch_size=batch_size)]
  return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def predict(logits_fn, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
  """argmax predictions over `x` (uint8 images are scaled to [0, 1])."""
  logits = predict_logits(logits_fn, x, batch_size)
  return np.argmax(logits, axis=-1) if len(logits) else np.zeros(0, np.int64)


def _normalization(data, arch: str):
  """Your own data's input standardisation (not in weight files); None for the paper's data."""
  return None if arch == "saved_model" else registry.model_normalization(data.name, data)


def _hidden_units(dataset: str, arch: str, run_flags: dict):
  """The MLP hidden sizes: the run's, else the dataset recipe's (None: not an MLP)."""
  if arch != "mlp":
    return None
  if run_flags.get("hidden_units"):
    return tuple(run_flags["hidden_units"])
  spec = registry.DATASETS.get(dataset)
  return spec.recipe.hidden_units if spec is not None and spec.recipe else None


def _logits_fn(checkpoint: str, run_flags: dict, data, arch: Optional[str],
               normed_head: Optional[bool]):
  """(logits function, arch) of a resolved checkpoint; arch: given, the run's, else the recipe's.

  A SavedModel gives arch "saved_model"; normed_head defaults to "the run's loss is LDAM".
  """
  if normed_head is None:
    normed_head = run_flags.get("loss") == "ldam"
  arch = "saved_model" if os.path.isdir(checkpoint) else (
      arch or run_flags.get("arch") or registry.get_recipe(data.name).arch)
  fn = load_classifier(checkpoint, arch=arch, input_shape=data.input_shape,
                       num_classes=data.num_classes, normed_head=normed_head,
                       hidden_units=_hidden_units(data.name, arch, run_flags),
                       data_name=data.name, normalization=_normalization(data, arch))
  return fn, arch


def evaluate_checkpoint(checkpoint: str, data, *, arch: Optional[str] = None,
                        split: str = "test", batch_size: int = 1024,
                        normed_head: Optional[bool] = None) -> dict:
  """Evaluates `checkpoint` (see `resolve_checkpoint`) on `split` of `data` (a DatasetSplits).

  Returns a JSON-able dict: dataset, data_label, checkpoint, arch, split, n, bacc, gm, acc,
  n_zero_recall, per_class_recall, class_names, class_counts, summary (`metrics.summarize`)
  and seconds. Raises ValueError for an unknown split.
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
  """Post-hoc logit adjustment of `logits_fn` on val and test; the test split is read after tau.

  Args:
    tau: la.SELECT (chosen on validation bACC over la.TAU_GRID) or a fixed tau >= 0.
    scale: the logit scale of the run's loss (`logit_scale`); the prior pi is data's counts.
  Returns:
    tau, mode, logit_scale, log_prior, `metrics.summarize` at tau ("val", "test") and at 0
    ("val_raw", "test_raw"), val/test bacc and gm; with SELECT also grid, grid_val_bacc, tied_taus.
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
  """The scale the run's loss put on f's logits before its softmax: LDAM's s, else 1."""
  if run_flags.get("loss") == "ldam":
    return float(run_flags.get("ldam_scale") or 30.0)
  return 1.0


def _run_dir(path: str, checkpoint: str) -> str:
  """The run folder `path`, else the folder of the resolved checkpoint."""
  if os.path.isdir(path) and os.path.isfile(os.path.join(path, FLAGS_FILE)):
    return path
  return os.path.dirname(os.path.abspath(checkpoint))


def posthoc_output(path: str, checkpoint: str, output: Optional[str] = None) -> str:
  """`output`, else POSTHOC_FILE in the run folder (or beside the checkpoint).

  Raises CheckpointError if that names a run's own file (results.json, flags.json, ...).
  """
  target = output or os.path.join(_run_dir(path, checkpoint), POSTHOC_FILE)
  name = os.path.basename(os.path.normpath(target))
  if name in OUR_ENTRIES and name != POSTHOC_FILE:
    raise CheckpointError(f"{target!r} is a run's own {name}; post-hoc results never replace it "
                          "(choose another --output)")
  return target


def _check_finished(run_dir: str, data) -> None:
  """Raises CheckpointError unless a run folder is finished and has the data's class counts."""
  if not os.path.isfile(os.path.join(run_dir, FLAGS_FILE)):
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
  """`posthoc_adjust` of a finished run folder, SavedModel or weights file (only read).

  Returns its dict plus dataset, data_label, checkpoint, run_dir, arch, run_loss, class_names,
  class_counts and seconds. Raises FileNotFoundError, or CheckpointError for an unfinished run
  or another dataset's checkpoint.
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
  dataset = args.dataset or run_flags.get("dataset")
  options = {}
  if dataset == run_flags.get("dataset"):  # the run's data: every option it was built with
    options = dict(run_flags.get("dataset_options") or {})
    options.update({k: run_flags[k] for k in NAMED_DATA_OPTIONS if run_flags.get(k) is not None})
  if args.imbalance_ratio is not None:
    options["imbalance_ratio"] = args.imbalance_ratio
  return registry.load_dataset(dataset, args.data_dir or run_flags.get("data_dir"), **options)


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
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's INFO lines after start-up
  quiet.import_tensorflow()
  sys.exit(main())
