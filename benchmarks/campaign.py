"""The converged results: train the paper preset's long rows to their plans across sittings, score
them, ship them as pretrained tags, and regenerate the converged table from their records.

    python benchmarks/campaign.py --max-minutes 150      # rerun every sitting until the table is complete
    python benchmarks/campaign.py --status               # one line a row, in seconds; trains nothing
    python benchmarks/campaign.py --table                # the tables and curves from the records; trains nothing

The rows are the recipes of benchmarks/recipes/paper/ with a ``[campaign]`` table (`Plan`): the
recipe says what is trained (model, config, objective, data, planned epochs, learning-rate
schedule), its ``[benchmark]`` table how it is scored (`nll_mnist.Scoring`: K importance samples,
a seeded test subset), its ``[campaign]`` table where it stands in the queue (``priority``), the
published figure it is held against, the epochs at which it is scored before its plan
(``score_at``), how often a milestone checkpoint is committed and its pretrained tag. A row with a
cosine learning rate and ``extend`` that ends its plan with no plateau (its best validation -ELBO
improved `PLATEAU` nats or more over the last 10% of its epochs) trains on at lr_min, ``extend``
epochs at a time, until it has one or reaches ``max_epochs``; it is scored at that end.

Each row trains as ``drawzoo train --recipe RECIPE --checkpoint RUN`` (the command a person
reruns), in its own process on ``--threads`` threads, ``--jobs`` rows at a time in priority
order, each row one job at a time (scoring before training). A job stops with a checkpoint at the
time limit, on SIGTERM/SIGINT (forwarded to it), and when the campaign dies (Linux: a parent-death
signal); a SIGKILL loses at most the steps since its last save (every epoch, or ``every_steps``).
When a row reaches a scoring epoch (``score_at``, its plan), its best-validation weights are stored
as its tag's weight file (`Plan.dtype`) and scored from that file, in resumable parts:

- the test -ELBO, K=1, on every test image (``drawzoo eval -k 1``);
- the importance-sampled NLL with the row's K on a seeded random order of the test images: the
  first ``test_limit`` of them (all when it has none), then, once the row's plan is done, on to
  all 10,000; the -ELBO and NLL at K' = 1, 10, 100, ... from the same samples (the K-convergence);
- a standard error beside each figure: the spread of the per-image figures over sqrt(images);
- the pretrained manifest's check figure (`pretrain.check_figure`).

A scoring job that stops goes on later from the per-image figures it saved, only if they are of the
same weights, K, seeds and chunks, computed by the same figure code (`figures_code`); else it
starts again.

A scored row's tag goes into drawzoo/weights/ with its figures (before the row's end, with a note
that the campaign replaces it: `tag_note`), its learning curve (a matplotlib plot:
``drawzoo[plots]``, checked before any work) into docs/campaign/, and the converged tables in
README.md and benchmarks/README.md are regenerated from the records (benchmarks/campaign/NAME.json,
one per row: the recipe it began with, each job's code, settings, epochs and wall time, the
history, the scores), with the paired differences of every two scored rows on the test images
both scored (`orderings_section`) from their per-image scores. Runs live in ``--runs`` (a cache
folder that survives between sittings); a milestone checkpoint of each unfinished row is copied
to benchmarks/campaign/ every ``milestone_every`` epochs, and a fresh machine resumes from it: the
record keeps the epochs that went with the old machine's run (`note_lost`), out of the row's train
time; a finished row, or a stop already scored, is not trained again.
A row whose recipe changed after its run began is refused (exit 2, the changed fields named),
but for its learning rate's schedule after lr (`AMENDABLE`) where its run has taken no step on the
cosine of the old recipe or of the new one: the run so far is the same, its learning rate changes
from the new cosine on, and the record keeps each such amendment (its date, epoch and fields).

Exit status: 0 everything done (or --status/--table), 2 an error, 75 time limit with work left,
128 + N stopped by signal N.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import hashlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import drawzoo  # noqa: E402
import nll_mnist  # noqa: E402
import pretrain  # noqa: E402
from drawzoo import data as datasets  # noqa: E402
from drawzoo import pretrained  # noqa: E402
from drawzoo.checkpoints import CheckpointLock, read_checkpoint, save_checkpoint  # noqa: E402
from drawzoo.config import as_dict, build_config, check_fields, param  # noqa: E402
from drawzoo.data import cache_dir  # noqa: E402
from drawzoo.cli import run_program  # noqa: E402
from drawzoo.errors import CheckpointError, DrawzooError, RecipeError  # noqa: E402
from drawzoo.training.stopping import StopRequests, signal_name  # noqa: E402
from drawzoo.figures import plots  # noqa: E402
from drawzoo.files import atomic_write, write_output  # noqa: E402
from drawzoo.registry import model_class  # noqa: E402
from drawzoo.training.config import SCHEDULE, TRAJECTORY, TrainConfig, before_cosine, cosine_epochs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]  #: the code's repository (its commit is recorded)
PRESET = "paper"
EXIT_TIME_LIMIT = 75  #: as `drawzoo train`: stopped by the time limit, rerun to continue
SPARE_MINUTES = 2.0  #: no job starts with less time than this left (or a tenth of the budget, if less)
K_LADDER = (1, 10, 100, 1000)  #: the K' of the K-convergence, each that divides the row's K
PLATEAU = 0.05  #: nats: a plateau is a best validation -ELBO that improved less over the last 10% of the epochs


class CampaignError(DrawzooError):
    """A campaign mistake: one line, exit status 2."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """A row's place in the campaign: its recipe's ``[campaign]`` table."""

    tag: str = param("", "the pretrained tag MODEL.NAME its scored weights ship as")
    priority: int = param(100, "rows get jobs in this order, lowest first")
    published: float | None = param(None, "the published test figure it is held against (nats, of `compare`)")
    compare: str = param("nll", "which test figure `published` and `target` are: nll or neg_elbo",
                         choices=("nll", "neg_elbo"))
    target: float | None = param(None, "the figure this campaign aims for (nats, of `compare`)")
    score_at: list[int] = param((), "epochs before the plan at which it is scored and its tag replaced")
    milestone_every: int = param(20, "epochs between the milestone checkpoints committed to benchmarks/campaign/ "
                                 "(0: none; a fresh machine starts the row again)")
    extend: int = param(0, "a row that ends its plan (a cosine learning rate) with no plateau trains on at "
                        "lr_min this many epochs more, again until it has one or reaches max_epochs [0: never]")
    max_epochs: int | None = param(None, "the most epochs `extend` takes a row to")
    dtype: str = param("float16", "how the tag stores the weights", choices=("float16", "float32"))

    def __post_init__(self):
        check_fields(self, "campaign")
        object.__setattr__(self, "score_at", sorted(set(self.score_at)))


@dataclasses.dataclass(frozen=True)
class Row:
    """A campaign row: its recipe file's name, the recipe and scoring (`nll_mnist.Row`) and the plan."""

    name: str
    bench: nll_mnist.Row
    plan: Plan

    @property
    def recipe(self):
        return self.bench.recipe

    @property
    def scoring(self) -> nll_mnist.Scoring:
        return self.bench.scoring

    @property
    def label(self) -> str:
        return self.bench.label

    @property
    def train(self) -> TrainConfig:
        return self.bench.train

    def end(self, record: dict) -> int:
        """The epoch the row trains to: its plan, or as far as `extended` moved it (in its `record`)."""
        return record.get("end", self.train.epochs)

    def stops(self, record: dict) -> list[int]:
        """The epochs at which the row is scored: `Plan.score_at` and its end."""
        end = self.end(record)
        return [e for e in self.plan.score_at if e < end] + [end]

    def next_stop(self, epoch: float, record: dict) -> int | None:
        """The stop a run at `epoch` trains to: the first one after it not scored yet (a run that
        lost its checkpoint with a machine trains past the stops it scored: their weights are scored)."""
        return next((e for e in self.stops(record) if e > epoch and not scored(record, e)), None)


def scored(record: dict, stop: int) -> bool:
    """Whether `stop`'s weights have their NLL in `record`."""
    return bool(record.get("scores", {}).get(str(stop), {}).get("nll"))


