"""The TensorFlow side of the PyTorch reference (docs/torch_reference.md): `export` writes the
CIFAR-10-LT split for a machine without TensorFlow, `import_tf_phase1` turns m2m_tf's phase-1
state into a phase-1 run of `launch.torch_reference`. Both need m2m_tf and PyTorch."""

import json
import os
import pathlib
import shutil
from typing import Dict

import numpy as np
import torch

from data_prep import cifar_jpeg, download, paths, registry
from data_prep.atomic import atomic_write_text
from launch.cifar import gpu_check
from launch.torch_reference import training as tr
from m2m_tf import models
from m2m_tf.errors import CheckpointError
from m2m_tf.models import torch_import
from m2m_tf.training import checkpoint


def export(out, data_dir=None, g_path=None) -> pathlib.Path:
  """Writes the cifar10_jpeg_lt split's JPEG files (what the TF runs decode), the digests of
  their decoded arrays, and the official g to `out` (JPEG bytes: a fifth of the arrays' size)."""
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  files, _ = download.checked_raw_files(paths.resolve_data_dir(data_dir),
                                        (cifar_jpeg.TRAIN_FILE, cifar_jpeg.TEST_FILE), True)
  archives = [cifar_jpeg.load_jpeg_archive(f) for f in files]
  idx = cifar_jpeg.split_indices(archives[0], archives[1], 100)
  decoded = registry.load_dataset("cifar10_jpeg_lt", data_dir)
  arrays = {"class_names": np.asarray(decoded.class_names)}
  for split, archive, i in zip(tr.SPLITS, (archives[0], archives[1], archives[1]), idx):
    blobs = [archive["jpeg_bytes"][archive["offsets"][k]:archive["offsets"][k + 1]] for k in i]
    arrays[f"jpeg_{split}"] = np.concatenate(blobs)
    arrays[f"offsets_{split}"] = np.cumsum([0] + [len(b) for b in blobs])
    arrays[f"y_{split}"] = archive["labels"][i].astype(np.int64)
    if not np.array_equal(arrays[f"y_{split}"], getattr(decoded, f"y_{split}")):
      raise SystemExit(f"{split}: the split's labels differ from the dataset's")
    arrays[f"digest_{split}"] = np.asarray(tr.digest(getattr(decoded, f"x_{split}")))
  np.savez(out / tr.JPEG_FILE, **arrays)
  g_path = gpu_check.find_official_g(g_path, data_dir)
  if g_path is None:
    raise SystemExit(f"the official g ({tr.G_SOURCE}) was not found; pass --g_npz")
  shutil.copyfile(g_path, out / tr.G_FILE)
  return out


def import_tf_phase1(tf_run, out, epochs: int = 160) -> pathlib.Path:
  """Writes m2m_tf's phase-1 state after `epochs` epochs (a Keras-form run folder) as a
  finished phase-1 run of `launch.torch_reference` in `out` (state.pt, history.csv,
  result.json), so that `all` branches PyTorch rows from the very weights m2m_tf's rows
  branched from.

  The weights map by module name (`torch_import.torch_state_dict`); Keras' momentum slot m is
  -lr times PyTorch's buffer at a steady lr (docs/method.md difference 9), so b = -m / lr.
  """
  record = os.path.join(tf_run, "ckpt", f"state-{epochs:04d}.json")
  state = checkpoint.load_state(record)
  model = models.resnet32(10)
  lr = tr.learning_rate(tr.Recipe(), epochs - 1)
  slots = state.optimizer_vars[-len(model.trainable_variables):]  # after iterations and lr
  try:
    checkpoint.check_shapes(record, "f", model.weights, state.f_weights)
    checkpoint.check_shapes(record, "momentum", model.trainable_variables, slots)
  except CheckpointError as e:
    raise SystemExit(str(e)) from None
  _assign(model.weights, state.f_weights)
  weights = {k: torch.from_numpy(np.array(v)) for k, v in
             torch_import.torch_state_dict(model).items()}
  _assign(model.trainable_variables, [-m / lr for m in slots])  # laid out as the weights
  buffers = torch_import.torch_state_dict(model)
  f = tr.build_resnet32()
  missing, unexpected = f.load_state_dict(weights, strict=False)
  if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
    raise SystemExit(f"weights do not map: missing {missing}, unexpected {unexpected}")
  opt = torch.optim.SGD(f.parameters(), lr=lr, momentum=0.9, weight_decay=tr.Recipe.weight_decay)
  for name, p in f.named_parameters():
    opt.state[p]["momentum_buffer"] = torch.from_numpy(np.array(buffers[name]))
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  tr.save_state(out, f, opt, epochs)
  tr.write_history(out, [_tf_history_row(r, s) for r, s in
                      zip(state.history[:epochs], state.epoch_seconds[:epochs])])
  atomic_write_text(str(out / "result.json"),
                    json.dumps({"epochs": epochs, "from_tf": str(tf_run)}))
  _check_val(f, float(state.history[epochs - 1]["val_bacc"]))
  return out


def _check_val(f, tf_val_bacc: float) -> None:
  """The imported f must score m2m_tf's recorded validation bACC (within one image per class
  pair: a prediction at a near-tie may flip under another framework's rounding)."""
  ds = registry.load_dataset("cifar10_jpeg_lt")
  x = torch.from_numpy(np.ascontiguousarray(ds.x_val.transpose(0, 3, 1, 2)))
  got = 100 * float(tr.recalls(f, x, torch.from_numpy(ds.y_val), ds.num_classes).mean())
  print(f"imported f: validation bACC {got:.2f}, m2m_tf recorded {tf_val_bacc:.2f}")
  if abs(got - tf_val_bacc) > 0.21:
    raise SystemExit(f"the imported f scores {got:.2f}, m2m_tf recorded {tf_val_bacc:.2f}")


def _assign(variables, arrays) -> None:
  """Assigns arrays (already checked by `checkpoint.check_shapes`) to variables in order."""
  for v, a in zip(variables, arrays):
    v.assign(a)


def _tf_history_row(row: Dict, seconds: float) -> Dict:
  """One m2m_tf history row (epoch counted from 0) in this module's history format."""
  out = {"epoch": int(row["epoch"]) + 1, "lr": row["lr"], "train_loss": row["loss"],
         "train_acc": 100 * float(row["accuracy"]), "gen_slots": 0, "seeded": 0, "accepted": 0}
  out.update({k: row[k] for k in ("val_bacc", "val_gm", "test_bacc", "test_gm")})
  out.update({f"recall_{c}": "" for c in range(10)})
  out["seconds"] = seconds
  return out
