"""An independent PyTorch reference of the CIFAR-10-LT CE rows (ERM, DRS, M2m), run on a GPU.

Why: the TF rows of `launch/cifar_full.py` sit a few points under the paper's numbers. The data
are a lossy JPEG substitute, so part of that gap is expected; this module measures how much is
the data's and how much could be ours. It re-implements the official PyTorch recipe
(docs/torch_reference.md lists each rule and where it differs from m2m_tf) without importing
TensorFlow (of m2m_tf only its NumPy metrics), so it runs where TensorFlow does not (a lent GPU
machine), on the very arrays the TF runs use (exported here by `export`). The model is
launch/torch_resnet.py; the subcommands that run beside m2m_tf are in
launch/torch_reference_bridge.py, the tables in launch/torch_reference_report.py.

Commands:
  python -m launch.torch_reference export --out .torchref        # here: JPEGs + official g
  python -m launch.torch_reference import_tf                      # here: m2m_tf's phase 1
  python3 -m launch.torch_reference all --data .torchref --out DIR --seeds 0,1,2
                                                                 # on a GPU: 3 seeds, 4 runs each
  python -m launch.torch_reference collect --src DIR              # here: histories to results/
  python -m launch.torch_reference report --runs results/torch_reference   # here: the tables

`all` runs, per seed, ERM for 160 epochs (`erm_phase1_s<seed>`), then three branches from its
state after epoch 160 in parallel processes: ERM, DRS and M2m to 200 epochs (`--loss ldam`:
LDAM's phase 1, then LDAM, LDAM-DRW and LDAM-M2m). Every run keeps
`history.csv` (one row per epoch, rewritten atomically) and `state.pt` (its latest state), and
resumes from them; `--deadline_s` stops the runs and leaves them resumable. docs/torch_reference.md
gives the device commands, what a 15-minute GPU budget covers, and the results so far.
"""

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

# NumPy only (no TensorFlow): the metrics' definitions are shared with m2m_tf's tables.
from m2m_tf import metrics

DATA_FILE = "cifar10_jpeg_lt.npz"
JPEG_FILE = "cifar10_jpeg_lt_jpeg.npz"
SPLITS = ("train", "val", "test")
G_FILE = "official_g.npz"
G_SOURCE = "official_erm_resnet32_cifar10lt_r100.npz"
METHODS = ("erm", "drs", "drw", "m2m")
# The rows: run-name prefix -> (loss, method), as launch.tables.TABLE2_ROWS (a test checks);
# the branches of each loss's phase-1 run.
ROWS = {"erm": ("ce", "erm"), "drs": ("ce", "drs"), "m2m": ("ce", "m2m"),
        "ldam": ("ldam", "erm"), "ldam_drw": ("ldam", "drw"), "ldam_m2m": ("ldam", "m2m")}
BRANCHES = {"ce": ("erm", "drs", "m2m"), "ldam": ("erm", "drw", "m2m")}


@dataclasses.dataclass(frozen=True)
class Recipe:
  """The official CIFAR-10-LT recipe and M2m values (docs/torch_reference.md).

  Attributes:
    epochs, batch_size, lr, warmup, milestones, weight_decay, deferral: the schedule.
    beta, lam, gamma, step_size, steps, start_noise: M2m's rejection, translation and acceptance.
    loss: "ce", or "ldam" (f then has the cosine head); ldam_max_margin, ldam_scale: LDAM's.
    cb_beta: DRW's class-balanced weights (1 - beta) / (1 - beta^N_k), normalised to sum K.
  """

  epochs: int = 200
  batch_size: int = 128
  lr: float = 0.1
  warmup: int = 5
  milestones: Sequence[int] = (160, 180)
  weight_decay: float = 2e-4
  deferral: int = 160
  beta: float = 0.999
  lam: float = 0.5
  gamma: float = 0.9
  step_size: float = 0.1
  steps: int = 10
  start_noise: float = 0.5
  loss: str = "ce"
  ldam_max_margin: float = 0.5
  ldam_scale: float = 30.0
  cb_beta: float = 0.999  # the M2m release's run.sh, as m2m_tf's CIFAR recipe


