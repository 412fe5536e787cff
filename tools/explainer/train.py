"""Train KAT's explainer adapter: LoRA on the bundled SmolLM2-135M-Instruct, on CPU.

Runs in the training environment (``make explainer`` creates ``.venv-train`` with torch CPU, transformers, peft;
``requirements/explainer.txt``), not in KAT's runtime one. Input: ``train.jsonl`` from ``tools/explainer/data.py``
(each record holds the exact chat ``messages`` the explainer sends in ``free`` style and a faithful ``target``).
Output in ``--out``: ``adapter/`` (PEFT LoRA), ``base/`` (the base config and tokenizer that the GGUF converter
needs) and ``train_log.json`` (hyper-parameters, data hash, loss per step, seconds).

The base weights come from the bundled Q4_1 GGUF, dequantized to fp32 by transformers; the LoRA deltas are
trained on top of exactly those values, which is also what llama.cpp applies the adapter to at run time.
The loss covers only the answer tokens (the prompt is context), and the answer ends with the chat template's
end-of-turn token so the model learns to stop.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path

END_OF_TURN = "<|im_end|>"


def _log(msg: str) -> None:
    print(f"[train] {msg}", flush=True)


def load_records(path: Path, max_examples: int | None, seed: int) -> list[dict]:
    recs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    recs = [r for r in recs if r.get("target") and r.get("messages")]
    if max_examples and len(recs) > max_examples:
        recs = random.Random(seed).sample(recs, max_examples)
    return recs


def load_base(gguf: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A dequantized GGUF model carries its quantizer; peft and save_pretrained want a plain fp32 model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return tok, model


def encode(tok, rec: dict, max_len: int) -> tuple[list[int], list[int]] | None:
    """Prompt ids (chat template with the generation prompt) + answer ids; labels mask the prompt."""
    prompt = tok.apply_chat_template(rec["messages"], add_generation_prompt=True, tokenize=False)
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tok(rec["target"].strip() + END_OF_TURN, add_special_tokens=False)["input_ids"]
    ids = p_ids + a_ids
    if len(ids) > max_len:
        return None  # never cut an answer: a truncated target teaches the model to stop mid-sentence
    return ids, [-100] * len(p_ids) + a_ids


def batches(examples: list, batch: int, seed: int) -> list[list]:
    """Length-grouped batches (little padding), in a seeded random order."""
    rng = random.Random(seed)
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i][0]), rng.random()))
    groups = [order[i : i + batch] for i in range(0, len(order), batch)]
    rng.shuffle(groups)
    return [[examples[i] for i in g] for g in groups]


def collate(group: list, pad_id: int):
    import torch

    n = max(len(ids) for ids, _ in group)
    ids = torch.full((len(group), n), pad_id, dtype=torch.long)
    labels = torch.full((len(group), n), -100, dtype=torch.long)
    mask = torch.zeros((len(group), n), dtype=torch.long)
    for i, (x, y) in enumerate(group):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return ids, labels, mask


def answer_loss(model, ids, labels, mask):
    """Next-token cross-entropy on the answer tokens only, with the output head applied only there.

    The head (576 x 49152, tied to the embeddings) over every prompt position would be ~20% of a step's compute
    for logits the loss ignores."""
    import torch

    inner = model.base_model.model  # the peft-wrapped causal LM
    hidden = inner.model(input_ids=ids, attention_mask=mask).last_hidden_state
    tgt = labels[:, 1:]
    keep = tgt != -100
    logits = inner.lm_head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), tgt[keep])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="folder with train.jsonl")
    ap.add_argument("--base-gguf", type=Path, required=True, help="the bundled SmolLM2 GGUF file")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=int, default=32)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--max-len", type=int, default=416)
    ap.add_argument("--max-examples", type=int, default=400)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch
    from peft import LoraConfig, get_peft_model

    t_start = time.perf_counter()
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(args.threads)
    train_path = args.data / "train.jsonl"
    data_sha = hashlib.sha256(train_path.read_bytes()).hexdigest()
    recs = load_records(train_path, args.max_examples, args.seed)
    _log(f"{len(recs)} training records from {train_path.name} (sha256 {data_sha[:12]})")

    t0 = time.perf_counter()
    tok, model = load_base(args.base_gguf)
    load_s = time.perf_counter() - t0
    _log(f"base model dequantized in {load_s:.1f} s")
    examples = [e for e in (encode(tok, r, args.max_len) for r in recs) if e is not None]
    skipped = len(recs) - len(examples)
    lengths = sorted(len(x) for x, _ in examples)
    _log(
        f"{len(examples)} examples ({skipped} over {args.max_len} tokens skipped), median {lengths[len(lengths) // 2]} tokens"
    )

    lora = LoraConfig(
        r=args.rank,
        lora_alpha=args.alpha,
        lora_dropout=args.dropout,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    _log(f"LoRA r={args.rank} alpha={args.alpha}: {trainable / 1e6:.2f} M trainable parameters")

    plan: list[list] = []
    epoch = 0
    while len(plan) < math.ceil(args.epochs * math.ceil(len(examples) / args.batch)):
        plan += batches(examples, args.batch, args.seed + epoch)
        epoch += 1
    plan = plan[: math.ceil(args.epochs * math.ceil(len(examples) / args.batch))]
    steps = len(plan)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    warm = max(1, steps // 20)

    def lr_at(step: int) -> float:  # linear warm-up, cosine decay to 10%
        if step < warm:
            return args.lr * (step + 1) / warm
        q = (step - warm) / max(1, steps - warm)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * q)))

    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model.train()
    losses: list[float] = []
    t_train = time.perf_counter()
    for step, group in enumerate(plan):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        ids, labels, mask = collate(group, pad_id)
        loss = answer_loss(model, ids, labels, mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(round(float(loss.detach()), 4))
        if step % 5 == 0 or step == steps - 1:
            el = time.perf_counter() - t_train
            _log(f"step {step + 1}/{steps} loss {losses[-1]:.3f} ({el / (step + 1):.1f} s/step, {el:.0f} s)")
    train_s = time.perf_counter() - t_train

    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out / "adapter")
    # The GGUF LoRA converter reads the base architecture from a config folder (weights not needed).
    base_dir = args.out / "base"
    cfg = model.base_model.model.config
    cfg.architectures = [type(model.base_model.model).__name__]  # a GGUF-loaded config lacks it
    cfg.save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    log = {
        "data": {
            "file": str(train_path.name),
            "sha256": data_sha,
            "records": len(recs),
            "examples": len(examples),
            "skipped_over_max_len": skipped,
            "median_tokens": lengths[len(lengths) // 2],
        },
        "base_gguf": {
            "file": args.base_gguf.name,
            "sha256": hashlib.sha256(args.base_gguf.read_bytes()).hexdigest(),
        },
        "hyper": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("data", "out", "base_gguf")
        },
        "lora_targets": lora.target_modules and sorted(lora.target_modules),
        "trainable_params": trainable,
        "steps": steps,
        "loss_first": losses[0],
        "loss_last5": round(sum(losses[-5:]) / min(5, len(losses)), 4),
        "losses": losses,
        "seconds": {
            "load": round(load_s, 1),
            "train": round(train_s, 1),
            "total": round(time.perf_counter() - t_start, 1),
        },
        "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
    }
    try:
        import peft
        import transformers

        log["versions"].update(transformers=transformers.__version__, peft=peft.__version__)
    except ImportError:
        pass
    (args.out / "train_log.json").write_text(json.dumps(log, indent=1), encoding="utf-8")
    _log(f"done: {steps} steps in {train_s:.0f} s, loss {losses[0]:.3f} -> {log['loss_last5']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
