r"""Train a classifier on long-tailed data with M2m or a baseline.

  python -m m2m_tf.main --dataset=reuters --method=m2m
  python -m m2m_tf.main --dataset=reuters --method=drw --loss=ldam --seed=1 \
      --output_dir=runs/reuters_ldam_drw_s1

Unset schedule flags take the dataset's recipe (docs/method.md#training-recipes, m2m_tf/recipes.py).
This is the only module that reads FLAGS; it turns them into an
`ExperimentConfig` for `m2m_tf.training.run.run_experiment`.
"""

import os
import sys

from absl import app
from absl import flags

from data_prep.registry import available_datasets
from m2m_tf.losses import LOSSES
from m2m_tf.m2m.generation import ACCEPT_MODES
from m2m_tf.recipes import RECIPES
from m2m_tf.training.methods import METHODS

FLAGS = flags.FLAGS

flags.DEFINE_string("dataset", "reuters", "Dataset name (data_prep.registry): reuters, twitter, "
                    "synthetic_lt, cifar10_jpeg_lt, ... Its recipe sets the defaults below.")
flags.DEFINE_enum("method", "m2m", sorted(METHODS), "Re-balancing method: erm (none), rs, smote, "
                  "rw, cb_rw, drs, drw or m2m.")
flags.DEFINE_enum("loss", "ce", list(LOSSES), "Loss: ce, focal (gamma 1) or ldam (cosine head).")
flags.DEFINE_integer("seed", 0, "Seed of initialisation, data order and M2m's random draws.")
flags.DEFINE_integer("epochs", None, "Training epochs (recipe default).")
flags.DEFINE_integer("batch_size", None, "Global batch size (recipe default).")
flags.DEFINE_float("lr", None, "Peak learning rate after warm-up (recipe: 0.1).")
flags.DEFINE_integer("warmup_epochs", None, "Linear warm-up epochs (recipe: 5).")
flags.DEFINE_list("lr_milestones", None, "Epochs at which the lr is multiplied by the matching "
                  "--lr_factors entry (recipe default, e.g. 10 for Reuters).")
flags.DEFINE_list("lr_factors", None, "Multipliers applied at --lr_milestones (e.g. 0.1).")
flags.DEFINE_float("weight_decay", None, "Coupled L2 weight decay, as PyTorch SGD (recipe).")
flags.DEFINE_integer("deferred_epoch", None, "First epoch of phase 2 (M2m, DRS, DRW).")
flags.DEFINE_float("beta", 0.999, "M2m seed rejection: w_ij = 1 - beta^max(N_yj - N_yi, 0).")
flags.DEFINE_float("lam", 0.5, "M2m: weight of f's seed-class logit in the translation loss.")
flags.DEFINE_float("gamma", 0.9, "M2m: accept x* iff g's probability of the target >= gamma.")
flags.DEFINE_integer("steps", 10, "M2m: translation steps T.")
flags.DEFINE_float("step_size", None, "M2m: L2 step size eta (recipe: 1.0 Reuters, else 0.1).")
flags.DEFINE_float("start_noise", 0.5, "M2m: L2 radius of the random start (official 0.5).")
flags.DEFINE_bool("no_reject", False, "Ablation M2m-No-Reject: skip the Bernoulli rejection.")
flags.DEFINE_enum("accept_mode", "translate", list(ACCEPT_MODES), "Ablations: translate (M2m), "
                  "clean (M2m-Clean: accepted slots get the clean seed), random_label (RS-Rand).")
flags.DEFINE_bool("self_translation", False, "Ablation M2m-Self: translate with f instead of g.")
flags.DEFINE_integer("seed_pool_size", 0, "Ablation: seeds from a fixed pool of P per class "
                     "(0: seeds from the batch).")
flags.DEFINE_integer("n_buckets", 8, "M2m: compiled translation sizes (1 = translate the whole "
                     "batch, the naive static-shape version).")
flags.DEFINE_bool("fold_batchnorm", True, "M2m: run the translation's inference passes through "
                  "g and f with BatchNorm folded into the convolutions (same function up to "
                  "float32 rounding, faster); --nofold_batchnorm calls the models as they are.")
