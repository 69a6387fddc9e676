#!/usr/bin/env python3
"""PyTorch + transformers baseline for ternlab's GPU fine-tune benchmark: the study's own stack.

What it times (tools/bench/README.md has the details and the rpt-spec sections each step follows):

  train   the study's QAT/STE fine-tune step (rpt-spec §5.3, deploy/rpt_deploy_a100.py `finetune_ste`) on
          BitNetForCausalLM in pure bf16 (§1.1, §4.5): per step `random.choices` a batch of 128-token
          chunks, swap every one of the 210 linear weights for s_orig·clamp(round(w/s_orig), −1, 1)·mask
          (s_orig and the mask captured/pruned beforehand as in §5.2), forward + backward with gradient
          checkpointing (transformers' online AutoBitLinear still applies WeightQuant/ActQuant, identity
          backward), restore the latents, mask the gradients, clip_grad_norm_(1.0), AdamW(lr 5e-4, wd 0.01)
          step, CosineAnnealingLR step, zero_grad. `--loop prog` times NB-PROG's plain loop (§4.2) instead.
          Per batch size: tokens/s (mean ± sd over the timed steps), s/step, peak GPU memory, achieved
          TFLOP/s and MFU counted as 6 · params · tokens/s.
  --eval  the study's PPL loop (§2.2, Protocol B; seed guide): 128-token non-overlapping chunks, batch 1, no
          BOS, model(input_ids=chunk, labels=chunk).loss over 127 targets, eval(), torch.no_grad(), bf16,
          per-chunk .item(); plus the same chunks scored in batches of 8 and 32 (--eval-batches).

The model is a checkpoint directory written by `ternlab init` (master layout; loaded the way
tools/golden/make_golden.py loads one), or with --preset-config a config.json only (e.g. `ternlab init
--preset 2b4t`'s), built with random weights on the GPU so that the 4.8 GB safetensors need not travel.

Needs: torch with CUDA, transformers with BitNetForCausalLM (tested: torch 2.11, transformers 5.17).
`--meta-count` needs no GPU: it builds the model on the meta device and prints its parameter count.
"""
import argparse
import gc
import inspect
import json
import math
import os
import pathlib
import random
import statistics
import struct
import sys
import tempfile
import time

GiB = 1024 ** 3
STUDY = {  # rpt-spec §11 / §5.1: the study's fine-tune hyper-parameters
    "lr": 5e-4, "weight_decay": 0.01, "betas": (0.9, 0.999), "eps": 1e-8, "clip": 1.0, "t_max": 300,
    "protect": ("embed", "lm_head"), "threshold_sample_cap": 50_000, "eval_chunks": 50,
}