def read_rows(folder: Path = nll_mnist.RECIPES / PRESET, names: list[str] | None = None) -> list[Row]:
    """The recipes in `folder` with a ``[campaign]`` table, in priority order (those of `names` only)."""
    rows = []
    if not folder.is_dir():
        raise CampaignError(f"{folder}: no such folder of recipes")
    for path in sorted(folder.glob("*.toml")):
        recipe = drawzoo.load_recipe(path)
        if not recipe.campaign:
            continue
        bench = nll_mnist.read_row(path)
        try:
            plan = build_config(Plan, recipe.campaign, kind="campaign")
        except DrawzooError as e:
            raise RecipeError(f"{path}: {e}") from None
        if plan.tag.partition(".")[0] != recipe.model or not plan.tag.partition(".")[2]:
            raise RecipeError(f"{path}: [campaign] tag must be {recipe.model}.NAME, got {plan.tag!r}")
        epochs = TrainConfig.from_dict(recipe.train).epochs
        if plan.milestone_every < 0:
            raise RecipeError(f"{path}: [campaign] milestone_every must be >= 0 (0: none), got {plan.milestone_every}")
        if plan.extend < 0 or (plan.extend and recipe.train.get("lr_min") is None):
            raise RecipeError(f"{path}: [campaign] extend trains on at the cosine's floor: it needs [train] lr_min "
                              f"and must be >= 0, got {plan.extend}")
        if plan.extend and (plan.max_epochs is None or plan.max_epochs <= epochs):
            raise RecipeError(f"{path}: [campaign] extend needs max_epochs above the plan's {epochs} epochs, "
                              f"got {plan.max_epochs}")
        rows.append(Row(path.stem, bench, plan))
    if names is not None:
        unknown = sorted(set(names) - {r.name for r in rows})
        if unknown:
            raise CampaignError(f"no campaign row {', '.join(unknown)}; rows: {', '.join(r.name for r in rows)}")
        rows = [r for r in rows if r.name in names]
    return sorted(rows, key=lambda r: (r.plan.priority, r.name))


# ---------------------------------------------------------------------------------------- places and records


@dataclasses.dataclass(frozen=True)
class Places:
    """Where a campaign's files are: runs (`runs`, outside the work tree) and what is committed (under `repo`)."""

    runs: Path
    repo: Path

    def run(self, row: Row) -> Path:
        return self.runs / f"{row.name}.pt"

    def best(self, row: Row) -> Path:
        return self.runs / f"{row.name}.best.pt"

    def log(self, row: Row) -> Path:
        return self.runs / f"{row.name}.log"

    def weights(self, row: Row, stop: int) -> Path:
        """The weights scored at `stop`, the tag's file to be (committed while it is scored: the
        tag's file is the same blob)."""
        return self.committed / f"{row.name}.e{stop}.weights.pt"

    @property
    def running(self) -> Path:
        """The jobs running now (pid, row, kind, stop, start), for --status."""
        return self.runs / "running.json"

    @property
    def committed(self) -> Path:
        return self.repo / "benchmarks" / "campaign"

    def record(self, row: Row) -> Path:
        return self.committed / f"{row.name}.json"

    def milestone(self, row: Row) -> Path:
        return self.committed / f"{row.name}.pt"

    def milestone_best(self, row: Row) -> Path:
        return self.committed / f"{row.name}.best.pt"

    def scores(self, row: Row, stop: int) -> Path:
        """The scoring in progress at `stop`: per-image figures (small; committed, so it resumes anywhere)."""
        return self.committed / f"{row.name}.e{stop}.scores.pt"

    def curve(self, row: Row) -> Path:
        return self.repo / "docs" / "campaign" / f"{row.name}.png"


def write_text(path: Path, text: str) -> None:
    """An output (records, tables): through `drawzoo.files.write_output`, which never replaces weights.
    Checkpoints, weights and scoring state are written by `atomic_write` alone, as training writes its own."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_output(path, text)


def copy(source: Path, dest: Path) -> None:
    """`source`'s bytes to `dest`, atomically: a checkpoint or weights (what `write_text` never replaces)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(dest) as f:
        f.write(source.read_bytes())


def load_record(places: Places, row: Row) -> dict:
    path = places.record(row)
    return json.loads(path.read_text()) if path.exists() else {}


def save_record(places: Places, row: Row, record: dict) -> None:
    write_text(places.record(row), json.dumps(record, indent=1) + "\n")


def recipe_snapshot(row: Row) -> dict:
    """What a row's run is: model, its full config, the train settings that fix its trajectory
    and plan, the data. A run's record keeps the one it began with."""
    config = as_dict(build_config(model_class(row.recipe.model).Config, row.recipe.config, model_name=row.recipe.model))
    train = {k: v for k, v in as_dict(row.train).items() if k in TRAJECTORY or k == "epochs"}
    return {"model": row.recipe.model, "config": config, "train": train, "data": as_dict(row.recipe.data)}


#: The recipe fields a row may change after its run began: the learning rate's schedule after lr,
#: where the run has taken no step on the cosine of either side (`prepare`).
AMENDABLE = tuple(f"train.{name}" for name in SCHEDULE)


def recipe_of(record: dict) -> dict:
    """The recipe snapshot a row's run follows: the one it began with, or its last amendment's."""
    return record["amended"][-1]["recipe"] if record.get("amended") else record["began"]["recipe"]


def changed_fields(began: dict, now: dict, prefix: str = "") -> list[str]:
    """``key: before -> now`` for each (dotted) field that differs."""
    out = []
    for key in sorted(set(began) | set(now)):
        a, b = began.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_fields(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def progress_of(path: Path) -> dict:
    """A run checkpoint's progress (epoch, step, history, ...); epoch 0 if there is none."""
    if not path.exists():
        return {"epoch": 0, "step": 0, "step_in_epoch": 0, "history": [], "best_valid": math.inf}
    return read_checkpoint(path)["progress"]


def epoch_of(progress: dict, row: Row) -> float:
    """Epochs done, the part-epoch included."""
    return progress["epoch"] + progress["step_in_epoch"] / steps_per_epoch(row)


def steps_per_epoch(row: Row) -> int:
    return math.ceil(50_000 / row.train.batch_size)  # binarized MNIST's train split


#: The parts of the package that compute a score's figures (models, estimators, data): what
#: `figures_code` hashes. Training, the CLI, the plots and the weights files are left out.
NOT_FIGURES_CODE = ("cli", "training", "figures", "weights")


def code_version() -> str:
    """The commit of the code that runs (``+dirty`` with changes to drawzoo/ or benchmarks/)."""
    def git(*args):
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True).stdout.strip()
    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--", "drawzoo", "benchmarks") else "")


