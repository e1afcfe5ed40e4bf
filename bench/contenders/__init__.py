"""Contenders of the time-to-quality benchmark: weaver's recipe, a plain Hugging Face recipe, LLaMA-Factory.

Each module turns the benchmark's fixed data and settings into the command that trains with that tool;
`bench/time_to_quality.py` runs the commands under the same wall-clock budget and scores what they save.
"""