def die(msg, code=2):
    print(f"torch_finetune_bench: error: {msg}", file=sys.stderr)
    sys.exit(code)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="checkpoint directory written by `ternlab init` (config.json + model.safetensors)")
    src.add_argument("--preset-config", metavar="PATH",
                     help="config.json (or a directory holding one): build BitNetForCausalLM with random weights")
    p.add_argument("--batches", default="8,16,64", help="training batch sizes, comma-separated (the study's: 8, 16, 64)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per batch size")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per batch size (compile, allocator)")
    p.add_argument("--seq", type=int, default=128, help="sequence length (the study's SEQ_LEN)")
    p.add_argument("--seed", type=int, default=0, help="seeds python random (batch sampling), torch, token pool")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    p.add_argument("--eval", action="store_true", help="also time the study's PPL loop (batch 1) and batched variants")
    p.add_argument("--eval-batches", default="8,32", help="batched eval variants (batch 1 always runs with --eval)")
    p.add_argument("--eval-chunks", type=int, default=STUDY["eval_chunks"],
                   help="chunks scored per eval pass (the study: the first 50)")
    p.add_argument("--eval-reps", type=int, default=3, help="timed passes over the eval chunks, after one untimed")
    p.add_argument("--tokens", metavar="FILE",
                   help="token file (ternlab .tok, or raw little-endian ids with --tokens-dtype) for the training "
                        "chunks and, unless --eval-tokens, the eval chunks; default: seeded random ids")
    p.add_argument("--eval-tokens", metavar="FILE", help="token file for the eval chunks")
    p.add_argument("--tokens-dtype", choices=["u16", "u32", "i32"], default="u32",
                   help="id width of a raw (non-.tok) token file")
    p.add_argument("--pool", type=int, default=4096, help="random training chunks to sample from (no --tokens)")
    p.add_argument("--loop", choices=["deploy", "prog"], default="deploy",
                   help="deploy: rpt-spec §5.3 finetune_ste (STE swap, masks, grad checkpointing); "
                        "prog: §4.2 NB-PROG finetune (plain AdamW through HF's online STE, no checkpointing)")
    p.add_argument("--prune-level", type=float, default=5.0,
                   help="deploy loop: target %% of the §3.2 sampled global threshold that makes the masks "
                        "(the deploy's first level is 5; 0 gives all-ones masks, still applied)")
    p.add_argument("--no-grad-ckpt", action="store_true", help="deploy loop without gradient checkpointing")
    p.add_argument("--grad-ckpt", action="store_true", help="prog loop with gradient checkpointing")
    p.add_argument("--compile", action="store_true", help="torch.compile(model), as NB-PROG did (not DEPLOY)")
    p.add_argument("--t-max", type=int, default=STUDY["t_max"], help="CosineAnnealingLR T_max (the study: 300 steps)")
    p.add_argument("--peak-flops", type=float, default=989e12,
                   help="peak dense bf16 FLOP/s of the GPU for MFU (H100 SXM and H200: 989e12; H100 PCIe: 756e12)")
    p.add_argument("--meta-count", action="store_true",
                   help="build the model on the meta device, print its parameter count and exit (no GPU needed)")
    p.add_argument("--mem-cap-gib", type=float,
                   help="cap this process's GPU memory (torch.cuda.set_per_process_memory_fraction), e.g. to "
                        "emulate the study's A100 40 GB or to test the OOM path")
    p.add_argument("--build-via-save", action="store_true",
                   help="--preset-config: build through save_pretrained + from_pretrained instead of swapping "
                        "nn.Linear for AutoBitLinear in place")
    a = p.parse_args(argv)

    def ints(s, what):
        try:
            v = [int(x) for x in s.split(",") if x.strip()]
        except ValueError:
            die(f"{what} must be comma-separated integers, got '{s}'")
        if any(x <= 0 for x in v):
            die(f"{what} must be positive, got '{s}'")
        return v

    a.batch_list = ints(a.batches, "--batches")
    a.eval_batch_list = ints(a.eval_batches, "--eval-batches") if a.eval_batches else []
    if a.steps < 1 or a.warmup < 0 or a.seq < 2 or a.eval_chunks < 1 or a.eval_reps < 1:
        die("need --steps >= 1, --warmup >= 0, --seq >= 2, --eval-chunks >= 1, --eval-reps >= 1")
    if not 0 <= a.prune_level < 100:
        die("--prune-level must be in [0, 100)")
    return a


# ------------------------------------------------------------------------------------------------------------
# tokens

def read_token_file(path, raw_dtype):
    """ternlab's .tok (docs/data.md: 32-byte header, JSON metadata, padding, u16/u32 ids) or raw ids."""
    import numpy as np
    path = pathlib.Path(path)
    if not path.is_file():
        die(f"token file {path} does not exist")
    data = path.read_bytes()
    if data[:8] == b"TLTOK\x00\x00\x01":
        if len(data) < 32:
            die(f"{path}: shorter than the 32-byte .tok header")
        version, width, count, vocab, mlen = struct.unpack_from("<IIQII", data, 8)
        if version != 1 or width not in (2, 4):
            die(f"{path}: .tok version {version}, width {width}: expected version 1, width 2 or 4")
        start = 32 + mlen
        start += (-start) % 8
        if len(data) < start + count * width:
            die(f"{path}: truncated: {count} ids of {width} bytes need {start + count * width} bytes, have {len(data)}")
        ids = np.frombuffer(data, dtype="<u2" if width == 2 else "<u4", count=count, offset=start)
        return ids.astype(np.int64), f".tok ({count} ids, vocab {vocab})"
    dt = {"u16": "<u2", "u32": "<u4", "i32": "<i4"}[raw_dtype]
    ids = np.frombuffer(data, dtype=dt)
    return ids.astype(np.int64), f"raw {raw_dtype} ({ids.size} ids)"


