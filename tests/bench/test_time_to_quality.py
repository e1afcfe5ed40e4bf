"""bench/time_to_quality.py and its contenders: data, checkpoint timing, the summary, and a smoke run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from contenders import data as bdata
from contenders import llamafactory, report, scoring

ROOT = Path(__file__).resolve().parents[2]


def test_truncate_words_keeps_line_breaks():
    text = "#P1#: a b\n#P2#: c d e\n#P1#: f"
    assert bdata.truncate_words(text, 4) == "#P1#: a b\n#P2#:"
    assert bdata.truncate_words(text, 100) == text


def test_fixed_subsets_are_reproducible(shared_data):
    a = bdata.load(shared_data / "dialogsum", n_train=5, n_dev=2, n_test=3)
    b = bdata.load(shared_data / "dialogsum", n_train=5, n_dev=2, n_test=3)
    assert [x["id"] for x in a["train"]] == [x["id"] for x in b["train"]]
    assert [x["id"] for x in a["test"]] == ["dialogsum-test_0", "dialogsum-test_1", "dialogsum-test_2"]
    assert len(a["test"][0]["references"]) == 3
    ex = a["train"][0]
    assert ex["user"] == f"{ex['instruction']}\n\n{ex['input']}" and len(ex["input"].split()) <= 200


def _adapter(folder: Path, payload: bytes, mtime: float) -> None:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    f = folder / scoring.ADAPTER_FILE
    f.write_bytes(payload)
    os.utime(f, (mtime, mtime))


def test_find_checkpoints_times_dedupes_and_applies_the_budget(tmp_path):
    t0 = 1_000_000.0
    _adapter(tmp_path / "checkpoints" / "step-5", b"A", t0 + 30)
    _adapter(tmp_path / "best", b"A", t0 + 95)  # a copy of step-5: counted once, at its first time
    _adapter(tmp_path / "checkpoints" / "step-10", b"B", t0 + 60)
    _adapter(tmp_path / "adapter", b"C", t0 + 130)  # written after the 120 s budget
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / scoring.ADAPTER_FILE).write_bytes(b"D")  # no adapter_config.json: not an adapter
    kept, late = scoring.find_checkpoints(tmp_path, t0, budget_s=120)
    assert [(Path(c["path"]).name, c["t_s"]) for c in kept] == [("step-5", 30.0), ("step-10", 60.0)]
    assert [Path(c["path"]).name for c in late] == ["adapter"]


def test_pick_spreads_evenly_and_keeps_the_last():
    cps = [{"t_s": i} for i in range(10)]
    assert [c["t_s"] for c in scoring.pick(cps, 4)] == [0, 3, 6, 9]
    assert [c["t_s"] for c in scoring.pick(cps, 1)] == [9]
    assert scoring.pick(cps[:3], 8) == cps[:3]


def _state(curves: dict[str, list[tuple[float, float]]], base: float = 10.0) -> dict:
    state = {"settings": {"budget_min": 20, "n_test": 100}, "contenders": {}, "scores": {"base": {"rougeL": base}}}
    for name, pts in curves.items():
        cps = []
        for i, (minutes, score) in enumerate(pts):
            digest = f"{name}{i}"
            cps.append({"t_s": minutes * 60, "digest": digest})
            state["scores"][digest] = {"rougeL": score}
        state["contenders"][name] = {"status": "ok", "checkpoints": cps}
    return state


def test_summary_target_is_the_lowest_best_and_goal_ratio_is_within_the_run():
    state = _state({"weaver": [(2, 20.0), (4, 26.0), (6, 27.0)],
                    "hf_plain": [(5, 18.0), (10, 24.0), (15, 25.0)],
                    "llamafactory": [(6, 15.0), (12, 22.0), (18, 25.5), (20, 25.0)]})
    s = report.summarize(state)
    assert s["target"] == 25.0  # hf_plain's best is the lowest best
    assert s["rows"]["weaver"]["t_target"] == 4 and s["rows"]["hf_plain"]["t_target"] == 15
    assert s["rows"]["llamafactory"]["t_target"] == 18
    goal = s["goal"]  # LLaMA-Factory's final score 25.0: first reached at 18 min; weaver at 4 min
    assert goal["lf_final"] == 25.0 and goal["t_lf"] == 18 and goal["t_weaver"] == 4
    assert goal["ratio"] == pytest.approx(4 / 18)
    md = report.markdown({**state, "command": "cmd", "scorer": "rouge", "settings": {
        **state["settings"], "n_train": 300, "n_dev": 50, "lora_r": 16, "batch_size": 8, "lr": 3e-4, "lora_alpha": 32,
        "lora_dropout": 0.05, "epochs": 2, "save_steps": 5, "repetition_penalty": 1.1, "max_new_tokens": 48,
        "max_evals": 8, "max_words": 200}}, s, "plots/x.png")
    assert "**0.22x** its time (goal <= 0.5x: met)" in md and "![ROUGE-L" in md


def test_summary_reports_a_contender_that_never_gets_there():
    state = _state({"weaver": [(3, 12.0)], "llamafactory": [(10, 20.0)]})
    state["contenders"]["hf_plain"] = {"status": "failed", "error": "ImportError: boom", "checkpoints": []}
    s = report.summarize(state)
    assert s["target"] == 12.0 and s["goal"]["t_weaver"] is None and "hf_plain" not in s["rows"]


def test_llamafactory_data_and_config_match_the_shared_settings(tmp_path):
    examples = [{"user": "Summarize the following dialogue.\n\n#P1#: hi", "output": "They greet."}]
    assert llamafactory.write_dataset(examples, tmp_path / "d", "SYS") == "bench_train"
    rows = json.loads((tmp_path / "d" / "bench_train.json").read_text())
    assert rows == [{"instruction": examples[0]["user"], "input": "", "output": "They greet.", "system": "SYS"}]
    info = json.loads((tmp_path / "d" / "dataset_info.json").read_text())
    assert info["bench_train"]["columns"]["system"] == "system"
    s = {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "batch_size": 8, "lr": 3e-4, "epochs": 2,
         "save_steps": 5, "max_seq_len": 512, "seed": 0, "max_steps": 3}
    import yaml

    cfg = yaml.safe_load(llamafactory.write_config(tmp_path / "c.yaml", tmp_path, tmp_path / "d", tmp_path, s)
                         .read_text())
    assert cfg["lora_rank"] == 16 and cfg["template"] == "smollm2" and cfg["use_cpu"] and cfg["bf16"]
    assert cfg["max_steps"] == 3 and cfg["dataset"] == "bench_train"


@pytest.mark.slow
def test_smoke_run_trains_scores_and_writes_the_section(tmp_path, shared_data):
    env = {**os.environ, "WEAVER_BENCH_RESULTS": str(tmp_path / "RESULTS.md"),
           "WEAVER_BENCH_PLOTS": str(tmp_path / "plots")}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "time_to_quality.py"), "--smoke", "--work",
                           str(tmp_path / "work")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    state = json.loads((tmp_path / "work" / "state.json").read_text())
    hf = state["contenders"]["hf_plain"]
    assert hf["status"] == "ok" and [c["step"] for c in hf["checkpoints"]] == [1, 2]
    times = [c["t_s"] for c in hf["checkpoints"]]
    assert times == sorted(times) and 0 < times[0] and times[-1] <= state["settings"]["budget_min"] * 60
    weaver = state["contenders"]["weaver"]  # its resumable checkpoints are scored through weaver's loader
    assert weaver["status"] == "ok", weaver.get("error")
    assert {1, 2} <= {c["step"] for c in weaver["checkpoints"]}
    for c in hf["checkpoints"] + weaver["checkpoints"]:
        if c["digest"] in state["scores"]:
            assert "rougeL" in state["scores"][c["digest"]], state["scores"][c["digest"]]
    assert sum(c["digest"] in state["scores"] for c in weaver["checkpoints"]) == 2  # max_evals in smoke
    assert state["contenders"]["llamafactory"] == {"status": "skipped", "checkpoints": [],
                                                   "error": "skipped in smoke mode (its venv install takes minutes)"}
    md = (tmp_path / "RESULTS.md").read_text()
    assert "<!-- BEGIN time_to_quality -->" in md and "| plain Hugging Face (Trainer + peft, fp32) | ok | 2 |" in md
    assert (tmp_path / "plots" / "time_to_quality.png").stat().st_size > 5000


def test_launch_stops_a_contender_at_the_budget_and_samples_its_memory(tmp_path):
    import time_to_quality as ttq

    hog = "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); import time; time.sleep(60)"
    res = ttq.launch([sys.executable, "-c", hog], tmp_path / "log", budget_s=4, grace_s=1, env=dict(os.environ))
    assert res["stopped_at_budget"] and res["rc"] != 0
    assert 4 <= res["wall_s"] < 30
    assert res["peak_rss_gb"] >= 0.25


def test_weaver_recipe_finds_the_preset_and_fits_it_to_the_smoke_model(tmp_path):
    from contenders import weaver_recipe

    assert weaver_recipe.find_preset(tmp_path) is None
    (tmp_path / "support-smollm2.yaml").write_text("train: {top_layers: 10}\n")
    (tmp_path / "news-summarize-gemma3.yaml").write_text("train: {}\n")
    assert weaver_recipe.find_preset(tmp_path).name == "news-summarize-gemma3.yaml"
    (tmp_path / "dialogsum-smollm2.yaml").write_text("train: {top_layers: 10}\n")
    preset = weaver_recipe.find_preset(tmp_path)
    assert preset.name == "dialogsum-smollm2.yaml"
    assert weaver_recipe.smoke_overrides(preset) == ["--train.top_layers", "1"]
    assert weaver_recipe.smoke_overrides(tmp_path / "news-summarize-gemma3.yaml") == []
    from weaver.config import load_config

    cfg = load_config(weaver_recipe.defaults_preset(tmp_path / "defaults.yaml"))
    assert cfg.data.task == "summarize" and cfg.train.lora_r == 16
    cmd = weaver_recipe.command(preset, tmp_path, tmp_path / "t", tmp_path / "d", tmp_path / "e", tmp_path / "o",
                                {"budget_min": 20, "save_steps": 5, "extra": ["--train.lr", "1e-4"]})
    assert cmd[3:5] == ["tune", str(preset)] and cmd[-2:] == ["--train.lr", "1e-4"]
    assert cmd[cmd.index("--train.max_minutes") + 1] == "20" and "--train.max_steps" not in cmd


def test_chinese_tasks_data_presets_and_lf_template(shared_data, tmp_path):
    from contenders.tasks import TASKS, load_zh

    for name, folder in (("adgen", "advertisegen"), ("lcsts", "lcsts")):
        task = TASKS[name]
        assert task["lang"] == "zh" and task["preset"].is_file() and task["lf_template"] == "weaver_plain"
        d = load_zh(shared_data / folder, n_train=20, n_dev=5, n_test=7)
        assert (len(d["train"]), len(d["dev"]), len(d["test"])) == (20, 5, 7)
        train_ids = {x["id"] for x in d["train"]}
        assert not train_ids & {x["id"] for x in d["dev"]} and not train_ids & {x["id"] for x in d["test"]}
        assert d["test"][0]["references"] == [d["test"][0]["output"]]
        assert d["train"][0]["user"] == f"{d['train'][0]['instruction']}\n\n{d['train'][0]['input']}"
    import yaml

    s = {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "batch_size": 8, "lr": 3e-4, "epochs": 2,
         "save_steps": 5, "max_seq_len": 256, "seed": 0, "lf_template": "weaver_plain"}
    cfg_path = llamafactory.write_config(tmp_path / "c.yaml", tmp_path, tmp_path / "d", tmp_path, s)
    cfg = yaml.safe_load(cfg_path.read_text())
    assert cfg["template"] == "weaver_plain" and cfg["cutoff_len"] == 256
    py = tmp_path / "bin" / "python"
    assert llamafactory.command(py, cfg_path, "weaver_plain")[1].endswith("lf_plain.py")  # registers it first
    assert llamafactory.command(py, cfg_path, "smollm2")[1:] == ["train", str(cfg_path)]


def test_plain_template_for_llamafactory_is_weavers_base_model_prompt(monkeypatch):
    """Gemma-3-270M has no chat template: LLaMA-Factory must be given the exact prompt weaver trains and the
    benchmark scores with (its token ids were compared once in LLaMA-Factory's venv: identical)."""
    from contenders import lf_plain

    from weaver.data.chat import render_messages

    class Plain:  # a base model's tokenizer: no chat template
        chat_template, bos_token, eos_token = None, "<bos>", "<eos>"

    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "类型#裤\n\n颜色#黑色"}]
    assert render_messages(Plain(), msgs) == "<bos>" + "".join(
        slot.replace("{{content}}", m["content"]) for slot, m in zip((lf_plain.SYSTEM, lf_plain.USER), msgs))
    import transformers

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: Plain())
    assert report.default_system(Path("gemma")) == ""  # no chat template: no default system prompt, no error