def figures_code() -> str:
    """sha256 of the source of the package that runs, less `NOT_FIGURES_CODE`: the saved parts of a
    score are reused only by code of the same hash, so that no figure mixes two versions of the
    estimator, the models or the data (a commit or not, with or without git)."""
    package = Path(drawzoo.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        name = path.relative_to(package).as_posix()
        if name.split("/")[0] not in NOT_FIGURES_CODE:
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"{os.cpu_count()} CPU cores ({platform.machine()})"


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# ------------------------------------------------------------------------------------------- preparation


def prepare(row: Row, places: Places) -> dict:
    """Check that `row`'s recipe is the one its run began with, put its furthest checkpoint
    (the cache's or the committed milestone's) in `places.runs`, and return its record."""
    record = load_record(places, row)
    snapshot = recipe_snapshot(row)
    run, milestone = places.run(row), places.milestone(row)
    ran, kept = progress_of(run), progress_of(milestone)  # each checkpoint read once
    if "began" in record:
        changes = changed_fields(recipe_of(record), snapshot)
        stands = max(ran, kept, key=lambda p: p["step"])
        if changes and all(c.partition(":")[0] in AMENDABLE for c in changes) and all(
                before_cosine(recipe["train"], stands) for recipe in (recipe_of(record), snapshot)):
            record.setdefault("amended", []).append({"date": now_iso(), "epoch": round(epoch_of(stands, row), 3),
                                                     "changes": changes, "recipe": snapshot})
            print(f"{row.name}: its learning rate's schedule changes at epoch {epoch_of(stands, row):g}, before "
                  f"any step on a cosine ({'; '.join(changes)}): the same run so far")
        elif changes:
            raise CampaignError(
                f"row {row.name}: its recipe {row.recipe.path} changed after its run began ({'; '.join(changes)}): "
                f"restore it, or remove {places.run(row)} and {places.committed / row.name}.* to start the row again "
                f"(a running row may change only its learning rate's schedule after lr, where it has taken no "
                f"step on a cosine)")
    if milestone.exists() and kept["step"] > ran["step"]:
        for source, dest in ((milestone, run), (places.milestone_best(row), places.best(row))):
            if source.exists():
                copy(source, dest)
        ran = kept
        print(f"{row.name}: resuming from the milestone {milestone} (epoch {epoch_of(ran, row):g})")
    if not scored(record, row.end(record)):  # a finished row's record and tag stand for it: nothing to resume
        note_lost(row, record, ran, "the committed milestone" if ran is kept else "this machine's run" if ran["step"]
                  else "none: started again")
    if "milestone_epoch" not in record and milestone.exists():
        record["milestone_epoch"] = kept["epoch"]
    record.setdefault("row", row.name)
    record.setdefault("began", {"date": now_iso(), "recipe": snapshot})
    if "jobs" not in record:
        record["jobs"] = [] if not ran["history"] else [{  # a run begun before the campaign: adopted
            "job": "train", "to": ran["epoch"], "started": None, "exit": None,
            "minutes": round(sum(h["seconds"] or 0 for h in ran["history"]) / 60, 2),
            "epochs": [0, round(epoch_of(ran, row), 3)],
            "note": "trained before the campaign by drawzoo train --recipe; minutes: its epochs' training time "
                    "from the run's history (validation not counted)"}]
    record.setdefault("scores", {})
    return record


def note_lost(row: Row, record: dict, progress: dict, resumed: str) -> None:
    """Epochs that the record's train jobs reached beyond `progress` (the checkpoint this machine has:
    the cache's run or the committed milestone) went with another machine's run: mark them in each
    job (`lost`: their epochs and minutes, which leave the row's train time), keep their validation
    curve in the record's ``lost`` list, and say so. They are trained again."""
    epoch = epoch_of(progress, row)
    beyond = [j for j in record.get("jobs", []) if j["job"] == "train" and "lost" not in j
              and j["epochs"][1] > epoch + 0.5 / steps_per_epoch(row)]
    if not beyond:
        return
    for job in beyond:
        start, end = job["epochs"]
        part = (end - max(start, epoch)) / (end - start) if end > start else 1.0
        job["lost"] = {"epochs": [round(max(start, epoch), 3), end], "minutes": round(job["minutes"] * part, 2)}
    history = record.get("history", [])
    reached = max(j["epochs"][1] for j in beyond)
    minutes = sum(j["lost"]["minutes"] for j in beyond)
    record.setdefault("lost", []).append({
        "date": now_iso(), "epochs": [round(epoch, 3), reached], "minutes": round(minutes, 2), "resumed_from": resumed,
        "history": [h for h in history if h["epoch"] > progress["epoch"]]})
    record["history"] = [h for h in history if h["epoch"] <= progress["epoch"]]
    record["epochs"], record["steps"] = epoch, progress["step"]
    print(f"{row.name}: its run reached epoch {reached:g} on a machine whose checkpoint is not here; this one resumes "
          f"at epoch {epoch:g} ({resumed}): epochs {epoch:g}-{reached:g} ({hours(minutes * 60)} of training) "
          f"are trained again (the record keeps their curve under 'lost')")


def train_minutes(record: dict) -> float:
    """The wall time of the training that made the row's run: its train jobs, less the parts lost (`note_lost`)."""
    return sum(j["minutes"] - j.get("lost", {}).get("minutes", 0) for j in record.get("jobs", []) if j["job"] == "train")


# ------------------------------------------------------------------------------------------------ jobs


@dataclasses.dataclass
class Job:
    """One process working on one row: training to its next stop, or scoring one stop."""

    row: Row
    kind: str  #: "train" or "score"
    stop: int  #: the epoch trained to, or scored
    process: subprocess.Popen | None = None
    started: float = 0.0
    started_at: str = ""
    epoch_before: float = 0.0
    signalled: bool = False  #: SIGTERM sent


def pending_score(row: Row, record: dict, epoch: float, every_image: bool, places: Places) -> int | None:
    """The first stop reached (or whose weights are kept: `weights_kept`) and not scored as far as
    it goes now (`every_image`: on to every test image, once the plan is done); None if none. A
    recipe's new K re-scores the latest scored stop (its weights are the tag's); earlier ones keep
    the figures of their K."""
    done = [int(e) for e, s in record.get("scores", {}).items() if s.get("nll")]
    for stop in row.stops(record):
        if stop > epoch and not weights_kept(row, stop, places, record):
            continue
        score = record.get("scores", {}).get(str(stop), {})
        if not score.get("nll") or (score["nll"]["K"] != row.scoring.num_samples and stop == max(done)):
            return stop
        if every_image and stop == row.end(record) and score["nll"]["images"] < score["neg_elbo"]["images"]:
            return stop
    return None


def next_job(rows: list[Row], records: dict, places: Places, busy: set[str], failed: set[str]) -> Job | None:
    """The job of the first row in priority order that has one and no job running: scoring a
    stop it reached, else training to its next stop; then the final rows' NLL on to every image."""
    for every_image in (False, True):
        for row in rows:
            if row.name in busy or row.name in failed:
                continue
            epoch = epoch_of(progress_of(places.run(row)), row)
            if extended(row, records[row.name], epoch):  # at its end before, with no plateau
                save_record(places, row, records[row.name])
            stop = pending_score(row, records[row.name], epoch, every_image, places)
            if stop is not None:
                restore_weights(row, stop, places, records[row.name])
                if not places.weights(row, stop).exists():  # the run stopped before its snapshot was taken
                    if epoch != stop:
                        raise CampaignError(f"row {row.name}: the weights of epoch {stop} to score are missing "
                                            f"({places.weights(row, stop)}) and the run went on to epoch {epoch:g}")
                    snapshot(row, stop, places, records[row.name])
                    save_record(places, row, records[row.name])
                return Job(row, "score", stop)
            if not every_image and (stop := row.next_stop(epoch, records[row.name])) is not None:
                return Job(row, "train", stop, epoch_before=epoch)
    return None


def _die_with_parent() -> None:
    """In the child: a session of its own (the campaign forwards signals itself), whose scheduler
    group keeps the campaign's niceness (Linux's autogroups would give it nice 0: a `nice`d campaign
    would get no more than any other session), and SIGTERM when the campaign dies, so that it checkpoints."""
    os.setsid()
    with contextlib.suppress(OSError):
        Path("/proc/self/autogroup").write_text(str(os.nice(0)))
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def job_command(job: Job, places: Places, args, minutes: float) -> list[str]:
    """The command that runs `job` for at most `minutes` (inf: no limit)."""
    row = job.row
    limit = ["--max-minutes", f"{minutes:.2f}"] if math.isfinite(minutes) else []
    if job.kind == "train":
        command = [sys.executable, "-m", "drawzoo", "train", "--recipe", row.recipe.path, "--checkpoint",
                   str(places.run(row)), "--best", str(places.best(row)), "--epochs", str(job.stop), *limit,
                   "--quiet"]
        if row.train.lr_min is not None:  # the plan's cosine, whatever the job's stop; lr_min on an extension
            command += ["--anneal-epochs", str(cosine_epochs(as_dict(row.train)))]
        if args.data_root:
            command += ["--data-root", args.data_root]
    else:
        command = [sys.executable, __file__, "--score-job", f"{row.name}:{job.stop}", *limit, "--runs",
                   str(places.runs), "--repo", str(places.repo), "--recipes", str(Path(row.recipe.path).parent)]
        if args.data_root:
            command += ["--data-root", args.data_root]
    return command


def start(job: Job, places: Places, args, seconds: float) -> None:
    """Start `job`'s process on `args.threads` threads, with `seconds` left, its output appended to the row's log."""
    row, minutes = job.row, max(seconds / 60, 0.1)
    command = job_command(job, places, args, minutes)
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1"}
    places.runs.mkdir(parents=True, exist_ok=True)
    places.committed.mkdir(parents=True, exist_ok=True)
    log = open(places.log(row), "a")
    log.write(f"\n== {now_iso()} {job.kind} to epoch {job.stop}: {' '.join(command)}\n")
    log.flush()
    job.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   preexec_fn=_die_with_parent, cwd=REPO)
    log.close()
    job.started, job.started_at = time.time(), now_iso()
    budget = f"{minutes:.0f} min left" if math.isfinite(minutes) else "no time limit"
    say(f"{row.name}: {job.kind} to epoch {job.stop} (pid {job.process.pid}, {threads} thread(s), {budget}; "
        f"log {places.log(row)})")


