"""The CIFAR study's figures (`launch.cifar.report` writes them): training curves, per-class
recall, the paper's Fig. 4 (embedding), Fig. 5 (cumulative false positives) and Fig. 6
(translations). Models and TensorFlow load only when a model figure is due.
"""

import os
from typing import Callable, Dict, Optional, Sequence

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from launch.cifar import full as cifar_full
from launch.cifar import verdicts as cifar_verdicts
from launch.cifar.runs import Run, start_noise
from m2m_tf import plots

DEFAULT_G = "../shared/pretrained/official_erm_resnet32_cifar10lt_r100.npz"
# Fig. 4 compares these stages' f (the paper's Fig. 4: ERM, DRS, M2m).
EMBEDDING_STAGES = ("erm", "drs", "m2m")
FIGURES = {"embedding": "cifar_fig4_embedding.png", "cumulative_fp": "cifar_fig5_cumulative_fp.png",
           "translations": "cifar_fig6_translations.png",
           "recall": "cifar_per_class_recall.png", "curves": "cifar_training_curves.png"}


def _color(run: Run):
  """One colour per row in every figure, by its place in the plan."""
  names = list(dict.fromkeys(stage.name for stage in cifar_full.ROWS))
  return plots.tab10(names.index(run.stage) if run.stage in names else 9)


def fig_training_curves(runs: Sequence[Run], path: str) -> Optional[str]:
  """Loss, val bACC and (M2m rows) acceptance rate per epoch of every run with a history."""
  runs = [r for r in runs if r.history is not None and len(r.history)]
  if not runs:
    return None
  m2m = [r for r in runs if "m2m_accept_rate" in r.history]
  panels = [("loss", "training loss", runs), ("val_bacc", "val bACC (%)", runs)]
  if m2m:
    panels.append(("m2m_accept_rate", "M2m acceptance rate", m2m))

  def series(col, rows):
    """One line per run that has the column (unfinished runs tagged with their progress)."""
    out = []
    for r in rows:
      if col in r.history:
        tag = "" if r.finished else f" ({r.epochs_done}/{r.epochs_total})"
        out.append(plots.Series(r.label + tag, r.history["epoch"] + 1, r.history[col],
                                color=_color(r)))
    return out

  plots.curves(path, [plots.Panel(title, series(col, rows)) for col, title, rows in panels],
               title="CIFAR-10-LT (JPEG substitute), ratio 100, ResNet-32", legend_all=False)
  return path


def fig_per_class_recall(runs: Sequence[Run], path: str) -> Optional[str]:
  """Grouped per-class test recall bars of each row, averaged over its finished seeds, classes
  by training count."""
  runs = [r for r in runs if r.finished and r.results.get("per_class_recall")]
  if not runs:
    return None
  rows = {}
  for r in runs:
    rows.setdefault(r.stage, []).append(r)
  groups = []
  for mine in rows.values():
    bacc = np.mean([r.results["test_bacc"] for r in mine])
    recall = np.mean([r.results["per_class_recall"] for r in mine], axis=0)
    groups.append((f"{mine[0].label} (bACC {bacc:.1f}, {len(mine)} seed"
                   f"{'s' if len(mine) > 1 else ''})", list(recall), _color(mine[0])))
  plots.recall_bars(path, runs[0].results["class_names"], runs[0].results["class_counts"],
                    groups, title="Per-class test recall, mean over seeds (classes by training "
                    "count N_k, largest first)")
  return path


def fig_cumulative_fp(runs: Sequence[Run], path: str) -> Optional[str]:
  """The paper's Fig. 5: cumulative false positives over classes, largest class first."""
  runs = [r for r in runs if r.finished and (r.results.get("test") or {}).get("cumulative_fp")]
  if not runs:
    return None
  # ERM and M2m are the paper's pair; the other rows are drawn thinner.
  series = [(r.label, r.results["test"]["cumulative_fp"], _color(r),
             2.2 if r.stage in ("erm", "m2m") else 1.0) for r in runs]
  plots.cumulative_fp(path, runs[0].results["class_names"], runs[0].results["class_counts"],
                      series, title="Cumulative false positives (Fig. 5)")
  return path


# --- figures that need models and data ---------------------------------------


def build_f(run: Run, input_shape, num_classes: int):
  """f of a run with its best-validation weights."""
  from m2m_tf import models  # lazy: TensorFlow; table-only reports run without
  f = models.build_model("resnet32", input_shape, num_classes, normed_head=run.loss == "ldam")
  f.load_weights(run.weights)
  return f


def load_official_g(path: str, input_shape=(32, 32, 3), num_classes: int = 10):
  """The official pre-trained ResNet-32 g (PyTorch layout .npz), or None if the file is missing."""
  if not os.path.isfile(path):
    return None
  from m2m_tf import models  # lazy: TensorFlow; table-only reports run without
  g = models.build_model("resnet32", input_shape, num_classes, name="g")
  return models.load_torch_state_dict(g, path)