flags.DEFINE_string("g_checkpoint", None, "Frozen g for M2m: a .weights.h5 file, or an official "
                    "PyTorch-layout ResNet-32 .npz; several comma-separated files make an ensemble g "
                    "(M2m-Ensemble ablation). Unset: train g with ERM first.")
flags.DEFINE_string("data_dir", None, "Raw data root. Default: $M2M_DATA_DIR, else ../shared/data.")
flags.DEFINE_string("output_dir", None, "Where results go (default runs/<dataset>_<loss>_<method>"
                    "_s<seed>). Refused if it holds results, unless --overwrite.")
flags.DEFINE_bool("overwrite", False, "Replace an output directory that already holds results.")
flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"], "XLA for the train step. auto: "
                  "on for GPUs, off on CPUs (measured slower there, compile included).")
flags.DEFINE_bool("mixed_precision", False, "mixed_float16 compute for f and g (GPU); the loss "
                  "and the M2m translation stay float32; dynamic loss scaling.")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored"], "tf.distribute strategy.")
flags.DEFINE_enum("loss_reduction", "batch", ["batch", "weights"], "Weighted-loss reduction: "
                  "sum(w*l)/B (batch) or sum(w*l)/sum(w) (weights).")
flags.DEFINE_integer("imbalance_ratio", None, "Dataset option for long-tailed image sets (100/10).")
flags.DEFINE_integer("vocab_size", None, "Reuters: bag-of-words width (default 1000, the "
                     "paper's; 2000 and 5000 are our ablation beyond the paper).")
flags.DEFINE_string("embeddings", None, "Twitter: path to a `word f1 ... f50` embedding file.")
flags.DEFINE_integer("verbose", 1, "Keras fit verbosity (1: progress bar per epoch).")
flags.DEFINE_string("init_from", None, "Phase-1 sharing: start from this run folder's committed "
                    "state after --init_epoch epochs (it must differ only in what phase 2 uses; "
                    "docs/runs.md).")
flags.DEFINE_integer("init_epoch", None, "Completed epochs of --init_from's state to start from.")
flags.DEFINE_list("keep_epochs", [], "Keep the state after these completed epochs for good "
                  "(branch points for --init_from).")

flags.register_validator("seed", lambda v: v >= 0, "--seed must be >= 0.")
flags.register_validator("epochs", lambda v: v is None or v >= 1, "--epochs must be >= 1.")
flags.register_validator("batch_size", lambda v: v is None or v >= 2, "--batch_size must be >= 2.")
flags.register_validator("lr", lambda v: v is None or v > 0, "--lr must be > 0.")
flags.register_validator("weight_decay", lambda v: v is None or v >= 0, "--weight_decay must be >= 0.")
flags.register_validator("deferred_epoch", lambda v: v is None or v >= 0,
                         "--deferred_epoch must be >= 0.")
flags.register_validator("beta", lambda v: 0 <= v < 1, "--beta must be in [0, 1).")
flags.register_validator("lam", lambda v: v >= 0, "--lam must be >= 0.")
flags.register_validator("gamma", lambda v: 0 <= v <= 1, "--gamma must be in [0, 1].")
flags.register_validator("steps", lambda v: v >= 0, "--steps must be >= 0.")
flags.register_validator("step_size", lambda v: v is None or v > 0, "--step_size must be > 0.")
flags.register_validator("start_noise", lambda v: v >= 0, "--start_noise must be >= 0.")
flags.register_validator("n_buckets", lambda v: v >= 1, "--n_buckets must be >= 1.")
flags.register_validator("seed_pool_size", lambda v: v >= 0, "--seed_pool_size must be >= 0.")
flags.register_validator("dataset", lambda v: v in RECIPES,
                         f"--dataset must be one of {sorted(RECIPES)}.")
flags.register_validator("vocab_size", lambda v: v is None or v >= 2,
                         "--vocab_size must be >= 2.")
flags.register_validator("keep_epochs", lambda v: all(s.isdigit() for s in v),
                         "--keep_epochs must be a comma-separated list of epochs.")
flags.register_validator("lr_milestones", lambda v: v is None or all(s.isdigit() for s in v),
                         "--lr_milestones must be a comma-separated list of epochs.")


