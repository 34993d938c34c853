"""Writes a PEFT LoRA adapter folder with random weights for a Llama-style config.json, as
save_pretrained lays it out (adapter_config.json, adapter_model.safetensors), so that adapter
benchmarks need no training. Standard library only.

usage: python3 random_peft.py CONFIG_JSON OUT_FOLDER SEED [RANK]
Targets all seven projections of every layer; lora_alpha is twice the rank.
"""
import array
import json
import os
import random
import struct
import sys


def main():
    config_path, out, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rank = int(sys.argv[4]) if len(sys.argv) > 4 else 16
    config = json.load(open(config_path))
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    q, kv = config["num_attention_heads"] * head_dim, config["num_key_value_heads"] * head_dim
    shapes = {"q_proj": (q, hidden), "k_proj": (kv, hidden), "v_proj": (kv, hidden), "o_proj": (hidden, q),
              "gate_proj": (inter, hidden), "up_proj": (inter, hidden), "down_proj": (hidden, inter)}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": list(shapes),
                   "bias": "none", "use_dora": False, "use_rslora": False}, f)
    rng = random.Random(seed)
    tensors, header, offset = [], {}, 0
    for layer in range(config["num_hidden_layers"]):
        for module, (outputs, inputs) in shapes.items():
            section = "mlp" if module in ("gate_proj", "up_proj", "down_proj") else "self_attn"
            for part, shape in (("lora_A", (rank, inputs)), ("lora_B", (outputs, rank))):
                name = f"base_model.model.model.layers.{layer}.{section}.{module}.{part}.weight"
                values = array.array("f", (rng.gauss(0, 0.05) for _ in range(shape[0] * shape[1])))
                header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + 4 * len(values)]}
                offset += 4 * len(values)
                tensors.append(values)
    encoded = json.dumps(header).encode()
    with open(os.path.join(out, "adapter_model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for values in tensors:
            values.tofile(f)


if __name__ == "__main__":
    main()