def chunk(ids, seq):
    # the study's cut (rpt-spec §1.4): non-overlapping, `range(0, len(ids) - seq, seq)` (the stop drops the last
    # full window when len is a multiple of seq)
    n = len(range(0, len(ids) - seq, seq))
    return ids[: n * seq].reshape(n, seq)


# ------------------------------------------------------------------------------------------------------------
# model

def load_config_json(path):
    p = pathlib.Path(path)
    if p.is_dir():
        p = p / "config.json"
    elif p.name != "config.json":
        die(f"{path}: name the config file config.json (or pass its directory)")
    if not p.is_file():
        die(f"no config.json at {path}")
    try:
        return p, json.loads(p.read_text())
    except json.JSONDecodeError as e:
        die(f"{p}: not valid JSON: {e}")


def param_breakdown(model):
    total = lin = emb = norm = other = 0
    for n, prm in model.named_parameters():  # a tied lm_head appears once, as embed_tokens
        k = prm.numel()
        total += k
        if n.endswith("_proj.weight"):
            lin += k
        elif "embed" in n or "lm_head" in n:
            emb += k
        elif "norm" in n:
            norm += k
        else:
            other += k
    return {"total": total, "linear": lin, "embedding_or_head": emb, "norm": norm, "other": other,
            "tied": model.get_output_embeddings().weight is model.get_input_embeddings().weight}


def meta_count(cfg_path, torch, transformers):
    cfg = transformers.AutoConfig.from_pretrained(pathlib.Path(cfg_path).parent)
    with torch.device("meta"):
        m = transformers.AutoModelForCausalLM.from_config(cfg)
    return type(m).__name__, param_breakdown(m)


def check_bitnet(model, torch):
    """Every projection must be transformers' online AutoBitLinear (latent weights quantized on the fly, as the
    study's -bf16 checkpoint loads, rpt-spec §1.1); the LM head a plain Linear; every parameter bf16."""
    kinds = {type(mod).__name__ for n, mod in model.named_modules() if n.endswith("_proj")}
    if kinds != {"AutoBitLinear"}:
        die(f"projections are {sorted(kinds)}, expected AutoBitLinear: is the checkpoint's quantization_config "
            "the online one (`ternlab init --layout master`)? The packed layout cannot be fine-tuned")
    offline = [n for n, mod in model.named_modules() if n.endswith("_proj") and not getattr(mod, "online_quant", False)]
    if offline:
        die(f"{len(offline)} projections are offline (packed) AutoBitLinear, e.g. {offline[0]}: use a master-layout checkpoint")
    if type(model.lm_head).__name__ != "Linear":
        die(f"lm_head is {type(model.lm_head).__name__}, expected a plain Linear")
    # parameters only: buffers such as RoPE's inv_freq stay fp32, as they do in the study's from_pretrained
    dts = sorted({str(t.dtype) for t in model.parameters()})
    if dts != ["torch.bfloat16"]:
        die(f"parameters in {dts}, expected bfloat16 only")


def params_to_bf16(model, torch):
    # the bitnet quantizer may pick its own dtype at load time; cast parameters only (exact for bf16 latents)
    n = 0
    with torch.no_grad():
        for p in model.parameters():
            if p.dtype != torch.bfloat16:
                p.data = p.data.to(torch.bfloat16)
                n += 1
    return n