def say(message: str) -> None:
    print(f"[{datetime.datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


def last_error(places: Places, row: Row) -> str:
    lines = [line for line in places.log(row).read_text().splitlines() if line.strip()]
    return next((line for line in reversed(lines) if "error" in line.lower()), lines[-1] if lines else "no output")


def finish(job: Job, places: Places, record: dict, args) -> bool:
    """Note what `job` did in the row's record; after training to a stop, store the best weights
    to score. Whether it failed (exit 2 or a crash: its row gets no more jobs in this call)."""
    row, code = job.row, job.process.returncode
    progress = progress_of(places.run(row))
    entry = {"job": job.kind, "to": job.stop, "started": job.started_at,
             "minutes": round((time.time() - job.started) / 60, 2), "exit": code, "code": code_version(),
             "torch": torch.__version__, "threads": args.threads, "machine": machine()}
    if job.kind == "train":
        entry.update(epochs=[round(job.epoch_before, 3), round(epoch_of(progress, row), 3)],
                     compile=bool(row.train.compile))
        record["history"] = [{"epoch": h["epoch"], "train": round(h["train_loss"], 3),
                              "valid": None if h["valid_loss"] is None else round(h["valid_loss"], 3),
                              "seconds": round(h["seconds"], 1)} for h in progress["history"]]
        record["epochs"], record["steps"] = epoch_of(progress, row), progress["step"]
        if code == 0 and progress["epoch"] >= job.stop and not extended(row, record, progress["epoch"]):
            snapshot(row, job.stop, places, record)
        milestone(row, places, record, progress)
    record["jobs"].append(entry)
    save_record(places, row, record)
    if code in (0, EXIT_TIME_LIMIT) or code < 0 or code > 128:
        return False
    say(f"{row.name}: {job.kind} failed (exit {code}): {last_error(places, row)}")
    return True


def extended(row: Row, record: dict, epoch: float) -> bool:
    """At its end with no plateau of the validation -ELBO, a row with `Plan.extend` trains on: its
    end moves on by that many epochs (at lr_min), up to `Plan.max_epochs`. Whether it moved."""
    end = row.end(record)
    if not row.plan.extend or epoch < end or end >= row.plan.max_epochs:
        return False
    improvement = plateau_improvement(record.get("history", []))
    if improvement is not None and improvement < PLATEAU:
        return False
    record["end"] = min(end + row.plan.extend, row.plan.max_epochs)
    record.setdefault("extensions", []).append(
        {"at": end, "to": record["end"], "improvement": None if improvement is None else round(improvement, 4)})
    say(f"{row.name}: epoch {end} without a plateau (valid improved "
        f"{'?' if improvement is None else f'{improvement:.3f}'} nats over the last 10% of epochs): "
        f"training on to {record['end']} at lr_min {row.train.lr_min:g}")
    return True


def tag_holds(row: Row, stop: int, places: Places, record: dict) -> Path | None:
    """The row's tag file, if it holds the weights that `stop` scores (the same sha256); else None."""
    sha = record.get("scores", {}).get(str(stop), {}).get("weights_sha256")
    tag = places.repo / "drawzoo" / "weights" / f"{row.plan.tag}.pt"
    return tag if sha and tag.exists() and pretrained.file_sha256(tag) == sha else None


def weights_kept(row: Row, stop: int, places: Places, record: dict) -> bool:
    """Whether the weights that `stop` scores are here without the run: their file (committed while
    they are scored), or the row's tag holding them (`tag_holds`)."""
    return places.weights(row, stop).exists() or tag_holds(row, stop, places, record) is not None


def restore_weights(row: Row, stop: int, places: Places, record: dict) -> None:
    """The weights of `stop`, scored before and deleted since, back from the row's tag if it holds them
    (`tag_holds`): to score them again (a new K)."""
    if not places.weights(row, stop).exists() and (tag := tag_holds(row, stop, places, record)) is not None:
        copy(tag, places.weights(row, stop))


def snapshot(row: Row, stop: int, places: Places, record: dict) -> None:
    """At a stop: the best-validation weights so far, stored as the tag will store them, to be scored."""
    best = read_checkpoint(places.best(row))
    model = drawzoo.load(checkpoint=places.best(row))
    pretrained.save_weights(model, places.weights(row, stop), getattr(torch, row.plan.dtype))
    record["scores"][str(stop)] = {"best_epoch": best.get("epoch"), "best_valid": round(best["valid_loss"], 3),
                                   "weights_sha256": pretrained.file_sha256(places.weights(row, stop))}
    say(f"{row.name}: epoch {stop} reached; its best weights (epoch {best.get('epoch'):g}, valid "
        f"{best['valid_loss']:.2f}) are scored next")


def milestone(row: Row, places: Places, record: dict, progress: dict) -> None:
    """Copy the run (and its best weights) to benchmarks/campaign/ if `milestone_every` epochs
    passed since the last copy; a finished row keeps none (its tag and record stand for it)."""
    if progress["epoch"] >= row.end(record):
        for path in (places.milestone(row), places.milestone_best(row)):
            path.unlink(missing_ok=True)
        return
    last = record.get("milestone_epoch", 0)
    if not row.plan.milestone_every or progress["epoch"] < last + row.plan.milestone_every:
        return
    copy(places.run(row), places.milestone(row))
    if places.best(row).exists():  # stored as the tag stores weights: the same figures when scored, fewer bytes
        best = read_checkpoint(places.best(row))
        save_checkpoint(places.milestone_best(row), drawzoo.load(checkpoint=places.best(row)),
                        weights_dtype=getattr(torch, row.plan.dtype), valid_loss=best["valid_loss"],
                        epoch=best.get("epoch"))
    record["milestone_epoch"] = progress["epoch"]
    say(f"{row.name}: milestone at epoch {progress['epoch']} -> {places.milestone(row)} (commit it)")


# --------------------------------------------------------------------------------------------- scoring


class Stopped(Exception):
    """SIGTERM/SIGINT in a scoring job: the part in progress is dropped, those done are saved."""


def _stopped(signum, frame):
    raise Stopped(signum)


def score_job(row: Row, stop: int, places: Places, deadline: float, data_root) -> int:
    # `deadline`: a time.monotonic() reading
    """Score `row`'s weights of `stop` in parts, each part saved (resumes where it stopped); then
    its record and tag. 0 when done as far as it goes now, 75 at the time limit, 128 + N on signal N
    (the parts done kept)."""
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, _stopped)
    try:
        return _score(row, stop, places, deadline, data_root)
    except Stopped as e:
        return 128 + e.args[0]