def test_chinese_scores_and_section_show_both_rouge_units():
    got = scoring.rouge_scores(["这款上衣简约大方"], [["这款上衣简约时尚"]], "zh")
    assert {"rougeL", "rougeL_word"} <= set(got) and got["rougeL"] != got["rougeL_word"]
    state = _state({"weaver": [(2, 20.0), (3, 30.0)], "llamafactory": [(5, 22.0), (10, 28.0)]})
    for run in state["contenders"].values():
        run["peak_rss_gb"] = 2.5
    for key in list(state["scores"]):
        state["scores"][key]["rougeL_word"] = 11.0
    state.update(command="cmd", scorer="zh rouge", title="AdvertiseGen ad copy, Gemma-3-270M", goal_ratio=0.35,
                 section="time_to_quality_adgen")
    state["settings"].update(task="adgen", lang="zh", lf_template="gemma3", n_train=600, n_dev=32, n_test=50,
                             lora_r=16, batch_size=8, lr=3e-4, lora_alpha=32, lora_dropout=0.05, epochs=2,
                             save_steps=5, repetition_penalty=1.1, max_new_tokens=160, max_evals=8)
    s = report.summarize(state)
    md = report.markdown(state, s, None)
    assert "(AdvertiseGen ad copy, Gemma-3-270M)" in md and "final ROUGE-L (characters)" in md
    assert "final ROUGE-L (jieba words) | peak RSS GB |" in md and "| 11.0 | 2.50 |" in md
    assert "**0.30x** its time (goal <= 0.35x: met)" in md  # LLaMA-Factory's final 28.0: weaver 3 min, LF 10 min