def swap_in_autobitlinear(model, qcfg, torch):
    """Replace every nn.Linear under model.model by an online AutoBitLinear holding the same weight (what
    from_pretrained's bitnet quantizer does at load time)."""
    from transformers.integrations import bitnet
    cls = bitnet.AutoBitLinear
    accepted = set(inspect.signature(cls.__init__).parameters)
    skip = set((qcfg or {}).get("modules_to_not_convert") or []) | {"lm_head"}
    n = 0
    for parent_name, parent in list(model.model.named_modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear or name in skip:
                continue
            kw = {"in_features": child.in_features, "out_features": child.out_features,
                  "bias": child.bias is not None, "device": child.weight.device, "dtype": child.weight.dtype,
                  "online_quant": True}
            for k in ("use_rms_norm", "rms_norm_eps"):  # newer transformers take these from the config
                if k in accepted and qcfg and k in qcfg:
                    kw[k] = qcfg[k]
            kw = {k: v for k, v in kw.items() if k in accepted}
            with torch.device(child.weight.device):  # some versions ignore device=: init on the GPU anyway
                new = cls(**kw).to(device=child.weight.device, dtype=child.weight.dtype)
            with torch.no_grad():
                new.weight.copy_(child.weight)
                if child.bias is not None:
                    new.bias.copy_(child.bias)
            setattr(parent, name, new)
            n += 1
    return n


def build_random(cfg_path, cfg_json, args, torch, transformers):
    cfg = transformers.AutoConfig.from_pretrained(cfg_path.parent)
    qcfg = cfg_json.get("quantization_config")
    if not qcfg or qcfg.get("quant_method") != "bitnet" or qcfg.get("quantization_mode", "online") != "online":
        die(f"{cfg_path}: quantization_config is {qcfg}; the study's checkpoint has the online bitnet one")
    torch.manual_seed(args.seed)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = transformers.AutoModelForCausalLM.from_config(cfg)
    finally:
        torch.set_default_dtype(old)
    params_to_bf16(model, torch)
    how = "from_config (quantizer applied by transformers)"
    if any(type(m) is torch.nn.Linear for n, m in model.model.named_modules()):
        if not args.build_via_save:
            try:
                k = swap_in_autobitlinear(model, qcfg, torch)
                how = f"from_config + {k} nn.Linear -> AutoBitLinear(online_quant=True) in place"
            except Exception as e:  # noqa: BLE001 -- fall back to the loader transformers itself uses
                print(f"  in-place AutoBitLinear swap failed ({e!r}); building through save + from_pretrained")
                args.build_via_save = True
        if args.build_via_save:
            with tempfile.TemporaryDirectory(prefix="tl-bench-") as td:
                model.save_pretrained(td)
                (pathlib.Path(td) / "config.json").write_text(json.dumps(cfg_json))  # keep quantization_config
                del model
                torch.cuda.empty_cache()
                model = transformers.AutoModelForCausalLM.from_pretrained(td, dtype=torch.bfloat16, device_map="cuda")
            how = "from_config, save_pretrained, from_pretrained (transformers' bitnet quantizer)"
    return model, how


def load_model(args, torch, transformers):
    if args.preset_config:
        cfg_path, cfg_json = load_config_json(args.preset_config)
        model, how = build_random(cfg_path, cfg_json, args, torch, transformers)
        source = {"preset_config": str(cfg_path), "weights": f"random (torch seed {args.seed})", "built": how}
    else:
        d = pathlib.Path(args.model)
        if not d.is_dir():
            die(f"model directory {d} does not exist")
        cfg_path, cfg_json = load_config_json(d)
        if not any(d.glob("*.safetensors")):
            die(f"{d} has no *.safetensors: pass --preset-config {cfg_path} to build it with random weights")
        # as rpt-spec §1.1 (dtype bf16, device_map) and tools/golden/make_golden.py
        model = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16, device_map="cuda")
        params_to_bf16(model, torch)
        source = {"model": str(d), "weights": "checkpoint", "built": "from_pretrained(dtype=bfloat16, device_map='cuda')"}
    check_bitnet(model, torch)
    return model, cfg_json, source


# ------------------------------------------------------------------------------------------------------------
# the study's pruning and STE (rpt-spec §3.2, §5.2, §5.3)

def ternary_params(model):
    # §3.1: dim >= 2 and no name containing 'embed' / 'lm_head': the 210 linear matrices of 2B-4T
    return [(n, p) for n, p in model.named_parameters() if p.dim() >= 2 and not any(k in n for k in STUDY["protect"])]


def capture_scales(targets, torch):
    # §5.2 step 3: s_orig = mean |w| over the non-zero latents, fp32, before any pruning
    out = {}
    with torch.no_grad():
        for n, p in targets:
            a = p.detach().float().abs()
            nz = a[a != 0]
            out[n] = float(nz.mean()) if nz.numel() else 1.0
    return out


