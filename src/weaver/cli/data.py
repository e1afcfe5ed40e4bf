"""`weaver data check`: statistics and validation of data files before tuning; `weaver data pairs`: preference pairs.

    weaver data check ../shared/data/dialogsum/train.jsonl --model smollm2-135m-instruct
    weaver data check train.jsonl --dev dev.jsonl --test test.jsonl --task headline --lang zh
    weaver data check data.csv --columns '{"input": "article", "output": "summary"}' --on-error skip

Prints counts, token-length percentiles of prompts and outputs in the model's tokenizer, the language
mix, duplicates and the overlap between train/dev/test. Malformed records are listed as file:line
messages and the command exits non-zero (3), unless --on-error skip, which reports and ignores them.
A preference-pairs file ({prompt or instruction/input, chosen, rejected}) is recognised and checked as pairs.
Files are streamed: one record may be up to 32 MiB (a longer one is malformed at its line), so memory
stays bounded whatever the file; a FIFO or device is refused as not a regular file.

    weaver data pairs --from train.jsonl --strategy reference --model runs/sft --out pairs.jsonl
    weaver data pairs --from train.jsonl --strategy principles --principles my-principles.yaml --out pairs.jsonl

`data pairs` makes preference pairs for `train.objective dpo` from reference data (weaver.tuning.pairs).

    weaver data synth --model runs/sft --inputs articles.jsonl --out synth.jsonl            # self-training
    weaver data synth --mode backtranslate --model runs/sft --inputs ads.jsonl --out synth.jsonl --task adcopy
    weaver data select --model runs/sft --inputs articles.jsonl --n 50 --out to-label.jsonl

`data synth` writes outputs for unlabelled inputs (or inputs for outputs) and keeps what passes measured filters
(weaver.tuning.synth); `data select` ranks unlabelled inputs by uncertainty and diversity (weaver.tuning.select).
"""

from __future__ import annotations

import json
import sys

from weaver.config import BACKEND_NAMES, TASKS, DataConfig
from weaver.errors import ConfigError, DataError


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    p = sub.add_parser("check", help="validate data files and print their statistics",
                       description="Validate data files and print counts, token lengths, languages, duplicates "
                                   "and overlap between splits.")
    p.add_argument("file", help="training (or only) data file: jsonl/json/csv/tsv/parquet or a datasets folder")
    p.add_argument("--dev", help="dev file, checked for overlap with FILE")
    p.add_argument("--test", help="test file, checked for overlap with FILE and --dev")
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="model whose tokenizer and chat template measure lengths (default: %(default)s); "
                        "'none' skips token statistics")
    p.add_argument("--task", default="summarize", choices=TASKS,
                   help="task template for prompts (default: %(default)s)")
    p.add_argument("--lang", default="en", choices=("en", "zh"), help="instruction language (default: %(default)s)")
    p.add_argument("--columns", help='JSON map of our fields to your columns, e.g. \'{"output": "summary"}\'')
    p.add_argument("--on-error", default="fail", choices=("fail", "skip"),
                   help="fail: list malformed records and exit non-zero; skip: report and ignore them")
    p.add_argument("--max-seq-len", type=int, default=DataConfig.max_seq_len,
                   help="count records whose prompt+output exceed this (default: %(default)s)")
    p.add_argument("--max-output-tokens", type=int, default=DataConfig.max_output_tokens,
                   help="outputs longer than this many tokens are malformed (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    _add_pairs(sub)
    _add_synth(sub)
    _add_select(sub)


def _add_pairs(sub) -> None:
    p = sub.add_parser("pairs", help="make preference pairs (for train.objective dpo) from reference data",
                       description="Make preference pairs from SFT records: chosen = the reference; rejected = the "
                                   "model's own reply (--strategy reference) or the reference rewritten by the model "
                                   "to break a principle (--strategy principles).")
    p.add_argument("--from", dest="source", required=True, help="SFT data file (records with a reference output)")
    p.add_argument("--strategy", required=True, choices=("reference", "principles"),
                   help="reference: rejected = the model's reply; principles: rejected = a principle-breaking rewrite")
    p.add_argument("--out", required=True, help="pairs file to write (JSON Lines)")
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="model (or tuned run) that writes the rejected replies (default: %(default)s)")
    p.add_argument("--task", default="summarize", choices=TASKS,
                   help="task template for prompts (default: %(default)s)")
    p.add_argument("--lang", default="en", choices=("en", "zh"), help="instruction language (default: %(default)s)")
    p.add_argument("--columns", help='JSON map of our fields to your columns, e.g. \'{"output": "summary"}\'')
    p.add_argument("--on-error", default="fail", choices=("fail", "skip"), help="malformed records: fail or skip")
    p.add_argument("--principles", default=None,
                   help="YAML of principles ({default: {name: instruction}, tasks: {TASK: {...}}}; default: the "
                        "shipped too_long, off_topic, invents_fact, wrong_tone)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N records")
    p.add_argument("--batch-size", type=int, default=8, help="prompts generated together (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-record principle draw (default: %(default)s)")


