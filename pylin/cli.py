"""The `pylin` command line (also `python -m pylin`).

    pylin analyze [MODEL] --text "The bridge out of Marin is the" [--k 8] [--tokens all|-1|0,3]
                  [--layers auto|all|none|0,4,8] [--dtype float32|float64] [--device cpu] [--out DIR]
    pylin steer [MODEL] --concept "The Golden" --prompt "I'm going to arizona to see the" [--layer 6]
                --strength 1.0 --max-new-tokens 20 [--sweep --layers 3,6,11 --strengths 0,0.2,0.5]
    pylin info MODEL [--tokens 8,32,128]
    pylin batch [MODEL …] --prompts FILE --out DIR [analyze's options] [--engine local|ray]  (pylin/batch/)

MODEL defaults to pylin.default_model_path() (the Gemma 3 270M demo package).  Every bad argument ends in
ONE line `pylin: error: …` on stderr and exit status 2 (argparse's convention), whether argparse or
pylin finds it (a bad file, its metadata, a prompt too long, an --out that cannot be written — checked
before the analysis runs).  Anything unexpected (a bug) is one line `pylin: internal error: …` plus
"rerun with --debug for the traceback", status 1; `--debug` anywhere on the line shows the traceback.
Tests: tests/test_cli.py, tests/test_reliability.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from .gguf_file import read_header as read_gguf_header

__all__ = ["main", "build_parser"]


class UsageError(Exception):
    """A bad argument found after parsing (a model path, a layer out of range, …): exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse prints usage + message; we want one line
        self.exit(2, f"pylin: error: {message} (see `{self.prog} --help`)\n")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def _nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


