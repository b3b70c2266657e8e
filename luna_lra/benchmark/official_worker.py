"""The official side of `python -m luna_lra.benchmark official`: times training steps of the
official PyTorch Luna (fairseq-apollo's LunaLRAEncoder with LRAModel's classifier head), with
the parameters and batch our model starts from. The coordinator (official.py) starts it with
the official package on PYTHONPATH, as step_worker.py is started:

    python -c "import runpy; runpy.run_path('<this file>', run_name='__main__')" SPEC_JSON

SPEC: threads, model (emb_dim, num_heads, mlp_dim, num_layers, classifier_dim, classes,
vocab, n), optim (AdamW's learning_rate, b1, b2, eps, weight_decay) and settings {name:
{proj_len, dropout, params: an .npz that step_worker exported}}. It answers the same lines as
step_worker (`run <setting> <steps>`, `quit`); its first line gives the first step's loss and
gradient norm per setting, computed before any update. Imports torch and the official code
only; no JAX.
"""

from __future__ import annotations

import json
import os
import sys
import time


def build_model(spec: dict, setting: dict):
    """The official LunaLRAEncoder as fairseq's LRAEncoder builds it for an LRA task
    (learned positions, embedding LayerNorm, untied k/v, GELU, post-LN, CLS representation)
    plus LRAModel's head: Linear + ReLU, then a bias-free Linear to the logits."""
    import torch
    from fairseq.models.luna_lra.luna_lra_encoder import LunaLRAEncoder

    m = spec["model"]

    class LRAModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            # token ids: 0 = padding (as our batch pads), 1..vocab-1 ours, vocab = CLS
            self.encoder = LunaLRAEncoder(
                padding_idx=0, vocab_size=m["vocab"] + 1, projection_length=setting["proj_len"],
                num_encoder_layers=m["num_layers"], embedding_dim=m["emb_dim"],
                ffn_embedding_dim=m["mlp_dim"], num_attention_heads=m["num_heads"],
                num_projected_attention_heads=m["num_heads"], dropout=setting["dropout"],
                attention_dropout=setting["dropout"], activation_dropout=0.0,
                max_seq_len=m["n"] + 1, use_position_embeddings=True,
                offset_positions_by_padding=True, layernorm_embedding=True,
                apply_bert_init=False, tie_kv=False, activation_fn="gelu",
                learned_pos_embedding=True, embed_scale=None, sen_rep_type="cls")
            self.classifier = torch.nn.ModuleList(
                [torch.nn.Linear(m["emb_dim"], m["classifier_dim"])])
            self.sentence_projection_layer = torch.nn.Linear(m["classifier_dim"], m["classes"],
                                                             bias=False)

        def forward(self, tokens):
            rep = self.encoder(tokens, last_state_only=True)[1][0]
            for layer in self.classifier:
                rep = torch.relu(layer(rep))
            return self.sentence_projection_layer(rep)

    return LRAModel()


def load_ours(model, path: str):
    """Our initial parameters (step_worker's export) into the official model; returns the
    batch as (tokens with CLS first, targets)."""
    import numpy as np
    import torch

    z = dict(np.load(path))
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
    enc = model.encoder
    state = {
        "encoder.embed_tokens.weight": np.concatenate(
            [z["embed/tokens/embedding"], z["embed/cls"].reshape(1, -1)]),
        # fairseq's positions count from padding_idx + 1 = 1; row 0 is the padding row
        "encoder.embed_positions.weight": np.concatenate(
            [np.zeros_like(z["embed/positions"][:1]), z["embed/positions"]]),
        "encoder.emb_layer_norm.weight": z["embed/layer_norm/scale"],
        "encoder.emb_layer_norm.bias": z["embed/layer_norm/bias"],
        "encoder.projected_embeddings": z["encoder/packed_init"],
        "encoder.proj_emb_layer_norm.weight": z["encoder/packed_embed_norm/scale"],
        "encoder.proj_emb_layer_norm.bias": z["encoder/packed_embed_norm/bias"],
        "classifier.0.weight": z["head/hidden_0/kernel"].T,
        "classifier.0.bias": z["head/hidden_0/bias"],
        "sentence_projection_layer.weight": z["head/logits/kernel"].T,
    }
    linears = dict(pack_query="pq_proj", pack_key="pk_proj", pack_value="pv_proj",
                   unpack_query="q_proj", unpack_key="k_proj", unpack_value="v_proj",
                   out="out_proj")
    norms = dict(attention_norm="self_attn_layer_norm",
                 packed_norm="self_atten_proj_layer_norm", ffn_norm="final_layer_norm")
    for i in range(len(enc.layers)):
        ours, theirs = f"encoder/layer_{i}/", f"encoder.layers.{i}."
        for a, b in linears.items():
            state[theirs + f"self_attn.{b}.weight"] = z[ours + f"attention/{a}/kernel"].T
            state[theirs + f"self_attn.{b}.bias"] = z[ours + f"attention/{a}/bias"]
        for a, b in norms.items():
            state[theirs + f"{b}.weight"] = z[ours + f"{a}/scale"]
            state[theirs + f"{b}.bias"] = z[ours + f"{a}/bias"]
        for fc in ("fc1", "fc2"):
            state[theirs + f"{fc}.weight"] = z[ours + f"ffn/{fc}/kernel"].T
            state[theirs + f"{fc}.bias"] = z[ours + f"ffn/{fc}/bias"]
    missing = set(model.state_dict()) - set(state)
    if missing:
        raise RuntimeError(f"no port for the official parameters {sorted(missing)}")
    model.load_state_dict({k: t(v) for k, v in state.items()}, strict=True)
    inputs = z["batch:inputs"]
    cls = np.full((inputs.shape[0], 1), model.encoder.vocab_size - 1, inputs.dtype)
    tokens = np.where(z["batch:mask"], inputs, 0)  # padding_idx 0 wherever our mask is off
    return t(np.concatenate([cls, tokens], axis=1)).long(), t(z["batch:targets"]).long()


def build_step(spec: dict, setting: dict):
    """(step() -> (loss, grad norm), first loss, first grad norm): forward, backward, the
    gradient norm (fairseq's trainer computes it every step) and torch's AdamW."""
    import torch

    torch.manual_seed(0)
    model = build_model(spec, setting)
    tokens, targets = load_ours(model, setting["params"])
    model.train()
    o = spec["optim"]
    opt = torch.optim.AdamW(model.parameters(), lr=o["learning_rate"], betas=(o["b1"], o["b2"]),
                            eps=o["eps"], weight_decay=o["weight_decay"])

    def step(update: bool = True):
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(tokens), targets)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
        if update:
            opt.step()
        return loss.detach().item(), norm.item()

    loss, norm = step(update=False)
    return step, loss, norm


def main(spec: dict) -> None:
    import torch

    torch.set_num_threads(spec["threads"])
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    steps, info = {}, dict(torch=torch.__version__, threads=torch.get_num_threads(),
                           huge_pages="glibc.malloc.hugetlb=1" in tunables,
                           glibc_tunables=tunables, settings={})
    for name, setting in spec["settings"].items():
        t0 = time.perf_counter()
        step, loss, norm = build_step(spec, setting)
        step()  # warm-up
        info["settings"][name] = dict(build_s=time.perf_counter() - t0, loss=loss,
                                      grad_norm=norm)
        steps[name] = step
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            return
        step, times = steps[words[1]], []
        for _ in range(int(words[2])):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        print(json.dumps(dict(times=times)), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