def _score(row: Row, stop: int, places: Places, deadline: float, data_root) -> int:
    weights = places.weights(row, stop)
    model = drawzoo.load(checkpoint=weights)  # the stored weights, as the tag will ship them
    sha = pretrained.file_sha256(weights)
    test = datasets.load(row.recipe.data.train, "test", data_root)
    seed, K = row.train.seed, row.scoring.num_samples
    order = scoring_order(seed, len(test))
    record = load_record(places, row)
    first_target = first_images(row, len(test))
    end = row.end(record)
    target = len(test) if (stop == end and "nll" in record["scores"].get(str(stop), {})) else first_target
    ladder = [k for k in K_LADDER if K % k == 0 and k < K] + [K]
    compile = bool(row.train.compile)
    sizes = part_sizes(K)
    parts = [("elbo", 1, len(test), [1], sizes["elbo"]), ("nll", K, target, ladder, sizes["nll"])]
    # how each image's figures are computed: the saved parts are reused only if done the same way
    how = {"code": figures_code(), "seed": seed, "compile": compile,
           "parts": [[stage, k, nested, size] for stage, k, _, nested, size in parts]}
    path = places.scores(row, stop)
    state = saved_parts(path, sha, K, how)
    for stage, k, total, nested, size in parts:
        done = state[stage]
        while len(done.get("neg_elbo", [])) < total:
            n = len(done.get("neg_elbo", []))
            chunk = next_part(order, n, size, total)
            if time.monotonic() + state.get(f"{stage}_seconds_per_image", 0) * len(chunk) > deadline:
                save_scores(path, state)
                return EXIT_TIME_LIMIT
            started = time.perf_counter()
            r = drawzoo.evaluate(model, test.subset(chunk), num_samples=k, seed=seed + 1 + n // size,
                                 nested_k=nested, per_image=True, compile=compile)
            state[f"{stage}_seconds_per_image"] = (time.perf_counter() - started) / len(chunk)
            figures = r["per_image"]
            for key, value in (("neg_elbo", figures["neg_elbo"]), ("nll", figures["nll"]),
                               *((f"k{kk}", v) for kk, v in figures["nll_k"].items())):
                done[key] = torch.cat([done.get(key, torch.zeros(0, dtype=torch.float64)), value])
            save_scores(path, state)
    check = pretrain.check_figure(model, test)
    publish(row, stop, places, state, check, record)
    if target == len(test) or stop < end:  # scored as far as it ever goes: the tag holds the weights
        weights.unlink()
    return 0


def scoring_order(seed: int, images: int) -> torch.Tensor:
    """The seeded random order in which a row's test images are scored."""
    return torch.randperm(images, generator=torch.Generator().manual_seed(seed))


def first_images(row: Row, images: int) -> int:
    """How many test images a row's NLL is scored on before its plan is done: its ``test_limit``."""
    return min(row.scoring.test_limit or images, images)


