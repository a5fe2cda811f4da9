r"""Evaluate a saved classifier on a dataset split (SPEC §3 metrics).

  python -m m2m_tf.evaluate --dataset=cifar10_jpeg_lt \
      --checkpoint=../shared/pretrained/official_erm_resnet32_cifar10lt_r100.npz \
      --output=results/official_g_cifar10_jpeg.json

The checkpoint may be a PyTorch-layout `.npz` state_dict (loaded with
`m2m_tf.models.load_torch_state_dict`, e.g. the official M2m g), a Keras
`.weights.h5` file (e.g. `best_f.weights.h5` of a run), or a SavedModel
directory written by a run (`saved_model/`, its `serve` endpoint gives logits).
The architecture defaults to the dataset's recipe. Metrics are those of
`m2m_tf.metrics.summarize` (bACC, GM with the 0.001 correction, per-class
recall, ...), with class counts = the training counts N_k; the result carries
the dataset's substitute label (e.g. the CIFAR-10 JPEG substitute).

Writes `--output` (JSON) and the same name with `.md` (a short table). Uses
argparse: only `m2m_tf.main` reads absl FLAGS.
"""

import argparse
import json
import os
import sys
import time
from typing import Optional, Sequence

import numpy as np

SPLITS = ("test", "val", "train")


def load_classifier(checkpoint: str, *, arch: str, input_shape, num_classes: int,
                    normed_head: bool = False):
  """Returns a callable `logits = fn(x_float01_batch)` for `checkpoint`.

  Args:
    checkpoint: `.npz` (PyTorch layout), `.weights.h5`, or a SavedModel dir.
    arch: architecture name for `.npz` / `.weights.h5` (m2m_tf.models).
    input_shape: one example's shape.
    num_classes: K.
    normed_head: the cosine head of LDAM models.

  Raises:
    FileNotFoundError: no such file or directory.
    ValueError: an unknown checkpoint kind.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from m2m_tf import models  # pylint: disable=g-import-not-at-top
  if not os.path.exists(checkpoint):
    raise FileNotFoundError(f"checkpoint not found: {checkpoint!r}")
  if os.path.isdir(checkpoint):
    loaded = tf.saved_model.load(checkpoint)
    if not hasattr(loaded, "serve"):
      raise ValueError(f"SavedModel {checkpoint!r} has no `serve` endpoint")
    return lambda x: loaded.serve(tf.convert_to_tensor(x, tf.float32))
  model = models.build_model(arch, input_shape, num_classes, normed_head=normed_head)
  if checkpoint.endswith(".npz"):
    models.load_torch_state_dict(model, checkpoint)
  elif checkpoint.endswith(".weights.h5"):
    model.load_weights(checkpoint)
  else:
    raise ValueError(f"checkpoint {checkpoint!r} must be a .npz file, a .weights.h5 file or a "
                     "SavedModel directory")
  fn = tf.function(lambda x: model(x, training=False))
  return lambda x: fn(tf.convert_to_tensor(x, tf.float32))


def predict(logits_fn, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
  """argmax predictions over `x` (uint8 images are scaled to [0, 1])."""
  from m2m_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  preds = []
  for xb in pipeline.eval_dataset(x, batch_size=batch_size):
    preds.append(np.argmax(np.asarray(logits_fn(xb)), axis=-1))
  return np.concatenate(preds) if preds else np.zeros(0, np.int64)


def evaluate_checkpoint(checkpoint: str, data, *, arch: Optional[str] = None,
                        split: str = "test", batch_size: int = 1024,
                        normed_head: bool = False) -> dict:
  """Evaluates `checkpoint` on `data` (a DatasetSplits) and returns a JSON-able dict.

  Keys: dataset, data_label, checkpoint, arch, split, n, bacc, gm, acc,
  n_zero_recall, per_class_recall, class_names, class_counts, summary (the full
  `metrics.summarize` dict) and seconds.
  """
  from m2m_tf import metrics  # pylint: disable=g-import-not-at-top
  from m2m_tf.recipes import get_recipe  # pylint: disable=g-import-not-at-top
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  t0 = time.time()
  if os.path.isdir(checkpoint):
    arch = arch or "saved_model"
  else:
    arch = arch or get_recipe(data.name).arch
  x, y = {"test": (data.x_test, data.y_test), "val": (data.x_val, data.y_val),
          "train": (data.x_train, data.y_train)}[split]
  fn = load_classifier(checkpoint, arch=arch, input_shape=data.input_shape,
                       num_classes=data.num_classes, normed_head=normed_head)
  y_pred = predict(fn, x, batch_size)
  summary = metrics.summarize(y, y_pred, data.class_counts)
  return {
      "dataset": data.name,
      "data_label": data.label,
      "checkpoint": checkpoint,
      "arch": arch,
      "split": split,
      "n": int(len(y)),
      "bacc": summary["bacc"],
      "gm": summary["gm"],
      "acc": summary["acc"],
      "n_zero_recall": summary["n_zero_recall"],
      "per_class_recall": summary["per_class_recall"],
      "class_names": list(data.class_names),
      "class_counts": data.class_counts.tolist(),
      "summary": summary,
      "seconds": time.time() - t0,
  }


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


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Command line: see the module docstring."""
  parser = argparse.ArgumentParser(description="Evaluate a checkpoint (bACC, GM, per-class "
                                   "recall).")
  parser.add_argument("--dataset", required=True)
  parser.add_argument("--checkpoint", required=True,
                      help=".npz (PyTorch layout), .weights.h5, or a SavedModel directory")
  parser.add_argument("--arch", default=None, help="default: the dataset's recipe")
  parser.add_argument("--split", default="test", choices=SPLITS)
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--imbalance_ratio", type=float, default=None)
  parser.add_argument("--normed_head", action="store_true", help="LDAM cosine head")
  parser.add_argument("--batch_size", type=int, default=1024)
  parser.add_argument("--output", default=None, help="JSON path (a .md is written beside it)")
  args = parser.parse_args(argv)
  from data_prep.registry import load_dataset  # pylint: disable=g-import-not-at-top
  options = {}
  if args.imbalance_ratio is not None:
    options["imbalance_ratio"] = args.imbalance_ratio
  try:
    data = load_dataset(args.dataset, args.data_dir, **options)
    result = evaluate_checkpoint(args.checkpoint, data, arch=args.arch, split=args.split,
                                 batch_size=args.batch_size, normed_head=args.normed_head)
  except (FileNotFoundError, ValueError) as e:
    print(f"m2m_tf.evaluate: error: {e}", file=sys.stderr)
    return 1
  line = (f"{result['dataset']} {result['split']} ({result['n']}): bACC {result['bacc']:.2f} "
          f"GM {result['gm']:.2f} acc {result['acc']:.2f} zero-recall {result['n_zero_recall']}")
  if result["data_label"]:
    line += f" [{result['data_label']}]"
  print(line)
  print("per-class recall: " + ", ".join(
      f"{n} {'-' if r is None else f'{r:.1f}'}" for n, r in
      zip(result["class_names"], result["per_class_recall"])))
  if args.output:
    from m2m_tf.io_utils import atomic_write_json  # pylint: disable=g-import-not-at-top
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    atomic_write_json(args.output, result)
    md = os.path.splitext(args.output)[0] + ".md"
    with open(md, "w") as fh:
      fh.write(markdown(result))
    print(f"wrote {args.output} and {md}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