STEER_EPILOG = """\
the paper's settings (Golden 2025; its notebooks, JacobianAnalyzer.apply_steering_operator):
  Gemma-3-12B   λ = 0.17, concept "The bridge is the Golden", lsplit 33 (--layer 32)
  Llama-3.1-8B  λ = 0.5065, concept "The bridge out of Marin is the Golden", lsplit 22 (--layer 21)
  Qwen3-8B      λ 0.6–0.8, the same concept, default lsplit (2N/3 = 24: --layer 23)
  concepts end in "Golden"; prompts "I'm going to arizona to see the", "Here is a painting of the"
  Δ_i = Σ_{k≤i} J[:, k mod n₀, :] e_k scaled to λ‖h_i‖/(2‖Δ_i‖) at every position (BOS included)
example: pylin steer --concept "The bridge out of Marin is the Golden" \\
             --prompt "I went to new york to see the" --strength 0.3 [--sweep --out sweep/]
"""


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="pylin", description="Decoder LLMs as exactly equivalent linear systems (detached Jacobians)."
    )
    p.add_argument(
        "--debug", action="store_true", help="show the traceback of an error (anywhere on the line)"
    )
    sub = p.add_subparsers(
        dest="command", required=True, parser_class=_Parser, metavar="{analyze,steer,info,batch}"
    )
    common = _Parser(add_help=False)
    common.add_argument(
        "model", nargs="?", help="GGUF file or HF folder (default: the Gemma 3 270M demo model)"
    )
    common.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    common.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    common.add_argument("--no-progress", action="store_true", help="no progress bars")

    a = sub.add_parser("analyze", parents=[common], help="linearize a prompt and write a report")
    a.add_argument("--text", required=True, type=_nonempty, help="the prompt")
    a.add_argument("--k", type=_positive_int, default=8, help="singular triplets per block (default 8)")
    a.add_argument(
        "--tokens", default="all", help="all | concat | -1 | 0,3,-1: which Jacobian blocks (default all)"
    )
    a.add_argument(
        "--layers", default="auto", help="auto (6 spread out) | all | none | 0,4,8 | start:stop:step"
    )
    a.add_argument("--method", choices=["auto", "krylov", "randomized", "exact"], default="auto")
    a.add_argument("--layer-token", default="concat",
                   help="layer table's J: concat (all tokens, the seed's) | last | index")  # fmt: skip
    a.add_argument("--top", type=_positive_int, default=5, help="decoded tokens per singular vector")
    a.add_argument("--nonlinear", choices=["auto", "on", "off"], default="auto",
                   help="the ordinary Jacobian's reconstruction (auto: if estimated under 30 s)")  # fmt: skip
    a.add_argument("--out", default="pylin-report", help="output folder (default ./pylin-report)")

    s = sub.add_parser(
        "steer", parents=[common], help="greedy generation steered by a concept's Jacobian",
        epilog=STEER_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    s.add_argument("--concept", required=True, type=_nonempty, help="the concept prompt, e.g. 'The Golden'")
    s.add_argument("--prompt", required=True, type=_nonempty, help="the prompt to continue")
    s.add_argument(
        "--layer", type=int, default=None,
        help="ℓ: J of block ℓ's output, added into block ℓ's input (the seed's pairing; negative from the "
             "end; default: the seed's lsplit 2N/3, i.e. ℓ = 2N/3 - 1)",
    )  # fmt: skip
    s.add_argument("--strength", type=_float, default=1.0, help="λ: ‖Δ_i‖ = λ‖h_i‖/2 (default 1.0)")
    s.add_argument("--max-new-tokens", type=_positive_int, default=20)
    s.add_argument("--inject", choices=["at", "after"], default="at",
                   help="at: into block ℓ's input (the seed's); after: into block ℓ+1's input")  # fmt: skip
    s.add_argument("--skip-bos", action="store_true", help="drop the BOS position's term J_0·e_BOS from Δ")
    s.add_argument("--no-cache", action="store_true", help="recompute the whole sequence per token")
    s.add_argument("--sweep", action="store_true",
                   help="grid of --layers × --strengths: texts, concept logit gain, distinct-2")  # fmt: skip
    s.add_argument("--layers", default=None, help="--sweep layers: 0,4,8 | start:stop:step (default: 6)")
    s.add_argument("--strengths", default="0,0.1,0.2,0.4,0.7,1.0", help="--sweep strengths λ (comma list)")
    s.add_argument("--out", default=None,
                   help="folder for report.html (with --sweep: sweep.json and sweep.png)")  # fmt: skip

    i = sub.add_parser("info", help="architecture, shapes, quant types, memory (reads only the GGUF header)")
    i.add_argument("model", nargs="?", help="GGUF file (none: this build's ISA variants, CUDA, demo model)")
    i.add_argument("--tokens", default="8,32,128", help="prompt lengths for the memory estimate")
    i.add_argument("--json", action="store_true", help="print JSON instead of text")
    i.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: plan GPU memory (weights, frozen state, batch that fits)")  # fmt: skip
    i.add_argument("--gpu-memory", default="80GiB", help="GPU memory to plan for with --device cuda")

    from .batch.command import add_parser as add_batch_parser

    add_batch_parser(sub)  # `pylin batch`: pylin/batch/command.py
    return p


# ---- analyze / steer ---------------------------------------------------------------------------------


def _load(args: argparse.Namespace) -> Any:
    import pylin

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available here; use --device cpu")
    source = args.model
    if source is None:
        try:
            source = pylin.default_model_path()
        except ImportError as e:
            raise UsageError(str(e)) from None
    if not Path(source).exists():
        raise UsageError(f"no such model file or folder: {source}")
    try:
        return pylin.load(source, dtype=args.dtype, device=args.device)
    except NotImplementedError as e:
        raise UsageError(str(e)) from None


def _analyze(args: argparse.Namespace) -> int:
    from .report import analyze

    progress = not args.no_progress
    out = writable_folder(args.out, "--out")  # before the model loads and the analysis runs
    model = _load(args)
    data = analyze(
        model, args.text, k=args.k, tokens=args.tokens, layers=args.layers, out=out, method=args.method,
        top=args.top, nonlinear=args.nonlinear, progress=progress, layer_token=args.layer_token,
    )  # fmt: skip
    rec = data["reconstruction"]
    pred = data["prediction"]
    print(f"prompt: {args.text!r} ({len(data['tokens'])} tokens) -> {pred['token']!r}")
    det, nl = rec["detached"], rec["nonlinear"]
    print(f"detached reconstruction: rel. error {det['rel_error']:.3e}, R² {det['r2']:.9f}")
    if rec["nonlinear"] is not None:
        print(f"nonlinear Jacobian:      rel. error {nl['rel_error']:.3e}, R² {nl['r2']:.6f}")
    else:
        print(f"nonlinear Jacobian:      not computed ({rec['nonlinear_skipped']})")
    last = (
        max(r["token_index"] for r in data["decoded"] if isinstance(r["token_index"], int))
        if any(isinstance(r["token_index"], int) for r in data["decoded"])
        else "all"
    )
    for row in [r for r in data["decoded"] if r["token_index"] == last]:
        out_tokens = ", ".join(row["output"] or []) if row["output"] else "—"
        print(f"  token {row['token_index']} σ{row['i']} = {row['sigma']:.4g}: {out_tokens}")
    print(f"report: {out / 'report.html'} (+ report.json, {len(data.get('figures', {}))} figures)")
    return 0


def writable_folder(text: str, flag: str) -> Path:
    """The folder `text`, created if need be and checked writable now, or a UsageError saying why not."""
    import os
    import tempfile

    out = Path(text).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"{flag} {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        if isinstance(e, NotADirectoryError) or (not out.exists() and any(p.is_file() for p in out.parents)):
            reason = "a parent of it is a file"
        raise UsageError(f"cannot write to {flag} {out}: {reason}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to {flag} {out}: permission denied")
    return out


def _steer(args: argparse.Namespace) -> int:
    from . import steer
    from .indices import finite

    finite(args.strength, "--strength", bound=steer.MAX_STRENGTH)  # before the model loads
    if args.out:
        writable_folder(args.out, "--out")
    model = _load(args)
    if args.sweep:
        return _steer_sweep(args, model)
    if args.out:
        return _steer_report(args, model)
    op = steer.jacobian_operator(model, args.concept, args.layer, inject=args.inject, skip_bos=args.skip_bos)
    progress = not args.no_progress
    use_cache = not args.no_cache
    base = steer.generate(
        model, args.prompt, max_new_tokens=args.max_new_tokens, progress=progress, use_cache=use_cache
    )
    steered = steer.generate(
        model,
        args.prompt,
        steer=op,
        strength=args.strength,
        max_new_tokens=args.max_new_tokens,
        progress=progress,
        use_cache=use_cache,
    )
    _print_steering(
        args.concept, op.layer, op.inject_layer, args.strength, args.prompt, base.text, steered.text
    )
    return 0


def _print_steering(
    concept: str, layer: int, inject_layer: int, strength: float, prompt: str, unsteered: str, steered: str
) -> None:
    into = f"into block {inject_layer}'s input"
    print(f"concept {concept!r}, J of block {layer}'s output {into}, λ = {strength:g}")
    print(f"unsteered: {prompt}{unsteered}")
    print(f"steered:   {prompt}{steered}")


def _steer_report(args: argparse.Namespace, model: Any) -> int:
    """`pylin steer --out DIR`: the concept prompt's analysis with the steering section, as report.html."""
    from .report import steering_report

    data = steering_report(model, args.concept, args.prompt, args.layer, strength=args.strength,
                           max_new_tokens=args.max_new_tokens, inject=args.inject, skip_bos=args.skip_bos,
                           out=args.out, progress=not args.no_progress)  # fmt: skip
    s = data["steering"]
    _print_steering(s["concept"], s["layer"], s["inject_layer"], s["strength"], s["prompt"], s["unsteered"],
                    s["steered"])  # fmt: skip
    print(f"report: {Path(args.out) / 'report.html'}")
    return 0


def _steer_sweep(args: argparse.Namespace, model: Any) -> int:
    from . import steer
    from .emergence import parse_layers

    n = model.n_layers
    spread = sorted({round(i * (n - 1) / 5) for i in range(6)}) if n > 6 else list(range(n))
    layers = parse_layers(args.layers, n) if args.layers else spread
    try:
        strengths = [float(x) for x in args.strengths.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--strengths must be comma-separated numbers, got {args.strengths!r}") from None
    grid = steer.sweep(model, args.prompt, args.concept, layers, strengths,
                       max_new_tokens=args.max_new_tokens, inject=args.inject, skip_bos=args.skip_bos,
                       use_cache=not args.no_cache, progress=not args.no_progress)  # fmt: skip
    print(grid.table())
    if args.out:
        for kind, path in grid.write(args.out).items():
            print(f"{kind}: {path}")
    return 0


# ---- info: the GGUF header only --------------------------------------------------------------------


def _gib(b: float) -> str:
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"


def _build(args: argparse.Namespace) -> int:
    """`pylin info` without a model: what this build contains and where the demo model is."""
    import pylin

    info = pylin.build_info()
    try:
        info["demo_model"] = pylin.default_model_path()
    except ImportError as e:
        info["demo_model"] = None
        info["demo_model_missing"] = str(e)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    cuda = ", ".join(info["cuda"]) + f" (CUDA {info['cuda_version']})" if info["cuda"] else "not built"
    print(f"pylin {info['version']} ({info['compiler']}, {info['threading']})")
    print(f"  CPU ISA variants  compiled {', '.join(info['isa_compiled'])}; "
          f"available {', '.join(info['isa_available'])}; active {info['isa_active']}")  # fmt: skip
    print(f"  kernel threads    {info['threads']}")
    print(f"  CUDA module       {cuda}")
    print(f"  demo model        {info['demo_model'] or info['demo_model_missing']}")
    print("  pylin info MODEL.gguf describes a model file and plans its memory")
    return 0


def _info(args: argparse.Namespace) -> int:
    if args.model is None:
        return _build(args)
    path = Path(args.model)
    if not path.exists() or path.is_dir():
        raise UsageError(
            f"no such GGUF file: {path}" + (" (pylin info reads GGUF files)" if path.is_dir() else "")
        )  # a FIFO or a device: read_header says "not a regular file"
    try:
        lengths = [int(t) for t in args.tokens.split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"--tokens must be comma-separated positive integers, got {args.tokens!r}") from None
    if not lengths or min(lengths) < 1:
        raise UsageError(f"--tokens must be comma-separated positive integers, got {args.tokens!r}")
    head = read_gguf_header(path)
    from gguf import GGMLQuantizationType

    def qname(q: int) -> str:
        try:
            return GGMLQuantizationType(q).name
        except ValueError:
            return f"type{q}"

    meta = head["meta"]
    arch = meta.get("general.architecture", "?")
    counts: dict[str, int] = {}
    n_params = 0
    for _name, shape, q in head["tensors"]:
        counts[qname(q)] = counts.get(qname(q), 0) + 1
        numel = 1
        for s in shape:
            numel *= s
        n_params += numel
    info = {
        "file": str(path),
        "file_size": head["file_size"],
        "gguf_version": head["version"],
        "architecture": arch,
        "name": meta.get("general.name"),
        "parameters": n_params,
        "config": {k.split(".", 1)[1]: v for k, v in meta.items() if k.startswith(f"{arch}.")},
        "quant_types": counts,
        "tensors": [{"name": n, "shape": s, "type": qname(q)} for n, s, q in head["tensors"]],
        "memory": {str(n): _memory(path, n, args) for n in lengths},
    }
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"{path.name}: {arch} ({info['name']}), GGUF v{info['gguf_version']}, {_gib(info['file_size'])}, "
          f"{n_params / 1e6:.1f}M parameters")  # fmt: skip
    for k, v in info["config"].items():
        print(f"  {k:40s} {v}")
    print("  quant types: " + ", ".join(f"{q} ×{c}" for q, c in sorted(counts.items())))
    seen = set()
    for t in info["tensors"]:  # one line per distinct tensor role (layer index folded away)
        role = ".".join(p for p in t["name"].split(".") if not p.isdigit())
        if role not in seen:
            seen.add(role)
            print(f"  {t['name']:32s} {str(tuple(t['shape'])):18s} {t['type']}")
    if args.device == "cuda":
        from .planner import format_plan, plan

        for n in lengths:
            print(format_plan(plan(path, args.gpu_memory, n)))
        return 0
    print("memory to linearize (float32; weights stay memory-mapped, file size above):")
    for n, m in info["memory"].items():
        print(f"  {n:>5} tokens: frozen records {_gib(m['frozen'])}, per JVP/VJP vector "
              f"{_gib(m['per_vector'])}, full J (if formed) {_gib(m['full_jacobian'])}")  # fmt: skip
    return 0


def _memory(path: Path, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """Bytes to linearize n tokens (pylin.planner): frozen state, one tangent vector, the full J."""
    from .planner import plan

    p = plan(path, args.gpu_memory, n)
    d = p.shape.d_model
    out = {"frozen": p.frozen_bytes, "per_vector": p.per_vector_bytes, "full_jacobian": d * n * d * 4}
    if args.device == "cuda":
        out.update(gpu_memory=p.device_memory, weights=p.weight_bytes, workspace=p.workspace_bytes,
                   largest_batch=p.batch, fits=p.fits)  # fmt: skip
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # anywhere on the line, not only before the command
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    from .batch.command import main as _batch

    commands = {"analyze": _analyze, "steer": _steer, "info": _info, "batch": _batch}
    try:
        return commands[args.command](args)
    except (UsageError, ValueError, FileNotFoundError, ImportError, PermissionError, IsADirectoryError) as e:
        # Every pylin validation error is a ValueError that names the problem: one line, status 2.
        if debug:
            raise
        print(f"pylin: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print("pylin: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug: one line and the way to see more
        if debug:
            raise
        kind = "out of memory" if isinstance(e, MemoryError) else f"internal error: {type(e).__name__}"
        print(f"pylin: {kind}: {_one_line(e)} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


def _one_line(e: BaseException, limit: int = 500) -> str:
    """The first line of an exception's message, at most `limit` characters."""
    text = str(e).splitlines()[0] if str(e).strip() else type(e).__name__
    return text if len(text) <= limit else text[:limit] + "…"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
