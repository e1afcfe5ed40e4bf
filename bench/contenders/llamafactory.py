"""LLaMA-Factory as a time-to-quality contender: its own virtual environment, its alpaca data, its YAML.

    python bench/contenders/llamafactory.py --install      # create bench/.work/lf-venv (idempotent)

The venv follows shared/PEERS.md "Running LLaMA-Factory here": `pip install torch==2.13.0` (the CPU
wheel), `pip install --no-deps llamafactory==0.9.5`, then its requirements except torchaudio, torchvision,
av and gradio (they pull other torch builds; text fine-tuning does not use them). Its data/mm_plugin.py
imports torchaudio at module level, so an empty `torchaudio` package (no dist-info, so transformers still
reports it absent) is written into the venv; RESULTS.md says so.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lf_plain  # noqa: E402

LF_VERSION = "0.9.5"
TORCH_PIN = "torch==2.13.0"
EXCLUDED = {"torchaudio", "torchvision", "av", "gradio"}
STUB_NOTE = (
    "an empty `torchaudio` package stands in for torchaudio in LLaMA-Factory's venv "
    "(its data/mm_plugin.py imports it at module level; audio is never used here)"
)
_STUB = '''"""Empty stand-in written by weaver's bench/contenders/llamafactory.py: LLaMA-Factory's mm_plugin imports
torchaudio at module level, text fine-tuning never calls it, and the real package pulls another torch build."""


def __getattr__(name):
    raise ImportError(f"torchaudio.{name}: torchaudio is an empty stub in this benchmark venv")
'''


def _pip(python: Path, args: list[str], log) -> None:
    cmd = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args]
    log(f"$ {' '.join(cmd)}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"pip install {' '.join(args)} failed: {' | '.join(tail)}")


def requirements(python: Path) -> list[str]:
    """LLaMA-Factory's declared requirements (from its installed metadata) minus the excluded packages."""
    code = "import importlib.metadata as m, json; print(json.dumps(m.requires('llamafactory') or []))"
    reqs = json.loads(subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout)
    keep = []
    for req in reqs:
        if ";" in req and "extra" in req.split(";", 1)[1]:
            continue
        name = req.split(";")[0].strip()
        base = name
        for sep in "<>=!~[ ":
            base = base.split(sep)[0]
        if base.lower() not in EXCLUDED and base.lower() != "torch":
            keep.append(name)
    return keep


def ensure_venv(venv: Path, log=print) -> Path:
    """Create (once) the LLaMA-Factory venv and return its python. A stamp file marks a finished install.

    Raises:
        RuntimeError: when a pip step fails (its last lines are in the message).
    """
    python = venv / "bin" / "python"
    stamp = venv / f".stamp-llamafactory-{LF_VERSION}"
    if stamp.is_file():
        return python
    if not python.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    _pip(python, [TORCH_PIN], log)
    _pip(python, ["--no-deps", f"llamafactory=={LF_VERSION}"], log)
    constraints = venv / "torch-pin.txt"
    constraints.write_text(TORCH_PIN + "\n")
    _pip(python, ["-c", str(constraints), *requirements(python)], log)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "torchaudio").mkdir(exist_ok=True)
    (site / "torchaudio" / "__init__.py").write_text(_STUB)
    subprocess.run([str(python), "-c", "import llamafactory.data.mm_plugin"], check=True, capture_output=True)
    stamp.write_text(LF_VERSION + "\n")
    return python


def venv_versions(python: Path) -> dict[str, str]:
    """Versions of the libraries that decide LLaMA-Factory's result, as installed in its venv."""
    code = (
        "import importlib.metadata as m, json; out = {}\n"
        "for p in ('llamafactory', 'torch', 'transformers', 'peft', 'accelerate', 'trl', 'datasets'):\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: out[p] = 'not installed'\n"
        "print(json.dumps(out))"
    )
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return json.loads(proc.stdout) if proc.returncode == 0 else {}


def write_dataset(examples: list[dict], dataset_dir: Path, system: str) -> str:
    """Write the examples as an alpaca JSON list plus dataset_info.json; return the dataset name.

    The whole user message (instruction, blank line, dialogue) goes in `instruction` and `input` stays
    empty, because LLaMA-Factory joins instruction and input with a single newline; with the explicit
    `system` column its `smollm2` template renders exactly the prompt the other contenders train on.
    """
    dataset_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"instruction": ex["user"], "input": "", "output": ex["output"], "system": system} for ex in examples]
    (dataset_dir / "bench_train.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1))
    info = {"bench_train": {"file_name": "bench_train.json",
                            "columns": {"prompt": "instruction", "query": "input", "response": "output",
                                        "system": "system"}}}
    (dataset_dir / "dataset_info.json").write_text(json.dumps(info, indent=2))
    return "bench_train"


def write_config(path: Path, model_dir: Path, dataset_dir: Path, out_dir: Path, s: dict) -> Path:
    """LLaMA-Factory's train YAML for LoRA SFT on CPU with the shared settings `s`.

    Args:
        s: lora_r, lora_alpha, lora_dropout, batch_size, lr, epochs, save_steps, max_seq_len, seed,
           max_steps (optional), lf_template (LLaMA-Factory's chat template name; default smollm2, weaver_plain for
           the Chinese tasks' Gemma-3-270M).
    """
    cfg = {
        "model_name_or_path": str(model_dir), "trust_remote_code": False,
        "stage": "sft", "do_train": True, "finetuning_type": "lora", "lora_target": "all",
        "lora_rank": s["lora_r"], "lora_alpha": s["lora_alpha"], "lora_dropout": s["lora_dropout"],
        "dataset": "bench_train", "dataset_dir": str(dataset_dir), "template": s.get("lf_template", "smollm2"),
        "cutoff_len": s["max_seq_len"], "overwrite_cache": True, "preprocessing_num_workers": 1,
        "output_dir": str(out_dir), "logging_steps": 1, "save_steps": s["save_steps"], "plot_loss": False,
        "overwrite_output_dir": True, "report_to": "none", "save_only_model": True,
        "per_device_train_batch_size": s["batch_size"], "gradient_accumulation_steps": 1,
        "learning_rate": s["lr"], "num_train_epochs": s["epochs"], "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.1, "bf16": True, "use_cpu": True, "seed": s["seed"], "dataloader_num_workers": 0,
    }
    if s.get("max_steps"):
        cfg["max_steps"] = s["max_steps"]
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def command(python: Path, config: Path, template: str = "smollm2") -> list[str]:
    """The launch command: llamafactory-cli from the venv; for the plain format of a base model (template
    `weaver_plain`, which LLaMA-Factory does not ship) lf_plain.py registers it, then runs the same training."""
    if template == lf_plain.NAME:
        return [str(python), str(Path(lf_plain.__file__).resolve()), str(config)]
    return [str(python.parent / "llamafactory-cli"), "train", str(config)]


if __name__ == "__main__":
    if "--install" in sys.argv:
        root = Path(__file__).resolve().parents[1] / ".work" / "lf-venv"
        py = ensure_venv(root)
        print(json.dumps(venv_versions(py), indent=2))