def prune_masks(targets, level, seed, torch):
    """§3.2: one global threshold from ≤ 50,000 sampled non-zero magnitudes per tensor, mask = |w| > thr,
    W *= mask. The study's randperm ran on the CPU, unseeded; here on the GPU, seeded (setup, not timed).
    Returns bf16 0/1 masks on the GPU (§5.3: 'GPU masks are cast to the parameter dtype') and the
    realised sparsity."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    cap = STUDY["threshold_sample_cap"]
    with torch.no_grad():
        if level > 0:
            samples = []
            for _, p in targets:
                a = p.detach().float().abs()
                a = a[a != 0]
                if a.numel() > cap:
                    a = a[torch.randperm(a.numel(), device=a.device, generator=g)[:cap]]
                samples.append(a)
            s = torch.sort(torch.cat(samples)).values
            thr = float(s[min(int(s.numel() * level / 100), s.numel() - 1)])
        else:
            thr = -1.0
        masks, zeros, total = {}, 0, 0
        for n, p in targets:
            m = p.detach().abs() > thr
            p.mul_(m.to(p.dtype))
            zeros += int((~m).sum())
            total += m.numel()
            masks[n] = m.to(p.dtype)
    return masks, thr, zeros / max(total, 1)


# ------------------------------------------------------------------------------------------------------------
# timing helpers

def mean_sd(xs):
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def is_oom(e, torch):
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def free_cuda(torch):
    gc.collect()
    torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------------------
# training benchmark

def train_one(model, fwd, B, args, pool, targets, scales, masks, n_params, flops_attn_per_token, torch):
    seq = args.seq
    rng = random.Random(args.seed * 1_000_003 + B)  # the study: random.choices, unseeded
    deploy = args.loop == "deploy"
    ckpt = (deploy and not args.no_grad_ckpt) or (not deploy and args.grad_ckpt)
    res = {"batch": B, "seq": seq, "loop": args.loop, "gradient_checkpointing": ckpt}
    opt = sched = None
    step_no = -1
    free_cuda(torch)                       # §5.3: torch.cuda.empty_cache() at the start of finetune_ste
    torch.cuda.reset_peak_memory_stats()
    res["resident_gib_before"] = torch.cuda.memory_allocated() / GiB
    try:
        model.train()
        if ckpt:
            model.gradient_checkpointing_enable()
        opt = torch.optim.AdamW(model.parameters(), lr=STUDY["lr"], betas=STUDY["betas"], eps=STUDY["eps"],
                                weight_decay=STUDY["weight_decay"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.t_max)
        times, losses = [], []
        for step_no in range(args.warmup + args.steps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            idx = rng.choices(range(len(pool)), k=B)
            batch = pool[idx].to("cuda")
            if deploy:
                saved = {}
                try:
                    # STE forward: replace the latent weights by s·clamp(round(w/s), −1, 1)·mask in place (§5.3)
                    for n, p in targets:
                        saved[n] = p.data.clone()
                        w = p.data.float()
                        s = scales[n]
                        w_q = s * torch.clamp(torch.round(w / s), -1, 1)
                        w_q *= masks[n]
                        p.data.copy_(w_q.to(torch.bfloat16))
                    loss = fwd(input_ids=batch, labels=batch).loss
                    loss.backward()
                finally:
                    # STE backward: restore the latents (also after an OOM), mask the gradients
                    for n, p in targets:
                        if n in saved:
                            p.data.copy_(saved[n])
                    del saved
                for n, p in targets:
                    if p.grad is not None:
                        p.grad *= masks[n]
            else:
                loss = fwd(input_ids=batch, labels=batch).loss
                loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), STUDY["clip"])
            opt.step()
            sched.step()
            opt.zero_grad()
            losses.append(loss.item())  # the study logs every step's loss
            del loss
            torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            if step_no >= args.warmup:
                times.append(dt)
        tok = B * seq
        tps = [tok / t for t in times]
        m, sd = mean_sd(tps)
        s_m, s_sd = mean_sd(times)
        overall = tok * len(times) / sum(times)
        res.update({
            "status": "ok", "steps": len(times), "warmup": args.warmup,
            "tokens_per_step": tok, "tokens_per_s_mean": m, "tokens_per_s_sd": sd,
            "tokens_per_s_overall": overall, "s_per_step_mean": s_m, "s_per_step_sd": s_sd,
            "peak_gib": torch.cuda.max_memory_allocated() / GiB,
            "peak_reserved_gib": torch.cuda.max_memory_reserved() / GiB,
            "tflops_6N": 6 * n_params * overall / 1e12,
            "mfu_6N": 6 * n_params * overall / args.peak_flops,
            "tflops_6N_plus_attn": (6 * n_params + flops_attn_per_token) * overall / 1e12,
            "loss_first": losses[0], "loss_last": losses[-1], "lr_last": sched.get_last_lr()[0],
        })
    except Exception as e:  # noqa: BLE001
        if not is_oom(e, torch):
            raise
        res.update({"status": "oom", "step": step_no, "peak_gib": torch.cuda.max_memory_allocated() / GiB,
                    "error": str(e).splitlines()[0][:300]})
    finally:
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        for p in model.parameters():
            p.grad = None
        del opt, sched
        if ckpt:
            model.gradient_checkpointing_disable()  # §5.3: after the loop
        model.eval()
        free_cuda(torch)
    return res


# ------------------------------------------------------------------------------------------------------------
# eval benchmark: rpt-spec §2.2 (Protocol B) — batch 1, no BOS, 127 targets per chunk, no_grad, bf16

def eval_one(model, fwd, chunks, bs, reps, torch):
    seq = chunks.shape[1]
    res = {"batch": bs, "chunks": int(chunks.shape[0]), "seq": seq}
    free_cuda(torch)
    torch.cuda.reset_peak_memory_stats()

    def one_pass():
        total, count = 0.0, 0
        with torch.no_grad():
            for i in range(0, chunks.shape[0], bs):
                x = chunks[i:i + bs].to("cuda")
                loss = fwd(input_ids=x, labels=x).loss         # HF shifts: mean over bs·(seq−1) targets
                n = x.shape[0] * (seq - 1)
                total += loss.item() * n                        # Python-float accumulation, as the study
                count += n
        return total, count

    try:
        model.eval()
        one_pass()                                              # untimed: compile, allocator
        times, ppl = [], None
        for _ in range(reps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            total, count = one_pass()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            ppl = math.exp(total / count)
        n_tok = chunks.shape[0] * seq
        tps = [n_tok / t for t in times]
        m, sd = mean_sd(tps)
        res.update({"status": "ok", "reps": reps, "tokens_per_s_mean": m, "tokens_per_s_sd": sd,
                    "targets_per_s_mean": m * (seq - 1) / seq, "s_per_pass_mean": statistics.fmean(times),
                    "targets": chunks.shape[0] * (seq - 1), "ppl": ppl,
                    "peak_gib": torch.cuda.max_memory_allocated() / GiB})
    except Exception as e:  # noqa: BLE001
        if not is_oom(e, torch):
            raise
        res.update({"status": "oom", "error": str(e).splitlines()[0][:300]})
    free_cuda(torch)
    return res


# ------------------------------------------------------------------------------------------------------------

def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def main(argv=None):
    args = parse_args(argv)
    # clear failures before the (slow) torch import
    if args.model is not None and not pathlib.Path(args.model).is_dir():
        die(f"model directory {args.model} does not exist")
    if args.preset_config is not None and not pathlib.Path(args.preset_config).exists():
        die(f"--preset-config {args.preset_config} does not exist")
    for f in (args.tokens, args.eval_tokens):
        if f is not None and not pathlib.Path(f).is_file():
            die(f"token file {f} does not exist")
    try:
        import numpy as np  # noqa: F401
        import torch
        import transformers
    except ImportError as e:
        die(f"needs torch, numpy and transformers ({e})")

    if args.meta_count:
        path = args.preset_config or args.model
        cfg_path, _ = load_config_json(path)
        cls, br = meta_count(cfg_path, torch, transformers)
        print(f"{cfg_path}: {cls} on the meta device (transformers {transformers.__version__})")
        print(f"  parameters {br['total']:,}  (linear {br['linear']:,}, embedding/head {br['embedding_or_head']:,}, "
              f"norm {br['norm']:,}, other {br['other']:,}, tied {br['tied']})")
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps({"config": str(cfg_path), "class": cls, "params": br}, indent=2))
        return 0

    if not torch.cuda.is_available():
        die("CUDA is not available (torch.cuda.is_available() is False): this benchmark needs a GPU")
    # the study's flags (rpt-spec §1.1: NB-PROG, NB-PC, NB-CRIT, DEPLOY)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    if args.mem_cap_gib:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.mem_cap_gib * GiB / total))

    dev = torch.cuda.get_device_name()
    env = {"device": dev, "capability": list(torch.cuda.get_device_capability()),
           "gpu_memory_gib": torch.cuda.get_device_properties(0).total_memory / GiB,
           "torch": torch.__version__, "transformers": transformers.__version__,
           "cuda": torch.version.cuda, "python": sys.version.split()[0],
           "torchdynamo_disable": os.environ.get("TORCHDYNAMO_DISABLE", ""),
           "peak_flops": args.peak_flops, "mem_cap_gib": args.mem_cap_gib}
    print(f"device: {dev} (sm_{env['capability'][0]}{env['capability'][1]}, {env['gpu_memory_gib']:.1f} GiB); "
          f"torch {torch.__version__}, transformers {transformers.__version__}; MFU peak {args.peak_flops / 1e12:.0f} TFLOP/s")

    t0 = time.perf_counter()
    model, cfg, source = load_model(args, torch, transformers)
    br = param_breakdown(model)
    n_params = br["total"]
    L, H, hd = cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    attn_per_token = 12 * L * H * hd * args.seq  # PaLM-style attention term (no causal halving)
    if args.seq > cfg.get("max_position_embeddings", args.seq):
        die(f"--seq {args.seq} exceeds max_position_embeddings {cfg['max_position_embeddings']}")
    source["load_s"] = time.perf_counter() - t0
    print(f"model: {source}; parameters {n_params:,} (linear {br['linear']:,}, embedding/head {br['embedding_or_head']:,}, "
          f"norm {br['norm']:,}; tied {br['tied']}); attn impl {getattr(model.config, '_attn_implementation', None)}")
    fwd = torch.compile(model) if args.compile else model  # NB-PROG compiled the model; DEPLOY did not

    V = cfg["vocab_size"]
    gen = torch.Generator().manual_seed(args.seed)
    tok_info = {}
    if args.tokens:
        ids, desc = read_token_file(args.tokens, args.tokens_dtype)
        if ids.size and int(ids.max()) >= V:
            die(f"{args.tokens}: id {int(ids.max())} >= the model's vocab_size {V}")
        pool = torch.from_numpy(chunk(ids, args.seq).copy())
        tok_info["train"] = f"{args.tokens}: {desc}, {pool.shape[0]} chunks of {args.seq}"
    else:
        pool = torch.randint(0, V, (args.pool, args.seq), generator=gen, dtype=torch.int64)
        tok_info["train"] = f"random ids, seed {args.seed}, pool {args.pool} chunks of {args.seq}"
    if pool.shape[0] == 0:
        die("no training chunks: the token file is shorter than one chunk")
    if args.eval_tokens:
        ids, desc = read_token_file(args.eval_tokens, args.tokens_dtype)
        if ids.size and int(ids.max()) >= V:
            die(f"{args.eval_tokens}: id {int(ids.max())} >= the model's vocab_size {V}")
        ev = torch.from_numpy(chunk(ids, args.seq).copy())[: args.eval_chunks]
        tok_info["eval"] = f"{args.eval_tokens}: {desc}, first {ev.shape[0]} chunks"
    elif args.tokens:
        ev = pool[: args.eval_chunks]
        tok_info["eval"] = f"{args.tokens}: first {ev.shape[0]} chunks"
    else:
        ev = torch.randint(0, V, (args.eval_chunks, args.seq), generator=gen, dtype=torch.int64)
        tok_info["eval"] = f"random ids, seed {args.seed}, {ev.shape[0]} chunks"

    out = {"tool": "tools/bench/torch_finetune_bench.py", "env": env, "model": {**source, "params": br,
           "config": {k: cfg.get(k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                              "num_attention_heads", "num_key_value_heads", "head_dim",
                                              "vocab_size", "tie_word_embeddings", "hidden_act")}},
           "args": {k: v for k, v in vars(args).items() if k not in ("batch_list", "eval_batch_list")},
           "study_hparams": {k: v for k, v in STUDY.items()}, "tokens": tok_info,
           "flops_per_token": {"6N": 6 * n_params, "attn_palm": attn_per_token},
           "train": [], "eval": []}

    def dump():
        if args.json:
            p = pathlib.Path(args.json)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps(out, indent=2, default=str))

    # ---- eval first, on the model as loaded (before any pruning or training)
    if args.eval:
        for bs in [1] + [b for b in args.eval_batch_list if b != 1]:
            r = eval_one(model, fwd, ev, bs, args.eval_reps, torch)
            out["eval"].append(r)
            print(f"eval batch {bs:>3}: " + (f"{r['tokens_per_s_mean']:,.0f} ± {r['tokens_per_s_sd']:,.0f} tokens/s, "
                                             f"{r['s_per_pass_mean']:.3f} s per {r['chunks']} chunks, PPL {r['ppl']:.3f}, "
                                             f"peak {r['peak_gib']:.2f} GiB" if r["status"] == "ok" else f"OOM ({r['error']})"))
            dump()

    # ---- training
    targets, scales, masks = [], {}, {}
    if args.loop == "deploy":
        targets = ternary_params(model)
        scales = capture_scales(targets, torch)
        masks, thr, sparsity = prune_masks(targets, args.prune_level, args.seed, torch)
        out["prune"] = {"level": args.prune_level, "threshold": thr, "realised_latent_sparsity": sparsity,
                        "tensors": len(targets), "tensor_params": sum(p.numel() for _, p in targets)}
        print(f"deploy STE setup: {len(targets)} ternary tensors, s_orig captured, pruned {args.prune_level:g}% "
              f"target -> {100 * sparsity:.2f}% latent zeros (thr {thr:.4g}); masks bf16 on the GPU")
    for B in args.batch_list:
        r = train_one(model, fwd, B, args, pool, targets, scales, masks, n_params, attn_per_token, torch)
        out["train"].append(r)
        if r["status"] == "ok":
            print(f"train batch {B:>3}: {r['tokens_per_s_mean']:,.0f} ± {r['tokens_per_s_sd']:,.0f} tokens/s, "
                  f"{r['s_per_step_mean']:.3f} s/step, peak {r['peak_gib']:.2f} GiB, {r['tflops_6N']:.1f} TFLOP/s, "
                  f"MFU {100 * r['mfu_6N']:.1f}%, loss {r['loss_first']:.3f} -> {r['loss_last']:.3f}")
        else:
            print(f"train batch {B:>3}: OOM at step {r['step']} (peak {r['peak_gib']:.2f} GiB): {r['error']}")
        dump()

    # ---- table
    print()
    print(f"{dev}; {source.get('preset_config') or source.get('model')}; {n_params:,} parameters; "
          f"loop {args.loop}; seq {args.seq}; {args.steps} timed steps after {args.warmup} warm-up")
    print(f"{'batch':>5}  {'tokens/s (mean ± sd)':>22}  {'s/step':>7}  {'peak GiB':>8}  {'TFLOP/s':>7}  {'MFU':>6}")
    for r in out["train"]:
        if r["status"] != "ok":
            print(f"{r['batch']:>5}  {'oom':>22}")
            continue
        ts = f"{r['tokens_per_s_mean']:,.0f} ± {r['tokens_per_s_sd']:,.0f}"
        print(f"{r['batch']:>5}  {ts:>22}  {r['s_per_step_mean']:>7.3f}  {r['peak_gib']:>8.2f}  "
              f"{r['tflops_6N']:>7.1f}  {100 * r['mfu_6N']:>5.1f}%")
    if out["eval"]:
        print(f"{'eval':>5}  {'tokens/s (mean ± sd)':>22}  {'s/pass':>7}  {'peak GiB':>8}  {'PPL':>10}")
        for r in out["eval"]:
            if r["status"] != "ok":
                print(f"{r['batch']:>5}  {'oom':>22}")
                continue
            ts = f"{r['tokens_per_s_mean']:,.0f} ± {r['tokens_per_s_sd']:,.0f}"
            print(f"{r['batch']:>5}  {ts:>22}  {r['s_per_pass_mean']:>7.3f}  {r['peak_gib']:>8.2f}  {r['ppl']:>10.3f}")
    print("tokens = batch × seq input tokens; FLOP/s = 6 · params · tokens/s (recompute of gradient checkpointing "
          "and attention not counted); eval tokens/s counts 128 input tokens per chunk")
    dump()
    if args.json:
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