def config_from_flags():
  """Turns the parsed FLAGS into an `ExperimentConfig` (the only place FLAGS are read)."""
  from m2m_tf.training.run import ExperimentConfig  # pylint: disable=g-import-not-at-top
  if FLAGS.dataset not in available_datasets():
    raise app.UsageError(f"--dataset={FLAGS.dataset} has a recipe but no builder yet; "
                         f"available: {sorted(available_datasets())}.")
  options = {}
  if FLAGS.imbalance_ratio is not None:
    options["imbalance_ratio"] = FLAGS.imbalance_ratio
  if FLAGS.embeddings is not None:
    options["embeddings"] = FLAGS.embeddings
  if FLAGS.vocab_size is not None:
    options["vocab_size"] = FLAGS.vocab_size
  milestones = None if FLAGS.lr_milestones is None else tuple(int(m) for m in FLAGS.lr_milestones)
  factors = None if FLAGS.lr_factors is None else tuple(float(m) for m in FLAGS.lr_factors)
  if (milestones is None) != (factors is None) or (milestones and len(milestones) != len(factors)):
    raise app.UsageError("--lr_milestones and --lr_factors must be given together, same length.")
  output_dir = FLAGS.output_dir or os.path.join(
      "runs", f"{FLAGS.dataset}_{FLAGS.loss}_{FLAGS.method}_s{FLAGS.seed}")
  return ExperimentConfig(
      dataset=FLAGS.dataset, method=FLAGS.method, loss=FLAGS.loss, seed=FLAGS.seed,
      output_dir=output_dir, data_dir=FLAGS.data_dir, dataset_options=options,
      epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, lr=FLAGS.lr,
      warmup_epochs=FLAGS.warmup_epochs, lr_milestones=milestones, lr_factors=factors,
      weight_decay=FLAGS.weight_decay, deferred_epoch=FLAGS.deferred_epoch, beta=FLAGS.beta,
      lam=FLAGS.lam, gamma=FLAGS.gamma, steps=FLAGS.steps, step_size=FLAGS.step_size,
      start_noise=FLAGS.start_noise, no_reject=FLAGS.no_reject, accept_mode=FLAGS.accept_mode,
      self_translation=FLAGS.self_translation, seed_pool_size=FLAGS.seed_pool_size,
      n_buckets=FLAGS.n_buckets, fold_batchnorm=FLAGS.fold_batchnorm,
      g_checkpoint=FLAGS.g_checkpoint,
      loss_reduction=FLAGS.loss_reduction, jit_compile=FLAGS.jit_compile,
      strategy=FLAGS.strategy, mixed_precision=FLAGS.mixed_precision, overwrite=FLAGS.overwrite,
      verbose=FLAGS.verbose, init_from=FLAGS.init_from, init_epoch=FLAGS.init_epoch,
      keep_epochs=tuple(int(e) for e in FLAGS.keep_epochs))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from data_prep.paths import DataNotFoundError  # pylint: disable=g-import-not-at-top
  from m2m_tf.errors import M2mError  # pylint: disable=g-import-not-at-top
  from m2m_tf.training.run import run_experiment  # pylint: disable=g-import-not-at-top
  config = config_from_flags()
  try:
    results = run_experiment(config)
  except KeyboardInterrupt:
    print("m2m_tf.main: interrupted; run the same command again to resume.", file=sys.stderr)
    sys.exit(130)
  except (M2mError, DataNotFoundError) as e:
    # User errors get one line; anything else is a bug and keeps its traceback.
    sys.exit(f"m2m_tf.main: error: {e}")
  line = (f"{results['dataset']} {results['loss']}-{results['method']} seed {results['seed']}: "
          f"test bACC {results['test_bacc']:.2f} GM {results['test_gm']:.2f} | "
          f"val bACC {results['val_bacc']:.2f} GM {results['val_gm']:.2f} | "
          f"best epoch {results['best_epoch']} | {results['seconds']:.0f} s")
  if results.get("data_label"):
    line += f" [{results['data_label']}]"
  print(line)
  print(f"results: {os.path.join(config.output_dir, 'results.json')}")
  sys.stdout.flush()


def run_main():
  """Console-script entry point (`m2m-train`); --help prints the flags and exits 0."""
  from m2m_tf.cli import run_absl  # pylint: disable=g-import-not-at-top
  run_absl(main)


if __name__ == "__main__":
  run_main()
