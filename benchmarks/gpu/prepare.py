"""Prepare what the GPU scripts need, here, with the real model: ``benchmarks/.gpu/``.

The device machine has no network and SmolLM2's weights do not fit what travels to it, so:

- ``.gpu/smollm2/``: SmolLM2-135M's ``config.json`` and tokenizer files (no weights; the GPU
  scripts give the model seeded random weights, `benchmarks.gpu.step.model_folder`);
- ``.gpu/ccc.jsonl``: the demo's CCC prompts (``ascale.tasks.ccc(model, n=200, seed=0)``), each
  row with its counterfactual (``corrupted``, from ``ascale.tasks.ccc_corrupt``), made with the
  real weights so that token ids and lengths are the real ones;
- ``.gpu/whl/``: the wheels of what the machine's image lacks (see ``../shared/DEVICE.md``),
  fetched with pip.

Run: ``.venv/bin/python -m benchmarks.gpu.prepare`` (then carry ``benchmarks/.gpu``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from benchmarks import common

GPU = common.ROOT / "benchmarks" / ".gpu"
#: installed there without dependencies (the image has torch, transformers, pandas, ...)
WHEELS = ["transformer-lens==4.3.0", "datasets==5.2.0", "dill", "plotly", "gguf"]


def main(argv: list[str] | None = None) -> int:
    """Takes no arguments (`argv` for the common entry point)."""
    del argv
    import ascale
    from ascale.loading import DEFAULT_MODEL, embedded_folder

    GPU.mkdir(exist_ok=True)
    model = ascale.load_model()
    source = embedded_folder(DEFAULT_MODEL)
    target = GPU / "smollm2"
    target.mkdir(exist_ok=True)
    for f in source.iterdir():
        if f.is_file() and not f.name.endswith(".safetensors"):
            shutil.copy(f, target / f.name)
    data = ascale.tasks.ccc(model, n=200, seed=0)
    corrupted = ascale.tasks.ccc_corrupt(data, model, seed=0)
    rows = [
        {**row, "corrupted": bad} for row, bad in zip(data.rows(), corrupted.prompts, strict=True)
    ]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    (GPU / "ccc.jsonl").write_text(text)
    print(f"{len(rows)} CCC rows of {data.n_pos} tokens -> {GPU / 'ccc.jsonl'}")
    pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(GPU / "whl")]
    subprocess.run([*pip, *WHEELS], check=True)
    subprocess.run(
        [*pip, "--only-binary=:all:", "--python-version", "3.12", "multiprocess"], check=True
    )
    print(sorted(p.name for p in (GPU / "whl").iterdir()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