def features(f, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
  """f's penultimate features (the "avgpool" output) of uint8 images x, float32 [N, D]."""
  import keras  # lazy: TensorFlow; table-only reports run without it
  body = keras.Model(f.input, f.get_layer("avgpool").output)
  return cifar_verdicts.apply_in_batches(body, x, batch_size)


def embed(feats: np.ndarray, method: str = "pca") -> np.ndarray:
  """2-D embedding of features: PCA (default) or t-SNE (slower: about a minute per model)."""
  if method == "tsne":
    return TSNE(n_components=2, init="pca", random_state=0).fit_transform(feats)
  return PCA(n_components=2, random_state=0).fit_transform(feats)


def fig_embedding(runs: Sequence[Run], data, path: str, method: str = "pca") -> Optional[str]:
  """The paper's Fig. 4: f's test-set penultimate features in 2-D, one panel per run."""
  runs = [r for r in runs if r.stage in EMBEDDING_STAGES and r.finished and r.weights]
  if not runs:
    return None
  fig = plots.figure(4.8 * len(runs), 4.6, layout=None)
  axes = fig.subplots(1, len(runs), squeeze=False)
  for ax, r in zip(axes[0], runs):
    f = build_f(r, data.x_test.shape[1:], data.num_classes)
    z = embed(features(f, data.x_test), method)
    for k, name in enumerate(data.class_names):
      m = data.y_test == k
      ax.scatter(z[m, 0], z[m, 1], s=2, alpha=0.5, color=plots.tab10(k), label=name)
    ax.set_title(f"{r.label} (test bACC {r.results['test_bacc']:.1f})")
    ax.set_xticks([])
    ax.set_yticks([])
  axes[0][-1].legend(markerscale=5, fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
  fig.suptitle(f"f's penultimate features on the test set ({method.upper()}), coloured by class")
  return plots.save(fig, path)


def translation_f(runs: Sequence[Run]) -> Optional[Run]:
  """The f for Fig. 6: seed 0's finished M2m run, else its ERM run (finished or its best so
  far)."""
  by = {r.stage: r for r in runs if r.seed == 0}
  if "m2m" in by and by["m2m"].finished and by["m2m"].weights:
    return by["m2m"]
  if "erm" in by and by["erm"].weights:
    return by["erm"]
  return None


def translate_examples(g, f, data, n_seeds: int = 4, n_targets: int = 4, seed: int = 0):
  """Majority-class training seeds translated towards the `n_targets` smallest classes
  (`m2m_tf.report.translate_examples`, the code of every run's report).

  Uses the M2m values of the CIFAR runs (`cifar_full.M2M_FLAGS`, `M2mConfig`'s
  random start of a per-sample radius) and clips to [0, 1]. Returns a dict: x0
  [S, H, W, C], major (seed class), targets [T], x_star [T, S, H, W, C], p_before /
  p_after [T, S] (g's softmax probability of the target at the seed and at x*).
  """
  from m2m_tf import report  # lazy: TensorFlow; table-only reports run without
  m = cifar_full.M2M_FLAGS
  return report.translate_examples(
      g, f, data.x_train, data.y_train, data.class_counts, lam=m["lam"],
      step_size=m["step_size"], steps=m["steps"], start_noise=start_noise(),
      clip_range=(0.0, 1.0), start_noise_mode="per_sample", n_seeds=n_seeds,
      n_targets=n_targets, seed=seed)


def fig_translations(g, f_run: Run, data, path: str) -> str:
  """The paper's Fig. 6: seeds (top row) and their translations, one row per target class."""
  f = build_f(f_run, data.x_train.shape[1:], data.num_classes)
  ex = translate_examples(g, f, data)
  gamma = cifar_full.M2M_FLAGS["gamma"]
  state = "" if f_run.finished else f", unfinished: best of {f_run.epochs_done} epochs"
  m = cifar_full.M2M_FLAGS
  plots.translation_grid(
      path, ex, data.class_names, gamma,
      title=f"M2m translations with the official g and f = {f_run.label}'s{state}\n"
      f"(lambda {m['lam']}, step {m['step_size']}, T {m['steps']}, start noise "
      f"{start_noise()}; accepted if g >= {gamma})")
  return path


def make_figures(runs: Sequence[Run], fig_dir: str, *, load_data: Callable[[], object],
                 load_g: Callable[[], object], embedding: str = "pca") -> Dict[str, str]:
  """Every figure whose inputs exist; returns {figure key: path} of those written.

  `load_data()` (a `DatasetSplits`-like object: x_/y_ train and test as uint8
  images and labels, class_names, class_counts, num_classes) and `load_g()`
  (the official g, or None) are called only when a model figure is due; tests
  inject small ones.
  """
  every_seed, runs = runs, [r for r in runs if r.seed == 0]  # figures of seed 0, but recall
  out = {"curves": fig_training_curves(runs, os.path.join(fig_dir, FIGURES["curves"])),
         "recall": fig_per_class_recall(every_seed, os.path.join(fig_dir, FIGURES["recall"])),
         "cumulative_fp": fig_cumulative_fp(runs, os.path.join(fig_dir, FIGURES["cumulative_fp"]))}
  want_embedding = any(r.stage in EMBEDDING_STAGES and r.finished and r.weights for r in runs)
  f_run = translation_f(runs)
  data = load_data() if want_embedding or f_run else None
  if want_embedding:
    out["embedding"] = fig_embedding(runs, data, os.path.join(fig_dir, FIGURES["embedding"]),
                                     embedding)
  g = load_g() if f_run else None
  if f_run and g is not None:
    out["translations"] = fig_translations(g, f_run, data,
                                           os.path.join(fig_dir, FIGURES["translations"]))
  return {k: v for k, v in out.items() if v}