def learning_rate(recipe: Recipe, epoch: int) -> float:
  """The lr of 0-based `epoch`: linear warm-up, then x0.01 at each milestone."""
  if epoch < recipe.warmup:
    return recipe.lr * (epoch + 1) / recipe.warmup
  return recipe.lr * 0.01 ** sum(epoch >= m for m in recipe.milestones)


def drw_weights(counts, beta: float):
  """DRW's class weights (1 - beta) / (1 - beta^N_k), normalised to sum to K."""
  w = (1.0 - beta) / (1.0 - beta ** counts)
  return w / w.sum() * len(counts)


def batch_loss(logits, y, counts, recipe: Recipe, weights=None):
  """The mean over the batch of w_{y_i} * loss_i (the official reduction): CE, or LDAM's
  CE(s * (z - m_y e_y)) with m_k proportional to N_k^(-1/4), the largest `ldam_max_margin`."""
  torch = _torch()
  if recipe.loss == "ldam":
    margins = counts ** -0.25
    margins = margins * (recipe.ldam_max_margin / margins.max())
    shift = torch.nn.functional.one_hot(y, len(counts)) * margins[y][:, None]
    logits = recipe.ldam_scale * (logits - shift)
  per_example = torch.nn.functional.cross_entropy(logits, y, weight=weights, reduction="none")
  return per_example.mean()


def _torch():
  """PyTorch, imported on first use (this module's TF-side commands do not need it)."""
  import torch  # pylint: disable=g-import-not-at-top
  return torch


def build_resnet32(num_classes: int = 10, normed_head: bool = False):
  """The official ResNet-32 with its initialisation (`launch.torch_resnet.resnet32`)."""
  from launch import torch_resnet  # pylint: disable=g-import-not-at-top
  return torch_resnet.resnet32(num_classes, normed_head)


def load_official(model, path) -> None:
  """Loads the official g's `.npz` state dict into `model` (`launch.torch_resnet`)."""
  from launch import torch_resnet  # pylint: disable=g-import-not-at-top
  torch_resnet.load_official(model, path)