def _add_model_inputs(p, what: str) -> None:
    p.add_argument("--model", default="smollm2-135m-instruct", help=f"model or tuned run that {what} "
                   "(default: %(default)s)")
    p.add_argument("--inputs", required=True, help="unlabelled file: rows with an input (synth --mode backtranslate: "
                                                   "rows with an output); jsonl/json/csv/tsv/parquet")
    p.add_argument("--out", required=True, help="file to write (JSON Lines)")
    p.add_argument("--task", default="summarize", choices=TASKS, help="task template for prompts (default: "
                   "%(default)s)")
    p.add_argument("--lang", default="en", choices=("en", "zh"), help="instruction language (default: %(default)s)")
    p.add_argument("--columns", help='JSON map of our fields to your columns, e.g. \'{"input": "dialogue"}\'')
    p.add_argument("--on-error", default="fail", choices=("fail", "skip"), help="malformed rows: fail or skip")
    p.add_argument("--limit", type=int, default=None, help="use only the first N rows")
    p.add_argument("--k", type=int, default=4, help="samples per input (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default: %(default)s)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (default: %(default)s)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="tokens per sample (default: the task's)")
    p.add_argument("--backend", default="auto", choices=BACKEND_NAMES,
                   help="decoding backend (auto: llama.cpp on a CPU when it can run the model)")
    p.add_argument("--batch-size", type=int, default=8, help="rows decoded together (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="write training data with a model: self-training or instruction back-translation",
                       description="selftrain: the model writes K outputs per unlabelled input; backtranslate: it "
                                   "writes K inputs per output. A candidate is kept only when it passes every filter "
                                   "(length, repetition, safety, agreement of the K samples, mean token log-prob, "
                                   "near-duplicates). Resumable: rerun the same command to continue.")
    p.add_argument("--mode", default="selftrain", choices=("selftrain", "backtranslate"),
                   help="selftrain: write outputs for inputs; backtranslate: write inputs for outputs")
    _add_model_inputs(p, "writes and scores the text")
    p.add_argument("--min-logprob", type=float, default=None,
                   help="keep when the output's mean token log-prob (nats) is at least this (default: -2.0 "
                        "selftrain, -3.0 backtranslate)")
    p.add_argument("--calibrate", default=None, metavar="LABELLED",
                   help="labelled records: --min-logprob becomes the 10th percentile of their references' log-prob")
    p.add_argument("--min-agreement", type=float, default=None,
                   help="keep when the K samples' mean pairwise ROUGE-L F1 (0-1) is at least this (default: 0.15 "
                        "selftrain, 0 backtranslate)")
    p.add_argument("--max-copy", type=float, default=None,
                   help="backtranslate: drop a generated input whose ROUGE-L F1 with its output is above this "
                        "(default: 0.3; selftrain: 1, off)")
    p.add_argument("--min-words", type=int, default=3, help="fewest words of a candidate (default: %(default)s)")
    p.add_argument("--max-words", type=int, default=400, help="most words of a candidate (default: %(default)s)")
    p.add_argument("--max-repeat", type=float, default=30.0,
                   help="highest share (%%) of repeated word 3-grams (default: %(default)s)")
    p.add_argument("--dedup", type=float, default=0.9,
                   help="ROUGE-L F1 to a kept text at which a candidate is a near-duplicate (default: %(default)s)")
    p.add_argument("--keep-truncated", action="store_true",
                   help="keep samples that stopped at --max-new-tokens (default: rejected as truncated)")
    p.add_argument("--safety", default=None, help="safety policy YAML (default: the packaged policy)")
    p.add_argument("--server", default=None, action="append", metavar="URL",
                   help="generate on this OpenAI-compatible server (`weaver serve`, vLLM, llama.cpp) instead of "
                        "locally; repeat it for a pool serving the same --server-model. --model still renders the "
                        "prompts and scores the log-prob filter here: give the model the servers serve")
    p.add_argument("--server-model", default=None, help="with --server: the model id to call (GET /v1/models)")
    p.add_argument("--per-server", type=int, default=1,
                   help="with --server: requests in flight on each server at once (default: %(default)s)")


def _add_select(sub) -> None:
    p = sub.add_parser("select", help="rank unlabelled inputs by the model's uncertainty and their diversity",
                       description="Pick the N inputs a person should label first: uncertain ones (K samples "
                                   "disagree, high token entropy) that are unlike each other (embedding distance). "
                                   "Writes them with the reasons; fill in each output and train on the file.")
    _add_model_inputs(p, "is uncertain")
    p.add_argument("--n", type=int, required=True, help="how many inputs to pick")


def _data_config(args) -> DataConfig:
    columns = {}
    if args.columns:
        try:
            columns = json.loads(args.columns)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--columns is not valid JSON ({exc.msg}); e.g. '{{\"output\": \"summary\"}}'") from None
        if not isinstance(columns, dict):
            raise ConfigError("--columns must be a JSON object mapping our field names to your column names")
    template = "{input}" if args.task == "custom" else None
    return DataConfig(task=args.task, lang=args.lang, columns=columns, on_error=args.on_error,
                      max_seq_len=getattr(args, "max_seq_len", DataConfig.max_seq_len),
                      max_output_tokens=getattr(args, "max_output_tokens", DataConfig.max_output_tokens),
                      template=template)


def run(args) -> int:
    if args.data_command == "pairs":
        return _run_pairs(args)
    if args.data_command == "synth":
        return _run_synth(args)
    if args.data_command == "select":
        return _run_select(args)
    return _run_check(args)


def _check_limit(args) -> None:
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")


def _run_synth(args) -> int:
    from weaver.tuning.synth import summary_text, synthesize
    from weaver.tuning.synth_filters import SynthSettings

    _check_limit(args)
    s = SynthSettings(mode=args.mode, k=args.k, temperature=args.temperature, top_p=args.top_p,
                      max_new_tokens=args.max_new_tokens, min_logprob=args.min_logprob,
                      min_agreement=args.min_agreement, max_copy=args.max_copy, min_words=args.min_words,
                      max_words=args.max_words, max_repeat=args.max_repeat, dedup=args.dedup,
                      keep_truncated=args.keep_truncated, seed=args.seed)
    if args.server_model and not args.server:
        raise ConfigError("--server-model is for --server: give the server URL too")
    summary = synthesize(args.model, args.inputs, args.out, _data_config(args), s, backend=args.backend,
                         batch_size=args.batch_size, limit=args.limit, safety=args.safety, calibrate=args.calibrate,
                         servers=args.server, server_model=args.server_model, per_server=args.per_server)
    print(summary_text(summary))
    print(f"kept records: {summary['files']['kept']}; rejected (with reasons): {summary['files']['rejected']}")
    return 0


def _run_select(args) -> int:
    from weaver.data.synthetic import read_unlabelled
    from weaver.generate.engine import load_generator
    from weaver.tuning.select import select_inputs, write_selection

    _check_limit(args)
    data_cfg = _data_config(args)
    records = read_unlabelled(args.inputs, "input", data_cfg.columns or None, data_cfg.on_error)[: args.limit]
    generator, tok, model = load_generator(args.model, backend=args.backend, batch_size=args.batch_size)
    if model is None:  # llama.cpp: entropies and hidden states come from the transformers model
        from weaver.models.loading import load_model

        model, tok = load_model(args.model, merge=True)
    done = [0]

    def progress(k: int) -> None:
        done[0] += k
        print(f"select: sampled {done[0]}/{len(records)} inputs", file=sys.stderr, flush=True)

    rows = select_inputs(records, generator, (model, tok), data_cfg, args.n, k=args.k, temperature=args.temperature,
                         top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed, progress=progress)
    path = write_selection(args.out, rows)
    for row in rows[:10]:
        print(f"{row['meta']['select']['rank']:>3}. {row['id']}: {row['meta']['select']['reason']}")
    more = " (first 10 above)" if len(rows) > 10 else ""
    print(f"wrote {len(rows)} of {len(records)} inputs to {path}{more}: fill in each output, then train on it")
    return 0


def _run_pairs(args) -> int:
    from weaver.tuning.pairs import generate_pairs

    args.max_seq_len, args.max_output_tokens = DataConfig.max_seq_len, DataConfig.max_output_tokens
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    report = generate_pairs(args.source, args.strategy, args.out, args.model, _data_config(args),
                            principles_file=args.principles, limit=args.limit, batch_size=args.batch_size,
                            seed=args.seed)
    skipped = report["skipped_same"] + report["skipped_empty"]
    print(f"wrote {report['pairs']} pairs to {report['out']} from {report['records']} records "
          f"({skipped} skipped: the model's text was empty or the same as the reference)")
    if report.get("principles"):
        print("principles: " + ", ".join(f"{k} {v}" for k, v in report["principles"].items()))
    return 0


def _run_check(args) -> int:
    from weaver.data.check import check_files, format_stats
    from weaver.data.readers import MAX_LISTED

    data_cfg = _data_config(args)
    tokenizer = None
    if args.model.lower() != "none":
        from weaver.models.loading import load_tokenizer

        tokenizer = load_tokenizer(args.model)
    files = {"train": args.file}
    files.update({name: path for name, path in (("dev", args.dev), ("test", args.test)) if path})
    report = check_files(files, data_cfg, tokenizer)
    problems = [(f["summary"], f["problems"]) for f in report["files"].values() if f["problems"]]
    if args.json:
        for f in report["files"].values():
            f["problems"] = [str(p) for p in f["problems"]]
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(format_stats(report, None if tokenizer is None else args.model))
    for summary, probs in problems:
        listed = "\n  ".join(str(p) for p in probs[:MAX_LISTED])
        more = f"\n  ... and {len(probs) - MAX_LISTED} more" if len(probs) > MAX_LISTED else ""
        print(f"{summary}:\n  {listed}{more}", file=sys.stderr)
    if problems and args.on_error == "fail":
        raise DataError("malformed records found (listed above): fix them, or rerun with --on-error skip")
    return 0