def part_sizes(K: int) -> dict[str, int]:
    """Test images a scoring job scores (and saves) at a time, by stage: about 20,000 / K for the NLL.
    Scores files saved without ``how`` (the one-layer rows') are read with these sizes: keep them."""
    return {"elbo": 2000, "nll": max(1, min(200, 20_000 // K))}


def next_part(order: torch.Tensor, n: int, size: int, total: int) -> torch.Tensor:
    """The test images a scoring job scores after the first `n` of `order`, up to `total`: the next
    `size` of them, in index order (as a subset evaluates them)."""
    return order[n:min(n + size, total)].sort().values


def scored_images_of(row: Row, state: dict, stage: str) -> torch.Tensor:
    """The test image of each per-image figure a scoring job saved in `state` (a scores file) for
    `stage` ("elbo": every test image; "nll": the ``test_limit`` first, then the rest), as
    `_score` chose them: from the seed and part sizes of its ``how`` (files saved before it was
    kept were scored with the row's seed and today's `part_sizes`)."""
    how = state.get("how") or {"seed": row.train.seed,
                               "parts": [[name, None, None, size] for name, size in part_sizes(state["K"]).items()]}
    size = next(part[3] for part in how["parts"] if part[0] == stage)
    images = len(state["elbo"]["neg_elbo"])  # the -ELBO stage scores every test image first
    order, done = scoring_order(how["seed"], images), len(state[stage].get("neg_elbo", []))
    first = images if stage == "elbo" else first_images(row, images)
    parts, n = [], 0
    while n < done:
        parts.append(next_part(order, n, size, first if n < first else images))
        n += len(parts[-1])
    return torch.cat(parts)[:done] if parts else torch.zeros(0, dtype=torch.long)


def saved_parts(path: Path, sha: str, K: int, how: dict) -> dict:
    """The per-image figures a scoring job saved at `path`, to go on from, if they are of the weights
    of sha256 `sha`, with `K` samples, computed `how` (the code's `figures_code`, seeds, chunks);
    else none: a figure never mixes parts of two weights, estimators or codes."""
    state = torch.load(path, weights_only=True) if path.exists() else None
    if state is None or (state["weights_sha256"], state["K"], state.get("how")) != (sha, K, how):
        state = {"weights_sha256": sha, "K": K, "how": how, "elbo": {}, "nll": {}}
    return state


def save_scores(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        torch.save(state, f)


def mean_se(values: torch.Tensor) -> dict:
    n = len(values)
    se = values.std().item() / math.sqrt(n) if n > 1 else math.nan
    return {"mean": round(values.mean().item(), 3), "se": round(se, 3), "images": n}


def publish(row: Row, stop: int, places: Places, state: dict, check: float, record: dict) -> None:
    """A stop scored: its figures into the record, its weights and figures as the row's tag, its
    curve, and the tables."""
    elbo, nll, K = state["elbo"], state["nll"], state["K"]
    score = record["scores"][str(stop)]
    score.update(neg_elbo={**mean_se(elbo["neg_elbo"]), "K": 1}, nll={**mean_se(nll["nll"]), "K": K},
                 nll_k={str(k[1:]): round(v.mean().item(), 3) for k, v in sorted(nll.items(), key=_k_order)
                        if k.startswith("k")},
                 neg_elbo_k_samples=round(nll["neg_elbo"].mean().item(), 3), check=round(check, 3),
                 scored=now_iso(), tag=row.plan.tag)
    history = record.get("history", [])
    weights = places.weights(row, stop)
    dest = places.repo / "drawzoo" / "weights" / f"{row.plan.tag}.pt"
    copy(weights, dest)
    manifest_path = dest.with_name("manifest.json")
    entries = pretrained.manifest(manifest_path)
    old = entries.get(row.plan.tag)
    minutes = train_minutes(record)
    entry = pretrained.Pretrained(
        tag=row.plan.tag, model=row.recipe.model, config=record["began"]["recipe"]["config"],
        data=row.recipe.data.train, recipe=os.path.relpath(row.recipe.path, REPO), file=dest.name,
        sha256=pretrained.file_sha256(dest), size=dest.stat().st_size, dtype=row.plan.dtype,
        test={"neg_elbo": score["neg_elbo"]["mean"], "neg_elbo_se": score["neg_elbo"]["se"],
              "images": score["neg_elbo"]["images"], "nll": score["nll"]["mean"], "nll_se": score["nll"]["se"],
              "nll_samples": K, "nll_images": score["nll"]["images"], "nll_neg_elbo": score["neg_elbo_k_samples"]},
        check={"neg_elbo": score["check"], "images": pretrain.CHECK_IMAGES, "seed": pretrain.CHECK_SEED},
        trained={"epochs": stop, "best_epoch": score["best_epoch"], "steps": stop * steps_per_epoch(row),
                 "minutes": round(minutes, 1), "machine": machine(), "date": datetime.date.today().isoformat(),
                 "valid_neg_elbo": [h["valid"] for h in history if h["valid"] is not None][:stop],
                 "campaign": row_command(row)},
        # a model's first tag is its default (pretrained=True), as every model with tags has one
        url=None, default=old.default if old else not any(
            e.model == row.recipe.model and e.default for t, e in entries.items() if t != row.plan.tag),
        note=tag_note(row, stop, record))
    tags = [entry if t == row.plan.tag else e for t, e in entries.items()]  # a replaced tag keeps its place
    pretrain.write_manifest(tags if old else [*tags, entry], manifest_path)
    save_record(places, row, record)
    say(f"{row.name} at epoch {stop}: test -ELBO {score['neg_elbo']['mean']:.2f} ± {score['neg_elbo']['se']:.2f}, "
        f"NLL {score['nll']['mean']:.2f} ± {score['nll']['se']:.2f} (K={K}, {score['nll']['images']:,} images); "
        f"tag {row.plan.tag}")


def tag_note(row: Row, stop: int, record: dict) -> str:
    """The manifest's note of `row`'s tag scored at `stop`: before the row's end, that the campaign
    trains on and replaces the tag (and at which epochs); at its end none (its figures say it all)."""
    later = [e for e in row.stops(record) if e > stop]
    if not later:
        return ""
    return (f"epoch {stop} of the {row.end(record)} that benchmarks/campaign.py trains its row {row.name} to: "
            f"the campaign replaces this tag at epoch{'s' if len(later) > 1 else ''} {', '.join(map(str, later))}")


def _k_order(item) -> int:
    key = item[0]
    return int(key[1:]) if key.startswith("k") else -1


# ------------------------------------------------------------------------------------ status and tables


def row_state(row: Row, places: Places, record: dict) -> dict:
    """Where a row stands, from its run checkpoint (or its committed milestone, if that is further
    along: a fresh machine) and its record; reads no data, trains nothing."""
    progress = max(progress_of(places.run(row)), progress_of(places.milestone(row)), key=lambda p: p["step"])
    epoch, best_valid = epoch_of(progress, row), progress.get("best_valid", math.inf)
    end = row.end(record)
    if epoch < end and scored(record, end):  # finished, its run not on this machine: its record says
        epoch, best_valid = end, record["scores"][str(end)]["best_valid"]
    history = progress["history"] or record.get("history", [])
    recent = [h["seconds"] for h in history[-10:] if h.get("seconds")]
    seconds = sorted(recent)[len(recent) // 2] if recent else None
    running = False
    if places.run(row).exists():
        try:
            with CheckpointLock(places.run(row)):
                pass
        except CheckpointError:  # a training process holds it
            running = True
    done = [int(e) for e, s in record.get("scores", {}).items() if s.get("nll")]
    return {"epoch": epoch, "progress": progress, "seconds": seconds, "running": running, "scored": done,
            "best_valid": best_valid}


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def valid_text(nats: float) -> str:
    """A best validation -ELBO as ``--status`` and the tables print it: to the record's 3 decimals, so
    that a run's full-precision figure and its record's rounded one read the same (2 decimals would
    round the record's twice: 85.5147 -> 85.515 -> 85.52, against 85.51 from the run)."""
    return f"{round(nats, 3):.3f}"


def status_line(row: Row, places: Places, record: dict) -> str:
    s = row_state(row, places, record)
    job = running_jobs(places).get(row.name)
    epoch, plan = s["epoch"], row.end(record)
    stop = row.next_stop(epoch, record)
    pending = pending_score(row, record, epoch, every_image=True, places=places) if record else None
    if job is not None:
        state = f"running: {job['kind']} to {job['stop']}, pid {job['pid']}, since {job['started']}"
    else:
        state = "waiting" + (f" to score epoch {pending}" if pending is not None else f" to train to {stop}"
                             if stop else ": done")
    best = "-" if not math.isfinite(s["best_valid"]) else valid_text(s["best_valid"])
    line = f"{row.name:24s} epoch {epoch:6.1f}/{plan:<4d} best valid -ELBO {best:>7s}"
    if s["seconds"]:
        left = (plan - epoch) * s["seconds"]
        to_stop = "" if stop in (None, plan) else f", {hours((stop - epoch) * s['seconds'])} to {stop}"
        line += f"  {s['seconds']:5.0f} s/epoch  ~{hours(left)} left{to_stop}"
    line += f"  [{state}]"
    if s["scored"]:
        last = record["scores"][str(max(s["scored"]))]
        line += (f"  scored at {max(s['scored'])}: -ELBO {last['neg_elbo']['mean']:.2f}, NLL {last['nll']['mean']:.2f}"
                 f" (K={last['nll']['K']}, {last['nll']['images']:,} images)")
    if job is not None:
        from tqdm import tqdm

        if job["kind"] == "train":
            done, total, what = s["progress"]["step_in_epoch"], steps_per_epoch(row), f"epoch {s['progress']['epoch'] + 1}"
        else:
            done, total = scored_images(places, row, job["stop"])
            what = f"scoring epoch {job['stop']}"
        line += "\n    " + tqdm.format_meter(done, total, 0, ncols=80, prefix=what,
                                           bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} (at its last save)")
    return line


def scored_images(places: Places, row: Row, stop: int) -> tuple[int, int]:
    """Test images scored so far at `stop` (-ELBO pass, then NLL pass) and how many there are to score."""
    path = places.scores(row, stop)
    state = torch.load(path, weights_only=True) if path.exists() else {"elbo": {}, "nll": {}}
    done = [len(state[stage].get("neg_elbo", [])) for stage in ("elbo", "nll")]
    limit = row.scoring.test_limit or 10_000
    return sum(done), 10_000 + max(limit, done[1])


def running_jobs(places: Places) -> dict:
    """The jobs of a campaign running now, by row (those whose process is alive)."""
    if not places.running.exists():
        return {}
    jobs = json.loads(places.running.read_text())
    alive = {}
    for name, job in jobs.items():
        try:
            os.kill(job["pid"], 0)
            alive[name] = job
        except (ProcessLookupError, PermissionError):
            pass
    return alive


def note_running(places: Places, running: list) -> None:
    write_text(places.running, json.dumps({j.row.name: {"pid": j.process.pid, "kind": j.kind, "stop": j.stop,
                                                        "started": j.started_at, "since": j.started}
                                           for j in running}) + "\n")


def figure(score: dict | None, key: str) -> str:
    if not score or key not in score:
        return "-"
    f = score[key]
    return f"{f['mean']:.2f} ± {f['se']:.2f}"


def table(rows: list[Row], places: Places) -> str:
    """The converged table, from the rows' records: each row's latest scored stop."""
    lines = ["| model | parameters | epochs | train time | test -ELBO ± s.e. | test NLL ± s.e. (K, images) "
             "| published (same protocol) | target | pretrained tag | the command that trains it | status |",
             "|---|---:|---:|---:|---:|---:|---|---:|---|---|---|"]
    for row in rows:
        record = load_record(places, row)
        latest = sorted((int(e) for e, s in record.get("scores", {}).items() if s.get("nll")), reverse=True)
        score = record["scores"][str(latest[0])] if latest else None
        epochs = record["epochs"] if "epochs" in record else row_state(row, places, record)["epoch"]
        minutes = train_minutes(record)
        nll = figure(score, "nll")
        if score:
            nll += f" ({score['nll']['K']}, {score['nll']['images']:,})"
        valid = [h["valid"] for h in record.get("history", []) if h.get("valid") is not None]
        best = f" (best valid -ELBO {valid_text(min(valid))})" if valid else ""
        end = row.end(record)
        status = ("final" if epochs >= end and score and latest[0] == end
                  else f"training: epoch {epochs:.1f} of {end}{best}" if epochs < end else "scoring")
        if end > row.train.epochs or row.train.anneal_from:  # not its recipe's plain schedule
            status += f"; {schedule_words(row, end)}"
        if score and latest[0] < end:
            status += f"; figures at epoch {latest[0]}"
        for lost in record.get("lost", []):
            (a, b), date = (round(e, 1) for e in lost["epochs"]), lost["date"][:10]
            status += (f"; epochs {a:g}-{b:g} went with a machine on {date} ({hours(lost['minutes'] * 60)} "
                       f"of training, not counted): trained again")
        plateau = record.get("plateau")
        if plateau is not None and epochs >= end:
            status += (f"; plateau (valid improved {plateau:.3f} nats over the last 10% of epochs)" if plateau < PLATEAU
                       else f"; no plateau (valid improved {plateau:.2f} nats over the last 10% of epochs)")
        published = row.scoring.reference or ("-" if row.plan.published is None else f"{row.plan.published:.2f}")
        target = "-" if row.plan.target is None else f"{'NLL' if row.plan.compare == 'nll' else '-ELBO'} <= {row.plan.target:g}"
        params = record.get("parameters")
        command = f"`{row_command(row)}`"
        lines.append(f"| {row.label} | {params:,} | {epochs_text(epochs)} | {hours(minutes * 60)} | {figure(score, 'neg_elbo')} | "
                     f"{nll} | {published} | {target} | {row.plan.tag if score else '-'} | {command} | {status} |"
                     if params else
                     f"| {row.label} | - | {epochs_text(epochs)} | {hours(minutes * 60)} | - | - | {published} | {target} | - | "
                     f"{command} | {status} |")
    return "\n".join(lines)


def row_command(row: Row) -> str:
    """The command that trains, scores and ships one row (rerun until it is done)."""
    return f"python benchmarks/campaign.py --rows {row.name}"


def epochs_text(epochs: float) -> str:
    """Epochs for a table: 1,000 / 28.2 / 31."""
    return f"{epochs:,.1f}".removesuffix(".0")


def plateau_improvement(history: list[dict]) -> float | None:
    """How much the best validation -ELBO improved over the last 10% of the epochs (nats)."""
    valid = [h["valid"] for h in history if h.get("valid") is not None and float(h["epoch"]).is_integer()]
    if len(valid) < 10:
        return None
    tail = max(1, math.ceil(len(valid) / 10))
    return min(valid[:-tail]) - min(valid)


def schedule_words(row: Row, end: int | None = None) -> str:
    """A row's learning rate over its plan, and on to `end` (an extension's) at lr_min, in words."""
    train = row.train
    if train.lr_min is None:
        return f"lr {train.lr:g}, constant"
    start, length = train.anneal_from or 0, cosine_epochs(as_dict(train))
    on = f", then {train.lr_min:g} to epoch {end}" if end is not None and end > start + length else ""
    if start:
        return f"lr {train.lr:g} to epoch {start}, then a cosine down to {train.lr_min:g} at epoch {start + length}{on}"
    return f"lr: a cosine from {train.lr:g} down to {train.lr_min:g} over {length} epochs{on}"


def curves_section(rows: list[Row], places: Places) -> str:
    """benchmarks/README.md's learning curves: a plot and a table by epoch of each row."""
    out = []
    for row in rows:
        record = load_record(places, row)
        history = [h for h in record.get("history", []) if h.get("valid") is not None]
        if not history:
            continue
        curve = places.curve(row)
        refs = {} if row.plan.published is None else {f"published ({row.plan.compare}, test)": row.plan.published}
        curve.parent.mkdir(parents=True, exist_ok=True)
        curves = {"train -ELBO": [(h["epoch"], h["train"]) for h in history],
                  "valid -ELBO": [(h["epoch"], h["valid"]) for h in history]}
        lost = [(entry, [h for h in entry["history"] if h.get("valid") is not None]) for entry in record.get("lost", [])]
        for entry, points in lost:  # the epochs that went with a machine (`note_lost`): measured all the same
            if points:
                curves[f"valid -ELBO, the run that went with a machine on {entry['date'][:10]}"] = [
                    (h["epoch"], h["valid"]) for h in points]
        figure = plots.curve_plot(curves, references=refs, title=f"{row.label}: -ELBO per epoch (nats)",
                                  ylabel="-ELBO, nats per image")
        later = [v for h in history if h["epoch"] >= max(3, history[-1]["epoch"] / 50) for v in (h["train"], h["valid"])]
        if lost:  # both in sight: the run trained again (from its first epochs, while it has no more) and the lost one
            later = (later or [v for h in history for v in (h["train"], h["valid"])]) + [
                h["valid"] for _, points in lost for h in points if h["epoch"] >= 3]
        if later:  # the first epochs' losses would flatten the rest of the curve
            low = min(later + list(refs.values()))
            figure.axes[0].set_ylim(low - 2, max(later) + 2)
        cosine_began = row.train.lr_min is not None and 0 < (row.train.anneal_from or 0) <= history[-1]["epoch"]
        if cosine_began:
            figure.axes[0].axvline(row.train.anneal_from, color="grey", linestyle=":", linewidth=1)
        plots.save_figure(figure, curve)
        last = int(history[-1]["epoch"])
        marks = sorted({e for e in (1, 2, 5, 10, 20, 50, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000) if e <= last}
                       | {last})
        by_epoch = {int(h["epoch"]): h for h in history if float(h["epoch"]).is_integer()}
        marks = [e for e in marks if e in by_epoch]
        rel = os.path.relpath(curve, places.repo / "benchmarks")
        out += [f"#### {row.label}", "",
                f"`{row_command(row)}` (recipe `{os.path.relpath(row.recipe.path, REPO)}`; "
                f"{schedule_words(row, row.end(record))}"
                + ("; the dotted line: the cosine begins" if cosine_began else "") + ")",
                "", f"![{row.label}: -ELBO per epoch]({rel})", "",
                "| epoch | " + " | ".join(str(e) for e in marks) + " |", "|---|" + "---:|" * len(marks),
                "| valid -ELBO | " + " | ".join(f"{by_epoch[e]['valid']:.2f}" for e in marks) + " |",
                "| train -ELBO | " + " | ".join(f"{by_epoch[e]['train']:.2f}" for e in marks) + " |", ""]
        for entry, points in lost:
            (a, b), best = (round(e, 1) for e in entry["epochs"]), min(points, key=lambda h: h["valid"], default=None)
            out += [f"Epochs {a:g}-{b:g} of an earlier run went with a machine on {entry['date'][:10]} "
                    f"({hours(entry['minutes'] * 60)} of training), and are trained again"
                    + (f"; their validation -ELBO is on the plot (best {best['valid']:.2f} at epoch {best['epoch']})"
                       if best else "") + ".", ""]
        k_rows = [(e, s) for e, s in record.get("scores", {}).items() if s.get("nll_k")]
        for e, s in k_rows:
            ks = s["nll_k"]
            out += [f"K-convergence at epoch {e} ({s['nll']['images']:,} test images, the same samples): "
                    + ", ".join(f"K={k}: {v:.2f}" for k, v in ks.items()),  # K' = 1, 10, ..., the row's K
                    ""]
    return "\n".join(out).rstrip() + "\n"


STAGES = (("elbo", "neg_elbo"), ("nll", "nll"))  #: a scoring job's stages and the figure each gives the record


def per_image_figures(row: Row, places: Places, record: dict) -> dict | None:
    """A scored row's test figures image by image, at its latest scored stop and as far as its
    record's figures go: ``{"neg_elbo": [images], "nll": [images], "K": K}``, NaN where an image was
    not scored (the NLL of a DRAW row before its end); None if it has none."""
    stops = sorted(int(e) for e, s in record.get("scores", {}).items() if s.get("nll"))
    path = places.scores(row, stops[-1]) if stops else None
    if path is None or not path.exists():
        return None
    score, state = record["scores"][str(stops[-1])], torch.load(path, weights_only=True)
    if ((state["weights_sha256"], state["K"]) != (score["weights_sha256"], score["nll"]["K"])
            or any(len(state[stage].get(key, [])) < score[key]["images"] for stage, key in STAGES)):
        return None  # scored again since (a new K), not yet done: not the record's figures
    figures = {"K": state["K"]}
    for stage, key in STAGES:
        done = score[key]["images"]
        figures[key] = torch.full((len(state["elbo"]["neg_elbo"]),), math.nan, dtype=torch.float64)
        figures[key][scored_images_of(row, state, stage)[:done]] = state[stage][key][:done]
    return figures


def published_range(row: Row, figure: str) -> tuple[float, float]:
    """What a row's published figure says of its test `figure` (nll or neg_elbo), in nats: a published
    NLL is the NLL and a lower bound of the -ELBO; a published -ELBO is the -ELBO and an upper bound
    of the NLL."""
    p = row.plan.published
    if p is None:
        return -math.inf, math.inf
    if figure == row.plan.compare:
        return p, p
    return (p, math.inf) if figure == "neg_elbo" else (-math.inf, p)


def difference_text(low: float, high: float) -> str:
    """A published difference: +1.08, <= -7.74, >= -1.23, or - (the figures do not order the rows)."""
    if low == high:
        return f"{low:+.2f}"
    if math.isinf(low) and math.isinf(high):
        return "-"
    return f"<= {high:+.2f}" if math.isinf(low) else f">= {low:+.2f}"


def verdict(difference: float, se: float, low: float, high: float) -> str:
    """A measured difference a - b (± se) against the published range [low, high] of a - b."""
    if abs(difference) <= 2 * se:
        return "within 2 s.e."
    if high < 0 or low > 0:
        return "as published" if (difference < 0) == (high < 0) else "**reversed**"
    return "a better" if difference < 0 else "b better"  # the published figures do not order them


def orderings_section(rows: list[Row], places: Places) -> str:
    """Which of two scored rows is better, from their per-image test figures on the images both
    scored: the mean paired difference a - b and its standard error, against what the published
    figures say of a - b. Each pair is written so that a is the row with the lower published NLL."""
    scored = [(row, figures) for row in rows
              if (figures := per_image_figures(row, places, load_record(places, row))) is not None]
    lines = [("| a - b | test NLL: a - b ± s.e. (K; images) | published | | test -ELBO: a - b ± s.e. (images) "
              "| published | |"), "|---|---:|---:|---|---:|---:|---|"]
    for i, first in enumerate(scored):
        for second in scored[i + 1:]:
            (a, fa), (b, fb) = sorted((first, second), key=lambda r: published_range(r[0], "nll")[1])  # stable
            cells = []
            for key in ("nll", "neg_elbo"):
                both = ~(fa[key].isnan() | fb[key].isnan())
                (la, ha), (lb, hb) = published_range(a, key), published_range(b, key)
                if both.sum() < 2:  # rows scored on other seeds' images
                    cells += ["- (no images both scored)", difference_text(la - hb, ha - lb), "-"]
                    continue
                d = mean_se(fa[key][both] - fb[key][both])
                ks = ("" if key != "nll" else f"K={fa['K']}; " if fa["K"] == fb["K"] else f"K={fa['K']} and {fb['K']}; ")
                cells += [f"{d['mean']:+.2f} ± {d['se']:.2f} ({ks}{d['images']:,})", difference_text(la - hb, ha - lb),
                          verdict(d["mean"], d["se"], la - hb, ha - lb)]
            lines.append(f"| {a.label} - {b.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else "(no two rows scored yet)"


def replace_between(path: Path, name: str, text: str) -> bool:
    """Replace what lies between ``<!-- name -->`` and ``<!-- /name -->`` in `path`; False if it has no such markers."""
    if not path.exists():
        return False
    content = path.read_text()
    start, end = f"<!-- {name} -->\n", f"<!-- /{name} -->"
    if start not in content or end not in content:
        return False
    head, rest = content.split(start, 1)
    tail = rest.split(end, 1)[1]
    write_text(path, f"{head}{start}{text.rstrip()}\n{end}{tail}")
    return True


def regenerate(rows: list[Row], places: Places) -> str:
    """The converged table into README.md and benchmarks/README.md; the curves and the paired orderings into
    benchmarks/README.md. Returns the table and the orderings, to print."""
    text, orderings = table(rows, places), orderings_section(rows, places)
    for path in (places.repo / "README.md", places.repo / "benchmarks" / "README.md"):
        replace_between(path, "campaign-table", text)
    replace_between(places.repo / "benchmarks" / "README.md", "campaign-curves", curves_section(rows, places))
    replace_between(places.repo / "benchmarks" / "README.md", "campaign-orderings", orderings)
    return f"{text}\n\nWhich row is better, image by image:\n\n{orderings}"


# ----------------------------------------------------------------------------------------------- the loop


class CampaignStop(StopRequests):
    """The campaign's time limit and signals. Every signal is only noted, a second SIGINT too: the
    jobs were sent SIGTERM at the first and checkpoint within a step (a scoring job: at once), and
    the campaign waits for them to record what they did."""

    def _handle(self, signum, frame) -> None:
        if self.signum:
            say(f"{signal_name(signum)} again: still waiting for the jobs to checkpoint (SIGKILL would lose "
                "their steps since their last save)")
        self.signum = self.signum or signum


def left(stop: StopRequests) -> float:
    """Seconds left before the time limit (inf without one)."""
    return math.inf if stop.deadline is None else stop.deadline - time.monotonic()


def campaign(rows: list[Row], places: Places, args, every: list[Row]) -> int:
    """Run `rows`' jobs until each is done, the time limit, or a signal; then the tables, of `every` row."""
    stop = CampaignStop(args.max_minutes, time.monotonic())
    spare = min(SPARE_MINUTES, (args.max_minutes or math.inf) / 10) * 60
    records = {row.name: prepare(row, places) for row in rows}
    for row in rows:
        if "parameters" not in records[row.name]:
            records[row.name]["parameters"] = drawzoo.load(row.recipe.model, **row.recipe.config).num_parameters()
        save_record(places, row, records[row.name])
    running: list[Job] = []
    failed: set[str] = set()
    look = True  # for a job to start: at first, and whenever one ended (never while polling: it reads checkpoints)
    with stop:
        while True:
            while look and len(running) < args.jobs and not stop.signum and left(stop) > spare:
                job = next_job(rows, records, places, {j.row.name for j in running}, failed)
                if job is None:
                    break
                start(job, places, args, left(stop))
                running.append(job)
                note_running(places, running)
            look = False
            if not running:
                break
            time.sleep(0.5)
            if stop.signum:
                for job in running:
                    if not job.signalled:  # once: a second signal would stop it before its checkpoint
                        job.signalled = True
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(job.process.pid, signal.SIGTERM)
            for job in [j for j in running if j.process.poll() is not None]:
                running.remove(job)
                note_running(places, running)
                look = True
                records[job.row.name] = load_record(places, job.row)  # a scoring job wrote its scores
                if finish(job, places, records[job.row.name], args):
                    failed.add(job.row.name)
                plateau = plateau_improvement(records[job.row.name].get("history", []))
                if plateau is not None:
                    records[job.row.name]["plateau"] = round(plateau, 4)
                    save_record(places, job.row, records[job.row.name])
                say(f"{job.row.name}: {job.kind} ended (exit {job.process.returncode}); "
                    f"epoch {epoch_of(progress_of(places.run(job.row)), job.row):g}")
    print("\n" + regenerate(every, places) + "\n")
    if stop.signum:
        say(f"stopped by {signal.Signals(stop.signum).name}: every job checkpointed; rerun to continue")
        return 128 + stop.signum
    undone = [r.name for r in rows if next_job([r], records, places, set(), set()) is not None]
    if failed:
        say(f"failed: {', '.join(sorted(failed))} (see their logs); rerun to retry")
        return 2
    if undone:
        say(f"time limit: {', '.join(undone)} not done; rerun to continue")
        return EXIT_TIME_LIMIT
    say("every row is done")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-minutes", type=float, help="stop every job with a checkpoint after this many minutes [none]")
    p.add_argument("--jobs", type=int, default=2, help="rows trained or scored at once [2]")
    p.add_argument("--threads", type=int, default=1, help="threads of each job [1]")
    p.add_argument("--rows", help="comma-separated row names (recipe file names) [every row]")
    p.add_argument("--status", action="store_true", help="one line a row: epochs, best valid -ELBO, s/epoch, time left")
    p.add_argument("--table", action="store_true", help="regenerate the tables and curves from the records; no training")
    p.add_argument("--runs", default=None, help="folder of the runs [$DRAWZOO_CACHE/campaign, else ~/.cache/drawzoo/campaign]")
    p.add_argument("--repo", default=str(REPO), help="where the committed files go: milestones, records, tags, "
                   "curves, tables [this repository]")
    p.add_argument("--data-root", help="folder holding binarized_mnist/ [$DRAWZOO_DATA, else a per-user cache]")
    p.add_argument("--recipes", default=str(nll_mnist.RECIPES / PRESET), help="the rows: the recipes of this "
                   "folder with a [campaign] table [benchmarks/recipes/paper]")
    p.add_argument("--score-job", help=argparse.SUPPRESS)
    return run_program("campaign", run, p.parse_args(argv))


def run(args) -> int:
    """main() once its arguments are parsed."""
    places = Places(Path(args.runs) if args.runs else cache_dir() / "campaign", Path(args.repo).resolve())
    if args.jobs < 1 or args.threads < 1:
        raise CampaignError(f"--jobs and --threads must be >= 1, got {args.jobs} and {args.threads}")
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise CampaignError(f"--max-minutes must be > 0, got {args.max_minutes}")
    rows = read_rows(Path(args.recipes), names=args.rows.split(",") if args.rows else None)
    every = rows if not args.rows else read_rows(Path(args.recipes))  # the tables are the preset's, whichever rows run
    if args.score_job:
        name, _, stop = args.score_job.rpartition(":")
        row = next(r for r in rows if r.name == name)
        deadline = time.monotonic() + (args.max_minutes * 60 if args.max_minutes else math.inf)
        return score_job(row, int(stop), places, deadline, args.data_root)
    if args.status:
        for row in rows:
            print(status_line(row, places, load_record(places, row)))
        return 0
    plots.require_matplotlib("campaign.py (its learning curves, docs/campaign/)")  # not after hours of training
    if args.table:
        print(regenerate(every, places))
        return 0
    return campaign(rows, places, args, every)


if __name__ == "__main__":
    sys.exit(main())