def augment(x, gen):
  """Random crop of the 4-pixel zero-padded image and a horizontal flip, per image ([B,3,H,W])."""
  torch = _torch()
  b, c, h, w = x.shape
  padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
  dy = torch.randint(0, 9, (b,), device=x.device, generator=gen)
  dx = torch.randint(0, 9, (b,), device=x.device, generator=gen)
  rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
  cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
  out = padded[torch.arange(b, device=x.device)[:, None, None, None],
               torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
  flip = torch.rand(b, device=x.device, generator=gen) < 0.5
  return torch.where(flip[:, None, None, None], out.flip(3), out)


def translate(g, f, x0, seed_y, target_y, recipe: Recipe, gen):
  """x* from seeds x0: the random start, then T steps of the L2-normalised gradient of
  CE(g(x), y_i) + lam * mean f(x)[y_j], clamped to [0, 1] (g and f in eval mode)."""
  torch = _torch()
  x = x0
  if recipe.start_noise > 0:
    # As the official code: uniform noise renormalised along dim 1 (per channel, batch-wide).
    noise = torch.rand(x0.shape, device=x0.device, generator=gen) - 0.5
    x = (x0 + noise.renorm(2, 1, recipe.start_noise)).clamp(0, 1)
  for _ in range(recipe.steps):
    x = x.detach().requires_grad_(True)
    f_seed = f(x).gather(1, seed_y[:, None]).mean()
    loss = torch.nn.functional.cross_entropy(g(x), target_y) + recipe.lam * f_seed
    grad, = torch.autograd.grad(loss, [x])
    norm = grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    x = (x - recipe.step_size * grad / (norm + 1e-10)).clamp(0, 1)
  return x.detach()


def choose_seeds(y, counts, recipe: Recipe, gen):
  """The official slot and seed choice: (number of generation slots, the slots that have a
  seed, their seeds' batch indices, p_accept).

  Slot i generates with probability 1 - N_{y_i} / N_max; its seed j is drawn from the batch
  with weight 1 - beta^max(N_{y_j} - N_{y_i}, 0); slots without any seed are dropped.
  """
  torch = _torch()
  keep = counts[y] / counts.max()
  slots = (torch.bernoulli(keep, generator=gen) == 0).nonzero().view(-1)
  n_gen = slots.numel()
  w = 1 - recipe.beta ** torch.relu(counts[y][None, :] - counts[y[slots]][:, None])
  valid = w.sum(1) > 0
  slots, w = slots[valid], w[valid]
  if slots.numel() == 0:
    return n_gen, slots, slots, w.sum(1)
  j = torch.multinomial(w, 1, replacement=True, generator=gen).view(-1)
  return n_gen, slots, j, w.gather(1, j[:, None]).view(-1)


def m2m_batch(f, g, x, y, counts, recipe: Recipe, gen):
  """The official phase-2 batch: translated samples replace the accepted slots' inputs (their
  label y_i stays). Returns (x, [generation slots, slots with a seed, accepted])."""
  torch = _torch()
  n_gen, slots, j, p_accept = choose_seeds(y, counts, recipe, gen)
  if slots.numel() == 0:
    return x, [n_gen, 0, 0]
  f.eval()
  x_star = translate(g, f, x[j], y[j], y[slots], recipe, gen)
  with torch.no_grad():
    p_target = torch.softmax(g(x_star), 1).gather(1, y[slots][:, None]).view(-1)
  f.train()
  accepted = (p_target >= recipe.gamma) & (torch.bernoulli(p_accept, generator=gen) > 0)
  x = x.clone()
  x[slots[accepted]] = x_star[accepted]
  return x, [n_gen, slots.numel(), int(accepted.sum())]


def load_arrays(data_dir, device, limit: Optional[int] = None) -> Dict[str, object]:
  """The decoded arrays on `device`: uint8 NCHW images, int64 labels, float class counts.

  limit (tests only) keeps each class's first images in proportion (at least one): about
  `limit` training images, a tenth as many validation and test images.
  """
  torch = _torch()
  with np.load(pathlib.Path(data_dir) / DATA_FILE) as npz:
    arrays = {k: np.array(npz[k]) for k in npz.files}
  for split in SPLITS if limit else ():
    y = arrays[f"y_{split}"]
    share = (limit if split == "train" else limit // 10) / len(y)
    keep = np.concatenate([np.flatnonzero(y == c)[:max(1, round(share * np.sum(y == c)))]
                           for c in np.unique(y)])
    arrays[f"x_{split}"], arrays[f"y_{split}"] = arrays[f"x_{split}"][keep], y[keep]
  data = {k: torch.from_numpy(v).to(device) for k, v in arrays.items()}
  counts = np.bincount(arrays["y_train"])
  data["counts"] = torch.tensor(counts, dtype=torch.float32, device=device)
  return data


@dataclasses.dataclass
class Run:
  """One training run: its folder, method, seed and the epoch it trains to.

  Attributes:
    out: the run's folder (history.csv, state.pt, result.json, log).
    method: "erm", "drs" or "m2m".
    seed: the seed of f's initialisation and of every epoch's random draws.
    until: the last epoch (a phase-1 run stops at the deferral epoch).
    init_from: a finished phase-1 run's folder to branch from, or None.
  """

  out: pathlib.Path
  method: str
  seed: int
  until: int
  init_from: Optional[pathlib.Path] = None


def train_epoch(f, g, opt, data, run: Run, epoch: int, recipe: Recipe) -> Dict[str, float]:
  """One epoch (0-based): uniform batches, or class-balanced ones in DRS's and M2m's phase 2,
  translated by M2m there; DRW weighs the loss by class there. Every draw comes from a
  generator seeded by (seed, epoch)."""
  torch = _torch()
  device = data["y_train"].device
  gen = torch.Generator(device=device).manual_seed(run.seed * 1_000_003 + epoch)
  y_all, counts, n = data["y_train"], data["counts"], len(data["y_train"])
  phase2 = run.method != "erm" and epoch >= recipe.deferral
  weights = drw_weights(counts, recipe.cb_beta) if phase2 and run.method == "drw" else None
  if phase2 and run.method in ("drs", "m2m"):
    idx = torch.multinomial(1.0 / counts[y_all], n, replacement=True, generator=gen)
  else:
    idx = torch.randperm(n, device=device, generator=gen)
  f.train()
  loss_sum, correct, stats = torch.zeros((), device=device), 0, np.zeros(3)
  for batch in idx.split(recipe.batch_size):
    x, y = augment(data["x_train"][batch].float() / 255, gen), y_all[batch]
    if phase2 and run.method == "m2m":
      x, batch_stats = m2m_batch(f, g, x, y, counts, recipe, gen)
      stats += batch_stats
    logits = f(x)
    loss = batch_loss(logits, y, counts, recipe, weights)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    loss_sum += loss.detach() * len(batch)
    correct += (logits.argmax(1) == y).sum()
  return {"train_loss": float(loss_sum) / n, "train_acc": 100.0 * float(correct) / n,
          "gen_slots": stats[0], "seeded": stats[1], "accepted": stats[2]}


def recalls(model, x, y, num_classes: int) -> np.ndarray:
  """Per-class recall in [0, 1] of `model` (eval mode) on uint8 images x and labels y."""
  torch = _torch()
  model.eval()
  with torch.no_grad():
    pred = torch.cat([model(xb.float() / 255).argmax(1) for xb in x.split(1000)])
  hits = torch.bincount(y[pred == y], minlength=num_classes).double()
  return (hits / torch.bincount(y, minlength=num_classes).double()).cpu().numpy()


def evaluate(model, data) -> Dict[str, float]:
  """Validation and test bACC and GM (%, m2m_tf's NumPy definitions, so both sides report the
  same metrics), and each class's test recall (%)."""
  k = len(data["counts"])
  row = {}
  for split in ("val", "test"):
    r = recalls(model, data[f"x_{split}"], data[f"y_{split}"], k)
    row[f"{split}_bacc"] = 100 * metrics.balanced_accuracy(r)
    row[f"{split}_gm"] = 100 * metrics.geometric_mean(r)
  row.update({f"recall_{c}": 100 * float(v) for c, v in enumerate(r)})
  return row


def read_history(out: pathlib.Path) -> List[Dict[str, str]]:
  """The rows of a run's history.csv (none if it has none)."""
  path = out / "history.csv"
  if not path.exists():
    return []
  with open(path, newline="") as fh:
    return list(csv.DictReader(fh))


def write_history(out: pathlib.Path, rows: Sequence[Dict]) -> None:
  """Rewrites history.csv atomically (a kill leaves the old file or the new one)."""
  tmp = out / "history.csv.tmp"
  with open(tmp, "w", newline="") as fh:
    writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  os.replace(tmp, out / "history.csv")


def save_state(out: pathlib.Path, f, opt, epochs_done: int) -> None:
  """Saves f, the optimizer and the epoch count to state.pt atomically."""
  torch = _torch()
  tmp = out / "state.pt.tmp"
  torch.save({"f": f.state_dict(), "opt": opt.state_dict(), "epochs": epochs_done}, tmp)
  os.replace(tmp, out / "state.pt")


def restore(run: Run, f, opt, recipe: Recipe):
  """(epochs done, history rows): the run's own state, else its phase-1 source's state after
  the deferral epoch (refused at any other epoch), else a fresh start."""
  torch = _torch()
  source = run.out if (run.out / "state.pt").exists() else run.init_from
  if source is None:
    return 0, []
  state = torch.load(source / "state.pt", map_location=next(f.parameters()).device)
  rows = read_history(source)[:state["epochs"]]
  if source == run.init_from and state["epochs"] != recipe.deferral:
    raise SystemExit(f"{source}: has {state['epochs']} epochs, a branch needs "
                     f"{recipe.deferral}")
  f.load_state_dict(state["f"])
  opt.load_state_dict(state["opt"])
  return state["epochs"], rows


def build_models(g_path, device, seed: int, recipe: Recipe):
  """(f, g, optimizer): f initialised from `seed` (LDAM: with the cosine head), g the official
  checkpoint at `g_path`, frozen."""
  torch = _torch()
  torch.manual_seed(seed)
  f = build_resnet32(normed_head=recipe.loss == "ldam").to(device)
  g = build_resnet32()
  load_official(g, g_path)
  g = g.to(device).eval().requires_grad_(False)
  opt = torch.optim.SGD(f.parameters(), lr=recipe.lr, momentum=0.9,
                        weight_decay=recipe.weight_decay)
  return f, g, opt


def train(run: Run, data_dir, recipe: Recipe, device: str = "cuda",
          deadline: Optional[float] = None, limit: Optional[int] = None) -> bool:
  """Trains `run` to `run.until` epochs, resuming where it stopped; True when finished.

  After each epoch: history.csv, then state.pt, both atomic. Past `deadline` (a Unix time) it
  stops after the epoch in progress.
  """
  run.out.mkdir(parents=True, exist_ok=True)
  data = load_arrays(data_dir, device, limit)
  f, g, opt = build_models(pathlib.Path(data_dir) / G_FILE, device, run.seed, recipe)
  done, rows = restore(run, f, opt, recipe)
  for epoch in range(done, run.until):
    if deadline is not None and time.time() > deadline:
      return False
    t0 = time.time()
    lr = learning_rate(recipe, epoch)
    for group in opt.param_groups:
      group["lr"] = lr
    row = {"epoch": epoch + 1, "lr": lr}
    row.update(train_epoch(f, g, opt, data, run, epoch, recipe))
    row.update(evaluate(f, data))
    row["seconds"] = time.time() - t0
    rows.append(row)
    write_history(run.out, rows)
    save_state(run.out, f, opt, epoch + 1)
    print(f"{run.out.name} epoch {epoch + 1}: loss {row['train_loss']:.3f} val "
          f"{row['val_bacc']:.2f} test {row['test_bacc']:.2f} ({row['seconds']:.1f} s)",
          flush=True)
  return True


def row_name(loss: str, method: str) -> str:
  """The run-name prefix of a row (a key of ROWS): "drs", "ldam_drw", ..."""
  return next(name for name, row in ROWS.items() if row == (loss, method))


def plan(out: pathlib.Path, seeds: Sequence[int], recipe: Recipe,
         branches: Optional[Sequence[str]] = None) -> Dict[str, Run]:
  """Per seed: the loss's phase-1 run (`erm_phase1_s<seed>`, `ldam_phase1_s<seed>`), then the
  `branches` (methods; default `BRANCHES[loss]`) branched from it."""
  prefix = "erm" if recipe.loss == "ce" else recipe.loss
  runs = {}
  for s in seeds:
    phase1 = out / f"{prefix}_phase1_s{s}"
    runs[phase1.name] = Run(phase1, "erm", s, recipe.deferral)
    for m in branches or BRANCHES[recipe.loss]:
      name = f"{row_name(recipe.loss, m)}_s{s}"
      runs[name] = Run(out / name, m, s, recipe.epochs, phase1)
  return runs


def _command(run: Run, args) -> List[str]:
  """The `train` command line of one run (a child process of `all`)."""
  cmd = [sys.executable, "-m", "launch.torch_reference", "train", "--data", str(args.data),
         "--out", str(run.out), "--method", run.method, "--seed", str(run.seed),
         "--until", str(run.until), "--device", args.device, "--epochs", str(args.epochs),
         "--deferral", str(args.deferral), "--deadline_at", str(args.deadline_at),
         "--loss", args.loss]
  if args.limit:
    cmd += ["--limit", str(args.limit)]
  return cmd + (["--init_from", str(run.init_from)] if run.init_from else [])


def run_all(args) -> int:
  """Runs the plan: each phase-1 run, then its three branches, each in its own process (the
  GPU is far from busy with one small ResNet). Returns the number of unfinished runs."""
  recipe = _recipe(args)
  runs = plan(pathlib.Path(args.out), args.seeds, recipe, args.branches)
  waiting = dict(runs)
  running: Dict[str, subprocess.Popen] = {}
  failed = set()
  while waiting or running:
    for name, run in list(waiting.items()):
      source = run.init_from.name if run.init_from else None
      if source is None or (runs[source].out / "result.json").exists():
        run.out.mkdir(parents=True, exist_ok=True)
        log = open(run.out.with_suffix(".log"), "a")  # pylint: disable=consider-using-with
        running[name] = subprocess.Popen(_command(run, args), stdout=log, stderr=log)
        del waiting[name]
      elif source not in waiting and source not in running:  # failed or stopped unfinished
        del waiting[name]
        failed.add(name)
    time.sleep(1)
    for name, proc in list(running.items()):
      if proc.poll() is not None:
        finished = (runs[name].out / "result.json").exists()
        print(f"{time.strftime('%H:%M:%S')} {name}: exit {proc.returncode}, "
              f"{'finished' if finished else 'unfinished'}", flush=True)
        if not finished:
          failed.add(name)
        del running[name]
  return len(failed)


def run_result(run: Run, finished: bool) -> None:
  """Writes result.json of a finished run (its existence is what branches wait for)."""
  if finished:
    rows = read_history(run.out)
    tmp = run.out / "result.json.tmp"
    tmp.write_text(json.dumps({"epochs": len(rows), "method": run.method, "seed": run.seed}))
    os.replace(tmp, run.out / "result.json")


def _recipe(args) -> Recipe:
  """The recipe of the command line's loss, with its test-only schedule overrides."""
  milestones = tuple(m for m in Recipe.milestones if m < args.epochs) or (args.deferral,)
  return Recipe(epochs=args.epochs, deferral=args.deferral, milestones=milestones,
                warmup=min(Recipe.warmup, args.deferral), loss=args.loss)


def digest(images: np.ndarray) -> str:
  """sha256 of uint8 NHWC images."""
  return hashlib.sha256(np.ascontiguousarray(images, np.uint8).tobytes()).hexdigest()


def decode(src, dest) -> Dict[str, object]:
  """Decodes the exported JPEGs with Pillow into `dest`/DATA_FILE (NCHW uint8, labels) and
  checks them against the TF decode's digests. Returns the check: per split, whether the
  sha256 of the decoded images equals TF's."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if not (pathlib.Path(src) / JPEG_FILE).exists():
    raise SystemExit(f"{src}: no {JPEG_FILE}; write it with `python -m launch.torch_reference "
                     "export` where m2m_tf is installed")
  with np.load(pathlib.Path(src) / JPEG_FILE) as npz:
    exported = {k: np.array(npz[k]) for k in npz.files}
  arrays, check = {}, {}
  for split in SPLITS:
    jpeg, offsets = exported[f"jpeg_{split}"], exported[f"offsets_{split}"]
    images = np.stack([np.asarray(Image.open(io.BytesIO(jpeg[a:b].tobytes())).convert("RGB"))
                       for a, b in zip(offsets[:-1], offsets[1:])])
    check[split] = {"match": digest(images) == str(exported[f"digest_{split}"])}
    arrays[f"x_{split}"] = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    arrays[f"y_{split}"] = exported[f"y_{split}"]
  pathlib.Path(dest).mkdir(parents=True, exist_ok=True)
  np.savez(pathlib.Path(dest) / DATA_FILE, **arrays)
  shutil.copyfile(pathlib.Path(src) / G_FILE, pathlib.Path(dest) / G_FILE)
  return check


def _parser() -> argparse.ArgumentParser:
  """The command line: export | import_tf | train | all | collect | report."""
  p = argparse.ArgumentParser(prog="python -m launch.torch_reference", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True)
  for name in ("train", "all"):
    t = sub.add_parser(name, help=f"{name} (PyTorch)")
    t.add_argument("--data", default=".torchref",
                   help="all: the exported folder; train: the decoded folder")
    t.add_argument("--out", required=True)
    t.add_argument("--device", default="cuda")
    t.add_argument("--epochs", type=int, default=Recipe.epochs)
    t.add_argument("--deferral", type=int, default=Recipe.deferral)
    t.add_argument("--deadline_at", type=float, default=0.0, help="Unix time; 0: none")
    t.add_argument("--limit", type=int, default=0, help="tests only (load_arrays)")
    t.add_argument("--loss", choices=("ce", "ldam"), default="ce")
  train_p, all_p = sub.choices["train"], sub.choices["all"]
  train_p.add_argument("--method", choices=METHODS, required=True)
  train_p.add_argument("--seed", type=int, required=True)
  train_p.add_argument("--until", type=int, required=True)
  train_p.add_argument("--init_from", default=None)
  all_p.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2])
  all_p.add_argument("--branches", type=lambda s: s.split(","), default=None,
                     help="the methods to branch from each phase-1 run (default: ce: erm,drs,"
                     "m2m; ldam: erm,drw,m2m)")
  all_p.add_argument("--decoded", default=None, help="decoded arrays' folder (<out>_data)")
  all_p.add_argument("--deadline_s", type=float, default=0.0, help="seconds from now; 0: none")
  _add_other_side(sub)
  return p


def _add_other_side(sub) -> None:
  """The subcommands that run beside m2m_tf or make the tables (`_other_side`)."""
  e = sub.add_parser("export", help="write the arrays and the official g (needs TensorFlow)")
  e.add_argument("--out", default=".torchref")
  e.add_argument("--data_dir", default=None)
  e.add_argument("--g_npz", default=None)
  i = sub.add_parser("import_tf", help="m2m_tf's phase-1 state as a phase-1 run (needs TF)")
  i.add_argument("--tf_run", default="results/cifar10_jpeg_lt_full/erm_phase1_s0")
  i.add_argument("--out", default=".torchref/from_tf/erm_phase1_s0")
  c = sub.add_parser("collect", help="copy histories from a device output folder")
  c.add_argument("--src", required=True)
  c.add_argument("--dest", default="results/torch_reference")
  c.add_argument("--states", action="store_true", help="also unfinished runs' state.pt")
  r = sub.add_parser("report", help="the tables (needs pandas)")
  r.add_argument("--runs", default="results/torch_reference")
  r.add_argument("--results_dir", default="results")


def _machine(args, decode_check) -> None:
  """Records the GPU, the PyTorch version and the decode check beside the runs (machine.json)."""
  torch = _torch()
  gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"
  info = {"gpu": gpu, "torch": torch.__version__, "seeds": args.seeds,
          "decode_check": decode_check}
  pathlib.Path(args.out).mkdir(parents=True, exist_ok=True)
  (pathlib.Path(args.out) / "machine.json").write_text(json.dumps(info))


def _other_side(args):
  """The subcommands that run beside m2m_tf (launch/torch_reference_bridge.py) or make the
  tables (launch/torch_reference_report.py); returns what they wrote."""
  # pylint: disable=g-import-not-at-top
  from launch import torch_reference_bridge as bridge
  from launch import torch_reference_report as tables
  if args.command == "export":
    return bridge.export(args.out, args.data_dir, args.g_npz)
  if args.command == "import_tf":
    return bridge.import_tf_phase1(args.tf_run, args.out)
  if args.command == "collect":
    return " ".join(tables.collect(args.src, args.dest, args.states))
  return tables.report(args.runs, args.results_dir)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs one subcommand; returns the exit status."""
  args = _parser().parse_args(argv)
  if args.command in ("export", "import_tf", "collect", "report"):
    print(_other_side(args))
    return 0
  torch = _torch()
  torch.backends.cudnn.benchmark = True  # as the official code
  torch.backends.cudnn.allow_tf32 = False  # float32 convolutions, as the TF runs
  torch.backends.cuda.matmul.allow_tf32 = False
  torch.set_num_threads(1)
  if args.command == "all":
    unknown = sorted(set(args.branches or ()) - set(BRANCHES[args.loss]))
    if unknown:  # before anything is decoded or trained
      raise SystemExit(f"--branches {','.join(unknown)}: the {args.loss} rows are "
                       f"{','.join(BRANCHES[args.loss])}")
    args.deadline_at = time.time() + args.deadline_s if args.deadline_s else 0.0
    decoded = pathlib.Path(args.decoded or f"{args.out.rstrip('/')}_data")
    _machine(args, decode(args.data, decoded))
    args.data = str(decoded)
    return 1 if run_all(args) else 0
  run = Run(pathlib.Path(args.out), args.method, args.seed, args.until,
            pathlib.Path(args.init_from) if args.init_from else None)
  finished = train(run, args.data, _recipe(args), args.device, args.deadline_at or None,
                   args.limit or None)
  run_result(run, finished)
  print(f"{run.out.name}: {'finished' if finished else 'stopped at the deadline'}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
