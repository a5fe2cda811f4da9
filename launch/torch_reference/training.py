"""The PyTorch reference's recipe and training (docs/torch_reference.md): the official
CIFAR-10-LT recipe, DRW/LDAM losses, M2m's seed choice and translation, one run's epochs with
its resumable history.csv and state.pt, and the plan of runs that `launch.torch_reference all`
trains.

It imports no TensorFlow (of m2m_tf only its NumPy metrics), so it runs on a GPU machine that
has none, and PyTorch only on first use, so that the tables (`launch.torch_reference.report`)
read its histories without PyTorch.
"""

import csv
import dataclasses
import hashlib
import io
import pathlib
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from data_prep.atomic import atomic_save, atomic_write_text
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
  """PyTorch, imported on first use."""
  import torch  # lazy: PyTorch; the TF-side commands (report, collect) run without it
  return torch


def build_resnet32(num_classes: int = 10, normed_head: bool = False):
  """The official ResNet-32 with its initialisation (`launch.torch_reference.resnet.resnet32`)."""
  from launch.torch_reference import resnet  # lazy: PyTorch; TF-side commands run without it
  return resnet.resnet32(num_classes, normed_head)


def load_official(model, path) -> None:
  """Loads the official g's `.npz` state dict into `model` (`launch.torch_reference.resnet`)."""
  from launch.torch_reference import resnet  # lazy: PyTorch; TF-side commands run without it
  resnet.load_official(model, path)


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
  text = io.StringIO()
  writer = csv.DictWriter(text, fieldnames=list(rows[0]))
  writer.writeheader()
  writer.writerows(rows)
  atomic_write_text(str(out / "history.csv"), text.getvalue())


def save_state(out: pathlib.Path, f, opt, epochs_done: int) -> None:
  """Saves f, the optimizer and the epoch count to state.pt atomically."""
  torch = _torch()
  state = {"f": f.state_dict(), "opt": opt.state_dict(), "epochs": epochs_done}
  atomic_save(lambda tmp: torch.save(state, tmp), str(out / "state.pt"))


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



def digest(images: np.ndarray) -> str:
  """sha256 of uint8 NHWC images."""
  return hashlib.sha256(np.ascontiguousarray(images, np.uint8).tobytes()).hexdigest()

